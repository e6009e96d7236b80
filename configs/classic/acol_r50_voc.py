# ACoL (Zhang et al. 2018, adversarial complementary learning): two parallel classifiers on the
# last feature map; classifier B sees the features with A's regions of the labelled classes
# (min-max normalised map > delta) set to 0; loss = mean of both BCEs. Localisation map =
# max(A, B), B on the features erased by A's regions of the image's labels.
#   mim train mmsegmentation configs/classic/acol_r50_voc.py
#   python tools/generate_pseudo.py configs/classic/acol_r50_voc.py
# delta: the spec gives 0.6-0.9 (ACoL: 0.6 on CUB, 0.9 on ILSVRC; WSOL, no VOC number).
_base_ = ['./cam_r50_voc.py']
custom_imports = dict(
    imports=['wsss_mmseg', 'wsss_mmseg.models.classic', 'wsss_mmseg.models.classic_acol',
             'wsss_mmseg.datasets.classic_transforms'],
    allow_failed_imports=False)
work_dir = 'work_dirs/acol_r50_voc'
model = dict(cls_head=dict(_delete_=True, type='ACoLHead', in_channels=2048, num_classes=20,
                           delta=0.6, channels=512, num_convs=1))
generator = dict(config='{{fileDirname}}/acol_r50_voc.py',
                 checkpoint='work_dirs/acol_r50_voc/iter_4000.pth')
