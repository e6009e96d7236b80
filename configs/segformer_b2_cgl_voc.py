# SegFormer-B2 (MiT-B2 encoder, all-MLP head) on PASCAL VOC 2012 train_aug with CLIP-ES pseudo
# labels and the CGL loss (mu = 0.95); VOC val with the real masks. Same data and pseudo labels
# (shared folder) as deeplabv3_cgl_voc.py.
#
#   mim train mmsegmentation configs/segformer_b2_cgl_voc.py \
#       --cfg-options generator.clip.pretrained=/path/ViT-B-16.pt
#
# Solver: mmseg's SegFormer recipe (AdamW, LR 6e-5, weight decay 0.01, head LR x10, no decay on
# norms/positional blocks, 1500-iteration linear warm-up, then poly power 1.0) shortened to the
# 20k iterations of the VOC schedule; the SGD recipe of the CNN configs does not suit MiT.
_base_ = [
    './_base_/models/segformer_mit-b0.py',
    './_base_/datasets/voc12aug_pseudo.py',  # inherits ./clip_es_voc.py (pseudo-label generator)
    './_base_/default_runtime.py',
    './_base_/schedules/schedule_20k.py',
    './_base_/pseudo_label_hooks.py',  # PseudoLabelHook + NaNLossGuardHook
]
work_dir = 'work_dirs/segformer_b2_cgl_voc'

crop_size = (512, 512)
# ImageNet-pretrained MiT-B2 (mmseg's release; the onedl stack mirrors it under
# https://mmassets.onedl.ai/mmsegmentation/v0.5/pretrain/segformer/mit_b2_20220624-66e8bf70.pth)
checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segformer/mit_b2_20220624-66e8bf70.pth'  # noqa
model = dict(
    data_preprocessor=dict(type='PseudoLabelDataPreProcessor', size=crop_size),
    backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint),
        embed_dims=64,
        num_heads=[1, 2, 5, 8],
        num_layers=[3, 4, 6, 3]),
    decode_head=dict(
        in_channels=[64, 128, 320, 512],
        num_classes=21,
        loss_decode=dict(_delete_=True, type='CGLLoss', mu=0.95, loss_weight=1.0)))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={
        'pos_block': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.),
        'head': dict(lr_mult=10.)
    }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=20000, by_epoch=False),
]
