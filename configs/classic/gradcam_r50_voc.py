# Grad-CAM (Selvaraju et al. 2017) of the CAM classifier (same training as cam_r50_voc.py):
# ReLU(sum_c mean(dS_k/dA_c) A_c) at any target layer of the classifier.
#   python tools/generate_pseudo.py configs/classic/gradcam_r50_voc.py \
#       --cfg-options generator.checkpoint=work_dirs/gradcam_r50_voc/iter_4000.pth \
#       generator.target_layer=backbone.layer3
_base_ = ['./cam_r50_voc.py']
work_dir = 'work_dirs/gradcam_r50_voc'
generator = dict(config='{{fileDirname}}/gradcam_r50_voc.py',
                 checkpoint='work_dirs/gradcam_r50_voc/iter_4000.pth',
                 method='gradcam', target_layer='backbone.layer4')
