# Caption PACL (spec maskclip_pacl.md §3.2/§3.7) on COCO captions: image-caption pairs, symmetric
# InfoNCE on the B x B compatibility matrix phi_hat(x_i, y_j) (every pair with its own
# text-conditioned patch pooling). Evaluated zero-shot on VOC val (21 classes).
#
#   mim train mmsegmentation configs/pacl_vitb16_coco_captions.py \
#       --cfg-options model.backbone.clip.pretrained=/path/ViT-B-16.pt \
#                     model.decode_head.clip.pretrained=/path/ViT-B-16.pt
#
# The paper trains on ~30 M web pairs with batch 4096 for 10 epochs (§3.3); COCO (118k images,
# 5 captions each) is what the public re-implementations used. One random caption per image and
# step; with probability noun_prompt_prob (0.5, a guess: the paper's ratio is not in the spec) it is
# replaced by one of its nouns in one of the 7 CLIP templates (spec §3.3; nouns = words of the
# plugin's class-name vocabulary, no POS tagger).
_base_ = ['./pacl_vitb16_voc.py']
work_dir = 'work_dirs/pacl_vitb16_coco_captions'
# The dataset root, defined once and referenced below: WSSS_COCO_ROOT=/path/to/it in the environment
# moves every dataset path of this config (mmengine substitutes it when reading the file).
coco_root = '{{$WSSS_COCO_ROOT:data/coco}}'

model = dict(decode_head=dict(
    loss_decode=[dict(type='PACLInfoNCELoss', init_logit_scale=100.0, max_logit_scale=100.0, learnable=True,
                      noun_prompt_prob=0.5, noun_templates='pacl7')]))

caption_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='SampleCaption', mode='random'),
    dict(type='RandomResize', scale=(512, 256), ratio_range=(1.0, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size={{_base_.crop_size}}),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs', meta_keys=('img_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor',
                                          'flip', 'flip_direction', 'caption')),
]
train_dataloader = dict(
    batch_size=256,
    dataset=dict(_delete_=True, type='PACLCaptionDataset', data_root=coco_root,
                 ann_file='annotations/captions_train2017.json', img_dir='train2017',
                 pipeline=caption_pipeline))
train_cfg = dict(max_iters=4600, val_interval=1000)   # ~10 epochs of 118k images at batch 256
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=200),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=False, begin=200, end=4600),
]
default_hooks = dict(checkpoint=dict(interval=1000))
