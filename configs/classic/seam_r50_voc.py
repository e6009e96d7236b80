# SEAM (Wang et al. 2020) on a ResNet-50 multi-label classifier: each batch is also classified at
# 0.3x scale (the two BCE terms averaged); ER ties the label-masked, min-max normalised CAMs of the
# two views; the pixel correlation module (PCM: 1x1 convs of stages 2 and 3 + the image, ReLU'd
# cosine affinity) refines each view's CAM and ECR ties it to the other view's CAM (hardest 20 %),
# plus the official code's min-pooling term on the PCM maps. See wsss_mmseg/models/seam.py.
# Not included: AffinityNet random walk (see the affinity configs) and PCM-refined CAMs at
# inference (ClassifierCAMGenerator uses the plain CAM).
_base_ = ['./cam_r50_voc.py']
work_dir = 'work_dirs/seam_r50_voc'
model = dict(
    backbone=dict(out_indices=(1, 2, 3)),   # stages 2, 3 feed the PCM; the CAM head reads the last
    equivariance=dict(type='SEAMLoss', scale=0.3, loss_weight=1.0,
                      pcm=dict(type='SEAMPCM', in_index=(0, 1), in_channels=(512, 1024),
                               mid_channels=(64, 128), out_channels=192),
                      ecr_weight=1.0, ecr_top_ratio=0.2, min_pool_weight=1.0))
generator = dict(config='{{fileDirname}}/seam_r50_voc.py',
                 checkpoint='work_dirs/seam_r50_voc/iter_4000.pth')
