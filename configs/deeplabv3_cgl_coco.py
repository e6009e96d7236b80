# DeepLabV3 (ResNet-101-V1c, output stride 8) trained on COCO 2014 train with CLIP-ES pseudo labels
# (81 classes incl. background) and the CGL loss (mu = 0.95); validated on COCO 2014 val masks.
#
#   mim train mmsegmentation configs/deeplabv3_cgl_coco.py --gpus 4 --launcher pytorch \
#       --cfg-options generator.clip.pretrained=/path/ViT-B-16.pt
#
# Needs data/coco/train2014_labeled.txt (see _base_/datasets/coco14_pseudo.py). Solver as
# deeplabv3_cgl_voc.py (SGD 0.01 at batch 16, momentum 0.9, weight decay 5e-4, poly 0.9) for
# 100k iterations, the length of deeplab-pytorch's COCO schedule (spec clip_es.md section 8).
_base_ = [
    './_base_/models/deeplabv3_r50-d8.py',
    './_base_/datasets/coco14_pseudo.py',  # inherits ./clip_es_coco.py (pseudo-label generator)
    './_base_/default_runtime.py',
    './_base_/schedules/schedule_20k.py',
    './_base_/pseudo_label_hooks.py',  # PseudoLabelHook + NaNLossGuardHook
]
work_dir = 'work_dirs/deeplabv3_cgl_coco'

crop_size = (512, 512)
model = dict(
    pretrained='open-mmlab://resnet101_v1c',
    backbone=dict(depth=101),
    data_preprocessor=dict(type='PseudoLabelDataPreProcessor', size=crop_size),
    decode_head=dict(
        num_classes=81,
        loss_decode=dict(_delete_=True, type='CGLLoss', mu=0.95, loss_weight=1.0)),
    auxiliary_head=dict(
        num_classes=81,
        loss_decode=dict(_delete_=True, type='CGLLoss', mu=0.95, loss_weight=0.4)))

max_iters = 100000
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=20000)
default_hooks = dict(checkpoint=dict(interval=10000))
