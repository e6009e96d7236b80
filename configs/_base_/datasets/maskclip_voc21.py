# PASCAL VOC 2012 val with background (21 classes, class 0 = background). Short side 512.
# Adapted from mmsegmentation's configs/_base_/datasets/pascal_voc12.py (Apache-2.0).
_base_ = ['./maskclip_test.py']  # batch 1, mIoU
# The dataset root, defined once and referenced below: WSSS_VOC_ROOT=/path/to/it in the environment
# moves every dataset path of this config (mmengine substitutes it when reading the file).
data_root = '{{$WSSS_VOC_ROOT:data/VOCdevkit/VOC2012}}'
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='LoadAnnotations'),  # after Resize: evaluated at the original size
    dict(type='PackSegInputs'),
]
test_dataloader = dict(
    dataset=dict(
        type='PascalVOCDataset',
        data_root=data_root,
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt',
        pipeline=test_pipeline))
