# MaskCLIP+ (spec maskclip_pacl.md §2), transductive zero-shot PASCAL Context (60 classes with
# background, §2.5): DeepLabV3+-ResNet-101 student (mmseg's DepthwiseSeparableASPPHead, dilations
# (1, 12, 24, 36), 48-channel decoder on the 256-d stage-1 features), learnable background vector
# as class 0 (official cls_bg=True), teacher = frozen MaskCLIP on the 59 Context names. Unseen
# classes (GT marked 254, labelled by the teacher among them only): cow, motorbike, sofa, cat, boat,
# fence, bird, tv monitor, keyboard, aeroplane = ids 20, 34, 49, 15, 8, 25, 7, 55, 32, 1.
# Official values (§2.4, zero_shot/maskclip_plus_r50_deeplabv3plus_r101-d8_480x480_40k_pascal_context.py):
# 40k iterations, SGD lr 0.004, wd 1e-4, poly 0.9 (min 1e-4), 4 images/GPU, base scale (520, 520),
# resize 0.5-2.0, crop 480x480 (cat_max_ratio 0.75), flip, photometric distortion; teacher for
# iterations 1-3999, self-training from 4000 (switch_ratio 0.1). Official teacher: RN50 (text width
# 1024, model.teacher.clip.model_name=RN50); ViT-B/16 is the default here (the head width follows).
# Annotation-free Context-59 (official anno_free/..._vit16_..._4k_pascal_context_59.py: ViT-B/16
# teacher, DeepLabV2, 59 classes, all pseudo, 4k iterations, no self-training) is not this file.
#
#   mim train mmsegmentation configs/maskclip_plus_deeplabv3plus_r101_context.py \
#       --cfg-options model.teacher.clip.pretrained=/path/ViT-B-16.pt
#   (your copy of the dataset: WSSS_VOC2010_ROOT=/path/VOCdevkit/VOC2010 in front of the command moves every dataset)
_base_ = ['./maskclip_plus_deeplabv3plus_r101_voc.py']
work_dir = 'work_dirs/maskclip_plus_deeplabv3plus_r101_context'
# The dataset root, defined once and referenced below: WSSS_VOC2010_ROOT=/path/to/it in the environment
# moves every dataset path of this config (mmengine substitutes it when reading the file).
data_root = '{{$WSSS_VOC2010_ROOT:data/VOCdevkit/VOC2010}}'
crop_size = (480, 480)
unseen = [20, 34, 49, 15, 8, 25, 7, 55, 32, 1]  # Context-60 ids (0 = background)
model = dict(
    data_preprocessor=dict(size=crop_size),
    teacher=dict(decode_head=dict(class_table='context59_readable')),
    pseudo_classes=unseen,
    learn_bg=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='MarkUnlabeled', classes=unseen, unlabeled_index=254),
    dict(type='RandomResize', scale=(520, 520), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(520, 520), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(
    _delete_=True, type='PascalContextDataset', data_root=data_root,
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassContext'),
    ann_file='ImageSets/SegmentationContext/train.txt', pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(
    _delete_=True, type='PascalContextDataset', data_root=data_root,
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassContext'),
    ann_file='ImageSets/SegmentationContext/val.txt', pipeline=test_pipeline))
test_dataloader = val_dataloader
optimizer = dict(lr=0.004, weight_decay=0.0001)  # SGD, momentum 0.9 of schedule_20k.py
optim_wrapper = dict(optimizer=optimizer)
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=40000, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=40000, val_interval=4000)
default_hooks = dict(checkpoint=dict(interval=4000))
