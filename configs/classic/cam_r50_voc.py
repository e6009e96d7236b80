# CAM (Zhou et al. 2016) on PASCAL VOC 2012 with a ResNet-50 multi-label classifier.
#   1. train:   mim train mmsegmentation configs/classic/cam_r50_voc.py
#               (= python <mmseg>/.mim/tools/train.py configs/classic/cam_r50_voc.py)
#   2. pseudo:  python tools/generate_pseudo.py configs/classic/cam_r50_voc.py \
#                   --cfg-options generator.checkpoint=work_dirs/cam_r50_voc/iter_4000.pth
#               generator.config names the classifier's config (default this file); after
#               training with --cfg-options pass the dumped one, work_dirs/cam_r50_voc/cam_r50_voc.py
#   3. segment: any CGL config (e.g. configs/deeplabv3_cgl_voc.py) on the written masks.
# Mixup: model.data_preprocessor.mixup=dict(alpha=1.0) (batch Mixup of images and label vectors).
_base_ = ['./_base_/cls_runtime.py', './_base_/cls_r50.py', './_base_/voc12_cls.py',
          './_base_/schedule_cls.py', './_base_/pseudo_voc12.py']
work_dir = 'work_dirs/cam_r50_voc'

# CAM = classifier weights on the last feature map; IRN's inference: 4 scales + flip.
generator = dict(
    type='ClassifierCAMGenerator',
    config='{{fileDirname}}/cam_r50_voc.py',  # the classifier = this config's model
    checkpoint='work_dirs/cam_r50_voc/iter_4000.pth',
    method='cam', scales=(1.0, 0.5, 1.5, 2.0), flip=True, max_side=None,
    caa=None,  # or dict(type='CAA', box_threshold=0.4): refine on the feature affinity
    class_table='voc20', device='auto')
