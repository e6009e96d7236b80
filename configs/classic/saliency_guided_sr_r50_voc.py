# saliency_guided_r50_voc.py with the built-in spectral-residual saliency (Hou & Zhang 2007):
# needs no saliency maps or weights, but is weak (mean foreground AUC 0.65 on the 60-image VOC
# sample, configs/classic/README.md); prefer real saliency maps (DSS / PoolNet) when you have them.
_base_ = ['./saliency_guided_r50_voc.py']
work_dir = 'work_dirs/saliency_guided_sr_r50_voc'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadSaliencyMap',
         source=dict(type='SpectralResidualSaliency', size=64, blur_sigma=2.5)),
    dict(type='SaliencyGuidedLabels', cam_dir='work_dirs/cam_r50_voc/pseudo/cams', method='oh',
         fg_saliency=0.5, bg_saliency=0.1),
    dict(type='RandomResize', scale=(512, 512), ratio_range=(0.5, 1.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=(321, 321)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
# (the base's saliency_source is unused)
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
generator = dict(config='{{fileDirname}}/saliency_guided_sr_r50_voc.py',
                 checkpoint='work_dirs/saliency_guided_sr_r50_voc/iter_8000.pth')
