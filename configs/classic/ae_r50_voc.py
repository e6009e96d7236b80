# Adversarial erasing (AE-PSL, Wei et al. 2017): 3 rounds of classifier training, each on the
# images with the regions mined so far (CAM > 0.5 of each labelled class) erased with the mean.
#   python tools/adversarial_erasing.py configs/classic/ae_r50_voc.py
#   python tools/generate_pseudo.py configs/classic/ae_r50_voc.py   (CAMs of the 3 rounds, max)
# The threshold is not from the paper's code (none published); tune it on val.
_base_ = ['./cam_r50_voc.py']
work_dir = 'work_dirs/ae_r50_voc'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='EraseRegions', erase_dir=None, fill=(103.53, 116.28, 123.675)),  # set per round
    dict(type='RandomResize', scale=(512, 512), ratio_range=(0.625, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_size=(512, 512)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackMultiLabelInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
adversarial_erasing = dict(
    rounds=3, threshold=0.5,
    mining=dict(method='cam', scales=(1.0,), flip=True, fill=(103.53, 116.28, 123.675)))
generator = dict(
    config='{{fileDirname}}/ae_r50_voc.py',
    checkpoint=['work_dirs/ae_r50_voc/round_0/iter_4000.pth',
                'work_dirs/ae_r50_voc/round_1/iter_4000.pth',
                'work_dirs/ae_r50_voc/round_2/iter_4000.pth'],
    merge='max')
