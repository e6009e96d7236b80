# The loops and hooks of every iteration-based training schedule here (those of mmsegmentation's
# configs/_base_/schedules/schedule_*.py, Apache-2.0). Each schedule adds its optimiser, LR policy
# and train_cfg, and changes the checkpoint hook where it differs.
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2000),
    sampler_seed=dict(type='DistSamplerSeedHook'))
