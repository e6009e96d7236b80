# PACL with image-level labels only (weakly supervised variant, spec maskclip_pacl.md §3.8) on
# PASCAL VOC 2012 train_aug; zero-shot-style evaluation on VOC val (21 classes, background =
# max over the CLIP-ES background prompts).
#
#   mim train mmsegmentation configs/pacl_vitb16_voc.py \
#       --cfg-options model.backbone.clip.pretrained=/path/ViT-B-16.pt \
#                     model.decode_head.clip.pretrained=/path/ViT-B-16.pt
#   mim test mmsegmentation configs/pacl_vitb16_voc.py --checkpoint work_dirs/pacl_vitb16_voc/iter_2000.pth
#
# Trainable: only the per-patch residual MLP e_v (768 -> 512, ~1.1 M parameters) and the loss's
# logit scale / bias. CLIP (image and text towers, text projection) is frozen.
#
# Dense prior (§3.8 c, recommended with labels only): make pseudo masks first
# (tools/generate_pseudo.py configs/clip_es_voc.py, ignore_below=0.9), then set
#   train_dataloader.dataset.seg_map_dir=<work_dir>/pseudo/masks, add
#   dict(type='LoadAnnotations') after LoadImageFromFile in train_pipeline and
#   dict(type='PACLDensePriorLoss', temperature=0.01, loss_weight=0.1) to model.decode_head.loss_decode.
# Runtime (env, logs, visualiser, DDP wrapper) and the loops/hooks of the training schedules.
_base_ = ['./_base_/seg_runtime.py', './_base_/schedules/default_hooks.py']
custom_imports = dict(imports=['wsss_mmseg', 'wsss_mmseg.models.pacl', 'wsss_mmseg.datasets.pacl_data'],
                      allow_failed_imports=False)
default_scope = 'mmseg'
work_dir = 'work_dirs/pacl_vitb16_voc'

# The dataset root, defined once and referenced below: WSSS_VOC_ROOT=/path/to/it in the environment
# moves every dataset path of this config (mmengine substitutes it when reading the file).
data_root = '{{$WSSS_VOC_ROOT:data/VOCdevkit/VOC2012}}'
clip = dict(model_name='ViT-B-16', pretrained='openai')
crop_size = (224, 224)

model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[122.771, 116.746, 104.094],
                           std=[68.501, 66.632, 70.323], bgr_to_rgb=True, pad_val=0, seg_pad_val=255,
                           size=crop_size),
    # frozen CLIP ViT, tokens before ln_post; token_source: 'last' (paper), 'penultimate' (layer L-1)
    # or a locality-preserving last block 'maskclip' | 'sclip' | 'clearclip' | 'naclip' (spec §3.8
    # pitfall 4). CLIP stays out of the checkpoints (only e_v and the loss scale/bias are saved).
    # test_patch_stride=4: the paper's dense inference (spec §3.4, overlapping patches, 16x the tokens;
    # combine with test_cfg=dict(mode='slide', ...) on large images)
    backbone=dict(type='PACLTokenBackbone', clip=clip, token_source='last', test_patch_stride=None),
    decode_head=dict(
        type='PACLHead',
        clip=clip,
        in_channels=None,  # derived: the CLIP ViT width (768 for ViT-B/16)
        in_index=0,
        class_table='voc20',
        templates='pacl7',          # the 7 "best" CLIP templates (spec §3.4)
        background='clip_es',       # 25 VOC background words: negatives + background score
        with_bg_class=True,
        input_norm='ln_post',
        init='clip_proj',           # e_v starts as CLIP's ln_post + proj
        hidden_dim=None,            # = 512
        depth=2,                    # skip Linear + (Linear, ReLU, Linear)
        pool_temperature=1.0,       # paper: no temperature; 0.1 as an ablation
        chunk_size=256,
        score_scale=100.0,
        # contrastive variant (spec §3.8 b), instead of or next to the sigmoid loss:
        # dict(type='PACLContrastiveLabelLoss', init_logit_scale=10.0, use_background=True)
        loss_decode=[dict(type='PACLMultiLabelLoss', init_scale=10.0, init_bias=-10.0,
                          use_background=True)]),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResize', scale=(512, 256), ratio_range=(1.0, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs', meta_keys=('img_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor',
                                          'flip', 'flip_direction', 'img_labels')),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 448), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=64, num_workers=4, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='PACLImageLabelDataset',
        source=dict(type='VOCImageLabels', data_root=data_root, split='ImageSets/Segmentation/train_aug.txt',
                    img_dir='JPEGImages', labels=None, gt_dir='SegmentationClassAug', class_table='voc20'),
        empty_labels='skip',        # images without any class are dropped ('background' keeps them)
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=4, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='PascalVOCDataset', data_root=data_root,
                 data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
                 ann_file='ImageSets/Segmentation/val.txt', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# AdamW 5e-4, weight decay 0.2, cosine schedule (spec §3.3); no decay on the loss's scale/bias
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=5e-4, betas=(0.9, 0.98), weight_decay=0.2),
                     paramwise_cfg=dict(custom_keys={'loss_decode': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=False, begin=100, end=2000),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=2000, val_interval=500)
default_hooks = dict(checkpoint=dict(interval=500))
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)
