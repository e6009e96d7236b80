# Runtime settings of mmsegmentation's configs/_base_/default_runtime.py (Apache-2.0), adapted:
# no `default_scope` here -- the pseudo-label generator config every training config inherits
# (configs/clip_es_*.py) sets default_scope = 'mmseg', and mmengine refuses keys defined by two
# _base_ files -- plus the CPU-capable DDP wrapper of wsss_mmseg.
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),  # falls back to gloo without CUDA (wsss_mmseg.compat)
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
tta_model = dict(type='SegTTAModel')
# DistributedDataParallel that also runs on CPU (gloo); identical to mmengine's on GPUs.
model_wrapper_cfg = dict(type='CPUCompatibleDDP')
