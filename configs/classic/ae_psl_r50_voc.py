# AE-PSL (Wei et al. 2017), segmentation stage: after the erasing rounds of ae_r50_voc.py, a
# DeepLab (ResNet-50-D8 + ASPP) learns from the offline label (regions mined in the rounds =
# their class, low saliency = background, the rest undecided) and, where it is undecided, from
# the online PSL label (segmentation probabilities weighted by the classification branch's
# confidence, classes absent from the image labels prohibited).
#   1. rounds:  python tools/adversarial_erasing.py configs/classic/ae_r50_voc.py
#   2. CAMs:    python tools/generate_pseudo.py configs/classic/ae_r50_voc.py --save-cams
#               (max over the rounds -> work_dirs/ae_r50_voc/pseudo/cams)
#   3. train:   mim train mmsegmentation configs/classic/ae_psl_r50_voc.py
#               saliency: <saliency_dir>/<id>.png (DSS / PoolNet ...); or
#               dict(type='SpectralResidualSaliency') (built in, weak)
#   4. pseudo:  python tools/generate_pseudo.py configs/classic/ae_psl_r50_voc.py (or mim test)
# Paper: val 55.0 / test 55.7 (unverified in the spec); not measured here.
_base_ = ['./sec_r50_voc.py']
work_dir = 'work_dirs/ae_psl_r50_voc'
cam_dir = 'work_dirs/ae_r50_voc/pseudo/cams'
saliency_source = dict(type='FolderSaliency', saliency_dir='data/saliency/voc12', suffix='.png')
model = dict(
    _delete_=True,
    type='AEPSLSegmentor',
    cls_head=dict(type='MultiLabelClsHead', in_channels=2048, num_classes=20),
    cls_loss_weight=1.0,
    # the segmenter of sec_r50_voc.py: ResNet-50-D8 + ASPP head, 321x321 crops
    data_preprocessor={{_base_.model.data_preprocessor}},  # noqa: F821  (mmengine base variable)
    pretrained={{_base_.model.pretrained}},  # noqa: F821
    backbone={{_base_.model.backbone}},  # noqa: F821
    decode_head={{_base_.model.decode_head}},  # noqa: F821  (its loss is unused)
    train_cfg=dict(), test_cfg=dict(mode='whole'))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadSaliencyMap', source=saliency_source, on_corrupt='skip'),
    # threshold = the erasing threshold of ae_r50_voc.py (0.5)
    dict(type='SaliencyGuidedLabels', cam_dir=cam_dir, method='ae_psl', threshold=0.5,
         bg_saliency=0.1),
    dict(type='RandomResize', scale=(512, 512), ratio_range=(0.5, 1.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=(321, 321)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs', meta_keys=('img_path', 'img_id', 'ori_shape', 'img_shape',
                                          'pad_shape', 'scale_factor', 'flip',
                                          'flip_direction', 'label_ids')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
generator = dict(config='{{fileDirname}}/ae_psl_r50_voc.py',
                 checkpoint='work_dirs/ae_psl_r50_voc/iter_8000.pth')
