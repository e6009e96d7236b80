# MaskCLIP ViT-B/16 zero-shot segmentation on ADE20K val, 150 classes.
# Spec maskclip_pacl.md §1; evaluated with mmseg's own test tool and IoUMetric. Training-free:
# mmseg's test tool still wants a checkpoint, and the segmentor's whole checkpoint is empty (the
# frozen CLIP comes from model.clip), so:
#
#   python -c "from wsss_mmseg.models.maskclip import write_empty_checkpoint as w; w('work_dirs/maskclip_empty.pth')"
#   mim test mmsegmentation configs/maskclip_vitb16_ade150.py --checkpoint work_dirs/maskclip_empty.pth \
#       --cfg-options model.clip.pretrained=/path/ViT-B-16.pt test_dataloader.dataset.data_root=/path/ade/ADEChallengeData2016
#
# (= python $MMSEG/.mim/tools/test.py CONFIG work_dirs/maskclip_empty.pth --cfg-options ...)
# Variants, same backbone: model.backbone.mode=clearclip|sclip|naclip|vanilla (spec §5.6);
# official ImageNet normalisation: model.legacy_imagenet_norm=True; key smoothing / prompt
# denoising (token-cosine KS, PD 0.5): model.decode_head.key_smoothing=True
# model.decode_head.prompt_denoising=True (official KS normalisation: a config with
# key_smoothing=dict(type='KeySmoothing', key_norm='legacy_dim1')); sliding window:
# model.test_cfg.mode=slide model.test_cfg.crop_size="(448,448)" model.test_cfg.stride="(224,224)".
_base_ = ['./_base_/datasets/maskclip_ade150.py']
custom_imports = dict(imports=['wsss_mmseg', 'wsss_mmseg.models.maskclip'], allow_failed_imports=False)
default_scope = 'mmseg'

model = dict(
    type='MaskCLIPSegmentor',
    clip=dict(model_name='ViT-B-16', pretrained='openai'),  # or the path of OpenAI's ViT-B-16.pt
    legacy_imagenet_norm=False,  # True: ImageNet mean/std as the official MaskCLIP configs
    backbone=dict(type='MaskCLIPBackbone', mode='maskclip'),  # value path of the last block
    decode_head=dict(
        type='MaskCLIPHead',
        class_table='ade150',
        templates='maskclip85',  # 80 ImageNet + 5 scene templates, normalise-mean-normalise
        prompt_denoising=None,
        key_smoothing=None),
    test_cfg=dict(mode='whole'))  # official MaskCLIP: whole image, single scale

test_cfg = dict(type='TestLoop')
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
default_hooks = dict(timer=dict(type='IterTimerHook'), logger=dict(type='LoggerHook', interval=50),
                     visualization=dict(type='SegVisualizationHook'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
model_wrapper_cfg = dict(type='CPUCompatibleDDP')  # see maskclip_vitb16_voc20.py
