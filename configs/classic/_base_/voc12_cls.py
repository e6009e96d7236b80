# PASCAL VOC 2012 (train_aug) with image-level labels for the classifier: the train loader of
# voc12_trainaug.py (labels from SegmentationClassAug; an IRN cls_labels.npy / JSON with
# `labels=`) with the classifier's augmentation, and val with its own image-level labels.
# Fill values (HideAndSeek / EraseRegions) are in BGR, the order of LoadImageFromFile.
# The dataset root (WSSS_VOC_ROOT=/path/to/it in the environment moves it) is voc12_trainaug.py's.
_base_ = ['./voc12_trainaug.py']
train_source = {{_base_.train_dataloader.dataset.source}}  # noqa: F821  (mmengine base variable)
val_source = dict(type='VOCImageLabels', data_root={{_base_.data_root}},  # noqa: F821
                  split='ImageSets/Segmentation/val.txt', img_dir='JPEGImages',
                  labels=None, gt_dir='SegmentationClass', class_table='voc20')
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResize', scale=(512, 512), ratio_range=(0.625, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_size=(512, 512)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackMultiLabelInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(512, 512), keep_ratio=False),
    dict(type='PackMultiLabelInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=4, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='ImageLevelLabelDataset', source=val_source, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='MultiLabelMetric', thr=0.5)
test_evaluator = val_evaluator
