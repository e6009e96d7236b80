# Mixup-CAM (Chang et al. 2020): the CAM classifier trained on Mixup batches (Beta(1, 1) mixing of
# images and label vectors) with two CAM regularisers: pixel-wise entropy over the present
# classes (loss_ent) and the SCOPS-style spatial concentration of each present class
# (loss_con). Mixup-CAM has no public code: the regulariser formulas and weights are ours
# (wsss_mmseg/classic/mixup.py); tune the weights on val.
#   mim train mmsegmentation configs/classic/mixup_cam_r50_voc.py
#   python tools/generate_pseudo.py configs/classic/mixup_cam_r50_voc.py
_base_ = ['./cam_r50_voc.py']
work_dir = 'work_dirs/mixup_cam_r50_voc'
model = dict(type='MixupCAMClassifier', entropy_weight=0.1, concentration_weight=0.1,
             data_preprocessor=dict(mixup=dict(_delete_=True, alpha=1.0, prob=1.0)))
generator = dict(config='{{fileDirname}}/mixup_cam_r50_voc.py',
                 checkpoint='work_dirs/mixup_cam_r50_voc/iter_4000.pth')
