# Cityscapes val, 19 classes. MaskCLIP protocol (spec §1.8): keep-ratio resize into (1024, 512),
# i.e. 2048x1024 -> 1024x512. Adapted from mmsegmentation's configs/_base_/datasets/cityscapes.py
# (Apache-2.0).
_base_ = ['./maskclip_test.py']  # batch 1, mIoU
# The dataset root, defined once and referenced below: WSSS_CITYSCAPES_ROOT=/path/to/it in the environment
# moves every dataset path of this config (mmengine substitutes it when reading the file).
data_root = '{{$WSSS_CITYSCAPES_ROOT:data/cityscapes}}'
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1024, 512), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
test_dataloader = dict(
    dataset=dict(
        type='CityscapesDataset',
        data_root=data_root,
        data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
        pipeline=test_pipeline))
