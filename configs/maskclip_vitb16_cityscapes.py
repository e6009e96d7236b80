# MaskCLIP ViT-B/16 zero-shot segmentation on Cityscapes val, 19 classes.
# Spec maskclip_pacl.md §1; evaluated with mmseg's own test tool and IoUMetric. Training-free:
# mmseg's test tool still wants a checkpoint, and the segmentor's whole checkpoint is empty (the
# frozen CLIP comes from model.clip), so:
#
#   python -c "from wsss_mmseg.models.maskclip import write_empty_checkpoint as w; w('work_dirs/maskclip_empty.pth')"
#   mim test mmsegmentation configs/maskclip_vitb16_cityscapes.py --checkpoint work_dirs/maskclip_empty.pth \
#       --cfg-options model.clip.pretrained=/path/ViT-B-16.pt test_dataloader.dataset.data_root=/path/cityscapes
#
# (= python $MMSEG/.mim/tools/test.py CONFIG work_dirs/maskclip_empty.pth --cfg-options ...)
# Variants, same backbone: model.backbone.mode=clearclip|sclip|naclip|vanilla (spec §5.6);
# official ImageNet normalisation: model.legacy_imagenet_norm=True; key smoothing / prompt
# denoising (token-cosine KS, PD 0.5): model.decode_head.key_smoothing=True
# model.decode_head.prompt_denoising=True (official KS normalisation: a config with
# key_smoothing=dict(type='KeySmoothing', key_norm='legacy_dim1')); sliding window:
# model.test_cfg.mode=slide model.test_cfg.crop_size="(448,448)" model.test_cfg.stride="(224,224)".
_base_ = ['./_base_/datasets/maskclip_cityscapes.py', './_base_/models/maskclip_vitb16.py']
model = dict(decode_head=dict(class_table='cityscapes19'))
