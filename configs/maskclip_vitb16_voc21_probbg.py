# MaskCLIP ViT-B/16 on PASCAL VOC 2012 val with background (21 classes) from the spec §6.4
# post-processors instead of background words: ProbBackground (class 0 where the best probability of
# softmax(scale * cos) over the 20 classes is below thresh; SCLIP VOC-21: 0.1 at scale 65) and
# AreaBackground (foreground classes winning < 10 % of the predicted foreground are suppressed).
# PAMR (spec §5.3) needs the image and is applied by the generators / your own code:
# MODELS.build(dict(type='PAMR', iters=10, dilations=(8, 16)))(maps, image=img).
# Usage as configs/maskclip_vitb16_voc21_bg.py.
_base_ = ['./_base_/datasets/maskclip_voc21.py', './_base_/models/maskclip_vitb16.py']
model = dict(decode_head=dict(
    class_table='voc20_readable', background=None,
    prob_background=dict(type='ProbBackground', thresh=0.1, scale=65.0),
    area_background=dict(type='AreaBackground', thresh=0.1)))
