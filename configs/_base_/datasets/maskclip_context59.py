# PASCAL Context val, 59 classes (background ignored). MaskCLIP protocol (spec §1.8): keep-ratio
# resize into (520, 520), i.e. LONG side 520. Adapted from mmsegmentation's
# configs/_base_/datasets/pascal_context_59.py (Apache-2.0).
_base_ = ['./maskclip_test.py']  # batch 1, mIoU
# The dataset root, defined once and referenced below: WSSS_VOC2010_ROOT=/path/to/it in the environment
# moves every dataset path of this config (mmengine substitutes it when reading the file).
data_root = '{{$WSSS_VOC2010_ROOT:data/VOCdevkit/VOC2010}}'
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(520, 520), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
test_dataloader = dict(
    dataset=dict(
        type='PascalContextDataset59',
        data_root=data_root,
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassContext'),
        ann_file='ImageSets/SegmentationContext/val.txt',
        pipeline=test_pipeline))
