# Runtime settings of mmsegmentation's configs/_base_/default_runtime.py (Apache-2.0), adapted:
# no `default_scope` here -- the pseudo-label generator config every training config inherits
# (configs/clip_es_*.py) sets default_scope = 'mmseg', and mmengine refuses keys defined by two
# _base_ files -- plus the CPU-capable DDP wrapper of wsss_mmseg (runtime_core.py).
_base_ = ['./seg_runtime.py']
tta_model = dict(type='SegTTAModel')
