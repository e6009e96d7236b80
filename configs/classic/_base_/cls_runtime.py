# Runtime of the classic WSSS classifier configs (configs/classic/*): plugin imports, hooks, env.
custom_imports = dict(
    imports=['wsss_mmseg', 'wsss_mmseg.models.classic', 'wsss_mmseg.datasets.classic_transforms',
             'wsss_mmseg.hooks.adversarial_erasing'],
    allow_failed_imports=False)
default_scope = 'mmseg'
env_cfg = dict(cudnn_benchmark=True, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))  # gloo without CUDA (wsss_mmseg.compat)
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
model_wrapper_cfg = dict(type='CPUCompatibleDDP')
