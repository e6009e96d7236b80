# SEAM (Wang et al. 2020), scale-equivariance part: each batch is also classified at 0.3x
# scale and the normalised CAMs of the two views are tied with mean |A(T(I)) - T(A(I))|.
# Not included: SEAM's pixel correlation module (PCM), the ECR loss and AffinityNet random walk.
_base_ = ['./cam_r50_voc.py']
work_dir = 'work_dirs/seam_r50_voc'
model = dict(equivariance=dict(type='SEAMLoss', scale=0.3, loss_weight=1.0))
generator = dict(config='{{fileDirname}}/seam_r50_voc.py',
                 checkpoint='work_dirs/seam_r50_voc/iter_4000.pth')
