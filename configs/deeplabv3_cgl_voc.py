# DeepLabV3 (ResNet-101-V1c, output stride 8) trained on PASCAL VOC 2012 train_aug with CLIP-ES
# pseudo labels and the confidence-guided loss (CGL: pixels whose pseudo-label confidence is below
# mu = 0.95 are ignored); validated and tested on VOC val against the real masks.
#
#   mim train mmsegmentation configs/deeplabv3_cgl_voc.py \
#       --cfg-options generator.clip.pretrained=/path/ViT-B-16.pt
#   mim train mmsegmentation configs/deeplabv3_cgl_voc.py --gpus 4 --launcher pytorch \
#       --cfg-options generator.clip.pretrained=/path/ViT-B-16.pt
#   mim test mmsegmentation configs/deeplabv3_cgl_voc.py \
#       --checkpoint work_dirs/deeplabv3_cgl_voc/iter_20000.pth
#
# One command runs the whole pipeline: before the first iteration PseudoLabelHook makes the pseudo
# labels with the generator sections inherited from configs/clip_es_voc.py (through
# _base_/datasets/voc12aug_pseudo.py) into pseudo_label_dir, sharded over the GPUs -- or reuses
# them when they exist and were made with the same settings (e.g. by tools/generate_pseudo.py).
#
# Solver: mmseg's DeepLabV3 VOC recipe (4 GPUs x 4 images = batch 16, 512x512 crops, SGD
# momentum 0.9, weight decay 5e-4, poly LR power 0.9 over 20k iterations), i.e. the solver of
# the CLIP-ES segmentation stage (spec clip_es.md section 8) with LR 0.01. CLIP-ES's LR 2e-4
# (2.5e-5 from COCO-pretrained weights) belongs to deeplab-pytorch's DeepLab-V2: frozen
# BatchNorm, 10x/20x LR on the ASPP classifier, batch 10. Here BatchNorm is trained and the
# ASPP/FCN heads start from random weights at one uniform LR, for which 0.01 at batch 16 is
# mmseg's tested value (2e-4 would leave the heads undertrained in 20k iterations). Scale it
# linearly with the batch size.
_base_ = [
    './_base_/models/deeplabv3_r50-d8.py',
    './_base_/datasets/voc12aug_pseudo.py',  # inherits ./clip_es_voc.py (pseudo-label generator)
    './_base_/default_runtime.py',
    './_base_/schedules/schedule_20k.py',
    './_base_/pseudo_label_hooks.py',  # PseudoLabelHook + NaNLossGuardHook
]
work_dir = 'work_dirs/deeplabv3_cgl_voc'  # (the generator config's work_dir is not ours)

crop_size = (512, 512)
model = dict(
    pretrained='open-mmlab://resnet101_v1c',
    backbone=dict(depth=101),
    # pads the batch confidence like the labels and hands it to CGLLoss
    data_preprocessor=dict(type='PseudoLabelDataPreProcessor', size=crop_size),
    decode_head=dict(
        num_classes=21,
        loss_decode=dict(_delete_=True, type='CGLLoss', mu=0.95, loss_weight=1.0)),
    auxiliary_head=dict(
        num_classes=21,
        loss_decode=dict(_delete_=True, type='CGLLoss', mu=0.95, loss_weight=0.4)))
