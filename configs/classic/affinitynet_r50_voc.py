# AffinityNet random walk (Ahn & Kwak 2018; pairs as in IRN 2019) on top of the CAMs of
# cam_r50_voc.py (or of ANY generator: CLIP-ES, MDC, SEAM, ...).
#   1. CAMs:    python tools/generate_pseudo.py configs/classic/cam_r50_voc.py --save-cams \
#                   --cfg-options generator.checkpoint=work_dirs/cam_r50_voc/iter_4000.pth
#               (writes work_dirs/cam_r50_voc/pseudo/cams/<id>.npy)
#   2. train:   mim train mmsegmentation configs/classic/affinitynet_r50_voc.py
#               targets: confident regions of the saved CAMs (la_crf 4.0 -> confident
#               foreground, ha_crf 24.0 -> confident background, dense CRF on the CPU data
#               workers), pairs within radius 5 on the stride-8 grid,
#               loss L_bg/4 + L_fg/4 + L_neg/2.
#   3. pseudo:  python tools/generate_pseudo.py configs/classic/affinitynet_r50_voc.py
#               the base generator's maps, refined by the random walk (beta 10, 2^8 steps,
#               background 0.25: IRN's values; the spec gives none), then the dense CRF.
# No validation loop: the AffinityNet is judged by the pseudo labels (eval.json of step 3).
_base_ = ['./_base_/cls_runtime.py', './_base_/pseudo_voc12.py', './_base_/voc12_trainaug.py',
          '../_base_/schedules/default_hooks.py']
custom_imports = dict(
    imports=['wsss_mmseg', 'wsss_mmseg.models.classic', 'wsss_mmseg.models.affinity_net',
             'wsss_mmseg.models.random_walk', 'wsss_mmseg.datasets.classic_transforms',
             'wsss_mmseg.datasets.affinity_labels'],
    allow_failed_imports=False)
work_dir = 'work_dirs/affinitynet_r50_voc'
cam_dir = 'work_dirs/cam_r50_voc/pseudo/cams'
crop_size = (448, 448)

model = dict(
    type='AffinityNet',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
                           seg_pad_val=255, size=crop_size),
    pretrained='open-mmlab://resnet50_v1c',
    backbone=dict(type='ResNetV1c', depth=50, num_stages=4, out_indices=(1, 2, 3),
                  dilations=(1, 1, 1, 1), strides=(1, 2, 2, 1),
                  norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False,
                  style='pytorch', contract_dilation=True),
    # layer2 (stride 8) sets the grid; layer3/layer4 (stride 16) are up-sampled to it
    aff_head=dict(type='AffinityHead', in_channels=(512, 1024, 2048), in_index=(0, 1, 2),
                  channels=128, embed_dims=448),
    radius=5)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadConfidentRegions', cam_dir=cam_dir, la=4.0, ha=24.0, crf=True),
    dict(type='RandomResize', scale=(512, 512), ratio_range=(0.875, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=8, dataset=dict(pipeline=train_pipeline))  # VOC train_aug
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = None
test_cfg = None
test_evaluator = None

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4),
    paramwise_cfg=dict(custom_keys={'aff_head': dict(lr_mult=10.0)}))
param_scheduler = [dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=0, end=8000,
                        by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=8000)
default_hooks = dict(checkpoint=dict(max_keep_ckpts=2))  # every 2000 iterations

generator = dict(
    type='RandomWalkGenerator',
    base=dict(type='ClassifierCAMGenerator', config='{{fileDirname}}/cam_r50_voc.py',
              checkpoint='work_dirs/cam_r50_voc/iter_4000.pth', method='cam',
              scales=(1.0, 0.5, 1.5, 2.0), flip=True, class_table='voc20', device='auto'),
    affinity_net=dict(config='{{fileDirname}}/affinitynet_r50_voc.py',
                      checkpoint='work_dirs/affinitynet_r50_voc/iter_8000.pth'),
    random_walk=dict(type='RandomWalk', beta=10.0, steps=256, radius=5, bg_threshold=0.25),
    device='auto')
