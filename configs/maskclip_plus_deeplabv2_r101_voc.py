# MaskCLIP+ (spec maskclip_pacl.md §2): DeepLabV2-ResNet-101 student trained on PASCAL VOC 2012
# train_aug with on-the-fly pseudo labels of a frozen MaskCLIP ViT-B/16 teacher; transductive
# zero-shot protocol (§2.5): VOC-20 without background, unseen = potted plant, sheep, sofa, train,
# tv monitor (ids 15-19). Their GT pixels are marked 254 (MarkUnlabeled) and get the teacher's
# argmax among the unseen classes; seen pixels keep their GT. Teacher for the first 1/10 of the
# schedule, then self-training (MaskCLIPPlusPhaseHook, driven by runner.iter: resumable).
#
#   mim train mmsegmentation configs/maskclip_plus_deeplabv2_r101_voc.py \
#       --cfg-options model.teacher.clip.pretrained=/path/ViT-B-16.pt
#   (your VOC copy: WSSS_VOC_ROOT=/path/VOCdevkit/VOC2012 in front of the command moves every dataset)
#
# Paper settings (§2.4): SGD lr 0.01, momentum 0.9, wd 5e-4, poly 0.9 (min 1e-4), 20k iterations,
# 4 images/GPU (the official README runs 4 GPUs), 512x512 crops, resize 0.5-2.0, cat_max_ratio 0.75,
# flip, photometric distortion; test: whole image, short side 512.
# Annotation-free variant (official VOC-20, 2k iterations, no self-training):
#   --cfg-options train_dataloader.dataset.pipeline.2.classes=all train_cfg.max_iters=2000 \
#       train_cfg.val_interval=2000 param_scheduler.0.end=2000 custom_hooks.0.switch_ratio=1.0 \
#       model.pseudo_classes=None
# (model.use_gt_void_mask=False also labels GT-void pixels: no GT is read at all.)
# Guesses / deviations: the official VOC numbers use an RN50 teacher (text width 1024); ViT-B/16 is
# the default here (decode_head.channels is derived from the teacher's CLIP text width: 512 for
# ViT-B/16, 1024 with model.teacher.clip.model_name=RN50). Dropout 0 as the official configs. CLIP mean/std for the
# teacher (official: ImageNet; model.teacher.legacy_imagenet_norm=True). Self-training starts after
# iteration 2000 (official: at 2000, a one-iteration difference). train_aug list name as in
# configs/clip_es_voc.py.
_base_ = [
    './_base_/datasets/maskclip_voc20.py',  # VOC-20 val (data_root, voc20_classes, test_pipeline)
    './_base_/default_runtime.py',
    './_base_/schedules/schedule_20k.py',
]
custom_imports = dict(imports=['wsss_mmseg', 'wsss_mmseg.models.maskclip', 'wsss_mmseg.models.maskclip_plus',
                               'wsss_mmseg.hooks.maskclip_plus_phase',
                               'wsss_mmseg.datasets.maskclip_plus_transforms'],
                      allow_failed_imports=False)
default_scope = 'mmseg'
work_dir = 'work_dirs/maskclip_plus_deeplabv2_r101_voc'

# The dataset root (WSSS_VOC_ROOT=/path/to/it in the environment moves it) and the 20 names as
# metainfo (background (0) -> 255, class c+1 -> c: VOC-20) come from the dataset base.
data_root = {{_base_.data_root}}  # noqa: F821  (mmengine base variable)
voc20_classes = {{_base_.voc20_classes}}  # noqa: F821
crop_size = (512, 512)
unseen = [15, 16, 17, 18, 19]  # pottedplant, sheep, sofa, train, tvmonitor (VOC-20 ids)
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='MaskCLIPPlusSegmentor',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=crop_size),
    pretrained='open-mmlab://resnet101_v1c',
    backbone=dict(type='ResNetV1c', depth=101, num_stages=4, out_indices=(0, 1, 2, 3), dilations=(1, 1, 2, 4),
                  strides=(1, 2, 1, 1), norm_cfg=norm_cfg, norm_eval=False, style='pytorch',
                  contract_dilation=True),
    decode_head=dict(type='ASPPV2Head', in_channels=2048, in_index=3, channels=None,  # = CLIP text width
                     dilations=(6, 12, 18, 24), dropout_ratio=0.0, norm_cfg=norm_cfg, align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    teacher=dict(
        type='MaskCLIPSegmentor',
        clip=dict(model_name='ViT-B-16', pretrained='openai'),  # or the path of OpenAI's ViT-B-16.pt
        backbone=dict(type='MaskCLIPBackbone', mode='maskclip'),
        decode_head=dict(type='MaskCLIPHead', class_table='voc20_readable', templates='maskclip85',
                         prompt_denoising=None, key_smoothing=None)),
    pseudo_classes=unseen,
    learn_bg=False,
    unlabeled_index=254,
    use_gt_void_mask=True,
    conf_thresh=None,
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

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
train_dataloader = dict(
    batch_size=4,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='PascalVOCDataset',
        data_root=data_root,
        metainfo=dict(classes=voc20_classes),
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
        ann_file='ImageSets/Segmentation/train_aug.txt',
        pipeline=train_pipeline))
val_dataloader = {{_base_.test_dataloader}}  # noqa: F821  (VOC-20 val, short side 512)
val_evaluator = {{_base_.test_evaluator}}  # noqa: F821
custom_hooks = [dict(type='MaskCLIPPlusPhaseHook', switch_ratio=0.1),  # the "first 1/10" rule (§2.3)
                dict(type='NaNLossGuardHook')]
auto_scale_lr = dict(enable=False, base_batch_size=16)
