# Saliency-guided labels (Oh et al. 2017, simplified): salient pixels take the class of the
# strongest CAM among the image's labels, non-salient pixels are background, the rest ignored;
# a DeepLabV3 (ResNet-50-D8) trains on them with cross-entropy (ignore 255).
#   1. CAMs:    python tools/generate_pseudo.py configs/classic/cam_r50_voc.py --save-cams
#   2. train:   mim train mmsegmentation configs/classic/saliency_guided_r50_voc.py
#               saliency: your own maps (DSS / PoolNet ...) as <saliency_dir>/<id>.png, or the
#               built-in spectral-residual saliency (no weights, weak: mean AUC 0.65 on the
#               60-image VOC sample, see configs/classic/README.md):
#               configs/classic/saliency_guided_sr_r50_voc.py.
#   3. pseudo:  python tools/generate_pseudo.py configs/classic/saliency_guided_r50_voc.py
# Paper: val 55.7 / test 56.7 (unverified in the spec); not measured here.
_base_ = ['./sec_r50_voc.py']
work_dir = 'work_dirs/saliency_guided_r50_voc'
cam_dir = 'work_dirs/cam_r50_voc/pseudo/cams'
saliency_source = dict(type='FolderSaliency', saliency_dir='data/saliency/voc12', suffix='.png')
model = dict(
    _delete_=True,
    type='EncoderDecoder',
    # the backbone of sec_r50_voc.py (ResNet-50-D8, 321x321 crops); its ASPP head with a CE loss
    data_preprocessor={{_base_.model.data_preprocessor}},  # noqa: F821  (mmengine base variable)
    pretrained={{_base_.model.pretrained}},  # noqa: F821
    backbone={{_base_.model.backbone}},  # noqa: F821
    decode_head=dict(type='ASPPHead', in_channels=2048, in_index=0, channels=512,
                     dilations=(1, 12, 24, 36), dropout_ratio=0.1, num_classes=21,
                     norm_cfg=dict(type='BN', requires_grad=True), align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0,
                                      avg_non_ignore=True)),
    train_cfg=dict(), test_cfg=dict(mode='whole'))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadSaliencyMap', source=saliency_source, on_corrupt='skip'),
    dict(type='SaliencyGuidedLabels', cam_dir=cam_dir, method='oh',
         fg_saliency=0.5, bg_saliency=0.1),
    dict(type='RandomResize', scale=(512, 512), ratio_range=(0.5, 1.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=(321, 321)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
generator = dict(config='{{fileDirname}}/saliency_guided_r50_voc.py',
                 checkpoint='work_dirs/saliency_guided_r50_voc/iter_8000.pth')
