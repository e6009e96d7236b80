# COCO-Stuff 164k val2017, 171 classes. Short side 512 (spec §1.8). Adapted from
# mmsegmentation's configs/_base_/datasets/coco-stuff164k.py (Apache-2.0).
_base_ = ['./maskclip_test.py']  # batch 1, mIoU
# The dataset root, defined once and referenced below: WSSS_COCO_STUFF_ROOT=/path/to/it in the environment
# moves every dataset path of this config (mmengine substitutes it when reading the file).
data_root = '{{$WSSS_COCO_STUFF_ROOT:data/coco_stuff164k}}'
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
test_dataloader = dict(
    dataset=dict(
        type='COCOStuffDataset',
        data_root=data_root,
        data_prefix=dict(img_path='images/val2017', seg_map_path='annotations/val2017'),
        pipeline=test_pipeline))
