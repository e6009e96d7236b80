# MDC (Wei et al. 2018): dilated 3x3 conv classifiers with rates 1, 3, 6, 9 on the last feature
# map, each trained under BCE; localisation map = H_1 + mean(H_3, H_6, H_9).
# (The paper's saliency background is not used; background = (1 - max CAM) as for CAM.)
_base_ = ['./cam_r50_voc.py']
work_dir = 'work_dirs/mdc_r50_voc'
model = dict(cls_head=dict(_delete_=True, type='MDCHead', in_channels=2048, num_classes=20,
                           dilations=(1, 3, 6, 9)))
generator = dict(config='{{fileDirname}}/mdc_r50_voc.py',
                 checkpoint='work_dirs/mdc_r50_voc/iter_4000.pth')
