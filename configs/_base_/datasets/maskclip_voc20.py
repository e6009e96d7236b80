# PASCAL VOC 2012 val, 20 classes WITHOUT background (MaskCLIP's "VOC-20", spec maskclip_pacl.md
# §1.7): the 20 mmseg class names as metainfo make mmseg map background (0) to 255 (ignored) and
# class c+1 to c -- the same labels as reduce_zero_label. Test-time protocol §1.8: short side 512.
# Adapted from mmsegmentation's configs/_base_/datasets/pascal_voc12.py (Apache-2.0).
# The dataset root, defined once and referenced below: WSSS_VOC_ROOT=/path/to/it in the environment
# moves every dataset path of this config (mmengine substitutes it when reading the file).
data_root = '{{$WSSS_VOC_ROOT:data/VOCdevkit/VOC2012}}'
voc20_classes = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
                 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train',
                 'tvmonitor')
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='LoadAnnotations'),  # after Resize: evaluated at the original size
    dict(type='PackSegInputs'),
]
test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='PascalVOCDataset',
        data_root=data_root,
        metainfo=dict(classes=voc20_classes),
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt',
        pipeline=test_pipeline))
test_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
