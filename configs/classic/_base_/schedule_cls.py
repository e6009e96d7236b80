# ~6 epochs of VOC train_aug (10582 images) at batch 16: SGD, poly decay, 10x lr on the head.
# Loops and hooks: configs/_base_/schedules/default_hooks.py, checkpoints every 1000 iterations.
_base_ = ['../../_base_/schedules/default_hooks.py']
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4),
    paramwise_cfg=dict(custom_keys={'cls_head': dict(lr_mult=10.0)}))
param_scheduler = [dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=0, end=4000,
                        by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=4000, val_interval=1000)
default_hooks = dict(
    checkpoint=dict(interval=1000, max_keep_ckpts=2, save_best='multilabel/mAP', rule='greater'))
