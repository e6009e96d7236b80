# SEC (Kolesnikov & Lampert 2016): seed, expand, constrain on a DeepLab-style segmenter.
#   1. cues:    CAMs of ANY generator saved with --save-cams (a classifier's, or CLIP-ES's:
#               SEC then runs on CLIP cues), e.g.
#               python tools/generate_pseudo.py configs/classic/cam_r50_voc.py --save-cams
#   2. train:   mim train mmsegmentation configs/classic/sec_r50_voc.py
#               seed loss on the cues (class: CAM >= 0.2 x max; background: max CAM < 0.1, or
#               saliency < 0.1 with LoadSaliencyMap before LoadSECCues), expand loss = GWRP
#               (q_fg 0.996, q_bg 0.999, absent classes max-pooled), constrain loss =
#               KL(CRF(f) || f) with the dense CRF in `crf_workers` CPU processes.
#   3. pseudo:  python tools/generate_pseudo.py configs/classic/sec_r50_voc.py  (segmenter ->
#               masks restricted to the image labels; or evaluate directly: mim test)
# Paper: DeepLab-LargeFOV (VGG16), VOC val 50.7 / test 51.7; here ResNet-50-D8 + ASPP head.
_base_ = ['./_base_/cls_runtime.py', './_base_/pseudo_voc12.py', './_base_/voc12_trainaug.py',
          '../_base_/schedules/default_hooks.py']
custom_imports = dict(
    imports=['wsss_mmseg', 'wsss_mmseg.models', 'wsss_mmseg.datasets',
             'wsss_mmseg.datasets.classic_transforms', 'wsss_mmseg.hooks'],
    allow_failed_imports=False)
work_dir = 'work_dirs/sec_r50_voc'
cam_dir = 'work_dirs/cam_r50_voc/pseudo/cams'
# The dataset root (WSSS_VOC_ROOT=/path/to/it in the environment moves it): voc12_trainaug.py's.
data_root = {{_base_.data_root}}  # noqa: F821  (mmengine base variable)
crop_size = (321, 321)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    type='SECSegmentor',
    q_fg=0.996, q_bg=0.999, loss_weights=dict(seed=1.0, expand=1.0, constrain=1.0),
    crf_iters=10, crf_workers=4,
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
                           seg_pad_val=255, size=crop_size),
    pretrained='open-mmlab://resnet50_v1c',
    backbone=dict(type='ResNetV1c', depth=50, num_stages=4, out_indices=(3,),
                  dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1), norm_cfg=norm_cfg,
                  norm_eval=False, style='pytorch', contract_dilation=True),
    decode_head=dict(type='ASPPHead', in_channels=2048, in_index=0, channels=512,
                     dilations=(1, 12, 24, 36), dropout_ratio=0.1, num_classes=21,
                     norm_cfg=norm_cfg, align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),  # unused
    train_cfg=dict(), test_cfg=dict(mode='whole'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadSECCues', cam_dir=cam_dir, fg_ratio=0.2, fg_rule='max_ratio', bg_cam=0.1),
    dict(type='RandomResize', scale=(512, 512), ratio_range=(0.5, 1.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs', meta_keys=('img_path', 'img_id', 'ori_shape', 'img_shape',
                                          'pad_shape', 'scale_factor', 'flip',
                                          'flip_direction', 'label_ids')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))  # VOC train_aug, 16 a batch
val_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='PascalVOCDataset', data_root=data_root,
                 data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
                 ann_file='ImageSets/Segmentation/val.txt',
                 pipeline=[dict(type='LoadImageFromFile'),
                           dict(type='Resize', scale=(2048, 512), keep_ratio=True),
                           dict(type='LoadAnnotations'), dict(type='PackSegInputs')]))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.001, momentum=0.9, weight_decay=5e-4),
    paramwise_cfg=dict(custom_keys={'decode_head': dict(lr_mult=10.0)}))
param_scheduler = [dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=0, end=8000,
                        by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=8000, val_interval=2000)
default_hooks = dict(checkpoint=dict(max_keep_ckpts=2))  # every 2000 iterations
custom_hooks = [dict(type='NaNLossGuardHook')]

generator = dict(type='SegmenterGenerator', config='{{fileDirname}}/sec_r50_voc.py',
                 checkpoint='work_dirs/sec_r50_voc/iter_8000.pth', class_table='voc20',
                 device='auto')
mask_maker = dict(crf=None)  # the segmenter's argmax (restricted to the image labels)
