# The runtime every config here shares (training, zero-shot testing, the classic classifiers):
# mmsegmentation's configs/_base_/default_runtime.py (Apache-2.0) without its visualiser and TTA
# parts, plus the CPU-capable DDP wrapper of wsss_mmseg. No `default_scope` (see default_runtime.py).
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),  # falls back to gloo without CUDA (wsss_mmseg.compat)
)
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
# DistributedDataParallel that also runs on CPU (gloo); identical to mmengine's on GPUs. A model
# without trainable parameters (MaskCLIP) is left unwrapped (torch's DDP refuses such modules).
model_wrapper_cfg = dict(type='CPUCompatibleDDP')
