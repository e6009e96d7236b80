# MaskCLIP+ with a DeepLabV3+-ResNet-101 student (mmseg's DepthwiseSeparableASPPHead, dilations
# (1, 12, 24, 36), 48-channel decoder on the 256-d stage-1 features -- the official Context-60
# zero-shot student, spec maskclip_pacl.md §2.1) on the same VOC-20 transductive zero-shot setting
# as maskclip_plus_deeplabv2_r101_voc.py (teacher, unseen ids 15-19, 20k iterations, switch to
# self-training after the first 1/10). Guess: the official VOC runs use DeepLabV2; this
# combination has no published number. The head's width (channels) is the teacher's text width.
#
#   mim train mmsegmentation configs/maskclip_plus_deeplabv3plus_r101_voc.py \
#       --cfg-options model.teacher.clip.pretrained=/path/ViT-B-16.pt
_base_ = ['./maskclip_plus_deeplabv2_r101_voc.py']
work_dir = 'work_dirs/maskclip_plus_deeplabv3plus_r101_voc'

model = dict(
    decode_head=dict(
        _delete_=True,
        type='DepthwiseSeparableASPPHead',
        in_channels=2048,
        in_index=3,
        channels=None,  # derived: the teacher's CLIP text width (the text embeddings are the classifier)
        dilations=(1, 12, 24, 36),
        c1_in_channels=256,
        c1_channels=48,
        dropout_ratio=0.0,  # official MaskCLIP+ configs: no dropout
        norm_cfg={{_base_.norm_cfg}},
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))
