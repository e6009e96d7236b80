# ADE20K val, 150 classes (0 = "other" ignored via reduce_zero_label). Short side 512
# (spec §1.8). Adapted from mmsegmentation's configs/_base_/datasets/ade20k.py (Apache-2.0).
_base_ = ['./maskclip_test.py']  # batch 1, mIoU
# The dataset root, defined once and referenced below: WSSS_ADE_ROOT=/path/to/it in the environment
# moves every dataset path of this config (mmengine substitutes it when reading the file).
data_root = '{{$WSSS_ADE_ROOT:data/ade/ADEChallengeData2016}}'
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
test_dataloader = dict(
    dataset=dict(
        type='ADE20KDataset',
        data_root=data_root,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
