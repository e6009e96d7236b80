# Pipelines of the training configs on pseudo labels (voc12aug_pseudo.py, coco14_pseudo.py), adapted
# from mmsegmentation's configs/_base_/datasets/pascal_voc12.py (Apache-2.0): the label loading and
# packing steps of training carry the confidence the CGL loss needs; tests read the real masks.
crop_size = (512, 512)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadPseudoLabel'),  # mask + confidence (instead of LoadAnnotations)
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputsWithConfidence'),  # instead of PackSegInputs
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='LoadAnnotations'),  # real masks, after Resize: evaluated at the original size
    dict(type='PackSegInputs'),
]
