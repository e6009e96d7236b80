# Hide-and-Seek (Singh & Lee 2017): grid cells of side 16/32/44/56 hidden with p = 0.5 and
# filled with the dataset mean (BGR) during classifier training; CAMs as in cam_r50_voc.py.
_base_ = ['./cam_r50_voc.py']
work_dir = 'work_dirs/has_r50_voc'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResize', scale=(512, 512), ratio_range=(0.625, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_size=(512, 512)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='HideAndSeek', grid_sizes=(16, 32, 44, 56), prob=0.5,
         fill=(103.53, 116.28, 123.675)),
    dict(type='PackMultiLabelInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
generator = dict(config='{{fileDirname}}/has_r50_voc.py',
                 checkpoint='work_dirs/has_r50_voc/iter_4000.pth')
