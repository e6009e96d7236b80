# DeepLabV3+ (ResNet-101-V1c, output stride 8, depthwise-separable ASPP + stage-1 decoder) on
# PASCAL VOC 2012 train_aug with CLIP-ES pseudo labels and the CGL loss (mu = 0.95); VOC val with
# the real masks. Same data, pseudo labels (shared folder) and solver as deeplabv3_cgl_voc.py.
#
#   mim train mmsegmentation configs/deeplabv3plus_cgl_voc.py \
#       --cfg-options generator.clip.pretrained=/path/ViT-B-16.pt
_base_ = [
    './_base_/models/deeplabv3plus_r50-d8.py',
    './_base_/datasets/voc12aug_pseudo.py',  # inherits ./clip_es_voc.py (pseudo-label generator)
    './_base_/default_runtime.py',
    './_base_/schedules/schedule_20k.py',
    './_base_/pseudo_label_hooks.py',  # PseudoLabelHook + NaNLossGuardHook
]
work_dir = 'work_dirs/deeplabv3plus_cgl_voc'

crop_size = (512, 512)
model = dict(
    pretrained='open-mmlab://resnet101_v1c',
    backbone=dict(depth=101),
    data_preprocessor=dict(type='PseudoLabelDataPreProcessor', size=crop_size),
    decode_head=dict(
        num_classes=21,
        loss_decode=dict(_delete_=True, type='CGLLoss', mu=0.95, loss_weight=1.0)),
    auxiliary_head=dict(
        num_classes=21,
        loss_decode=dict(_delete_=True, type='CGLLoss', mu=0.95, loss_weight=0.4)))
