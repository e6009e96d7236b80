# MaskCLIP+ (spec maskclip_pacl.md §2), transductive zero-shot COCO-Stuff 164k (171 classes, no
# background, §2.5): DeepLabV2-ResNet-101 student, teacher = frozen MaskCLIP on the 171 names.
# Unseen classes (GT marked 254, labelled by the teacher among them only): cow, giraffe, suitcase,
# frisbee, skateboard, carrot, scissors, cardboard, clouds, grass, playingfield, river, road, tree,
# wall-concrete = ids 19, 23, 28, 29, 36, 51, 76, 88, 94, 112, 133, 136, 137, 157, 160.
# Official values (§2.4, zero_shot/maskclip_plus_r50_deeplabv2_r101-d8_512x512_80k_coco-stuff164k.py):
# 80k iterations, SGD lr 0.01, wd 5e-4, poly 0.9 (min 1e-4), 4 images/GPU, short side 512,
# resize 0.5-2.0, crop 512x512 (cat_max_ratio 0.75), flip, photometric distortion; teacher for
# iterations 1-7999, self-training from 8000 (switch_ratio 0.1). Official teacher: RN50 (text width
# 1024); ViT-B/16 is the default here (the head width follows). Annotation-free COCO-Stuff
# (official ViT-B/16 teacher, 8k iterations, all 171 classes pseudo, no self-training):
#   --cfg-options train_dataloader.dataset.pipeline.2.classes=all model.pseudo_classes=None \
#       train_cfg.max_iters=8000 train_cfg.val_interval=8000 param_scheduler.0.end=8000 custom_hooks.0.switch_ratio=1.0
#
#   mim train mmsegmentation configs/maskclip_plus_deeplabv2_r101_coco_stuff.py \
#       --cfg-options model.teacher.clip.pretrained=/path/ViT-B-16.pt
#   (your copy of the dataset: WSSS_COCO_STUFF_ROOT=/path/coco_stuff164k in front of the command moves every dataset)
_base_ = ['./maskclip_plus_deeplabv2_r101_voc.py']
work_dir = 'work_dirs/maskclip_plus_deeplabv2_r101_coco_stuff'
# The dataset root, defined once and referenced below: WSSS_COCO_STUFF_ROOT=/path/to/it in the environment
# moves every dataset path of this config (mmengine substitutes it when reading the file).
data_root = '{{$WSSS_COCO_STUFF_ROOT:data/coco_stuff164k}}'
crop_size = (512, 512)
unseen = [19, 23, 28, 29, 36, 51, 76, 88, 94, 112, 133, 136, 137, 157, 160]
model = dict(
    teacher=dict(decode_head=dict(class_table='coco_stuff171_readable')),
    pseudo_classes=unseen,
    learn_bg=False)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='MarkUnlabeled', classes=unseen, unlabeled_index=254),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(
    _delete_=True, type='COCOStuffDataset', data_root=data_root,
    data_prefix=dict(img_path='images/train2017', seg_map_path='annotations/train2017'),
    pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(
    _delete_=True, type='COCOStuffDataset', data_root=data_root,
    data_prefix=dict(img_path='images/val2017', seg_map_path='annotations/val2017'),
    pipeline={{_base_.test_pipeline}}))  # noqa: F821  (short side 512, as the VOC base)
test_dataloader = val_dataloader
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=80000, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=8000)
default_hooks = dict(checkpoint=dict(interval=8000))
