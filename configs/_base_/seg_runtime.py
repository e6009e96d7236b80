# runtime_core.py + mmseg's segmentation visualiser: the runtime of the segmentation configs
# (default_runtime.py adds TTA for the training configs).
_base_ = ['./runtime_core.py']
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
