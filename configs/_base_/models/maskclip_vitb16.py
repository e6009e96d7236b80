# MaskCLIP ViT-B/16 zero-shot segmentor and test runtime, shared by configs/maskclip_vitb16_*.py
# (each adds its dataset base and sets model.decode_head.class_table). See maskclip_vitb16_voc20.py.
# Runtime (env, logs, visualiser, DDP wrapper for multi-process tests): ../seg_runtime.py.
_base_ = ['../seg_runtime.py']
custom_imports = dict(imports=['wsss_mmseg', 'wsss_mmseg.models.maskclip'], allow_failed_imports=False)
default_scope = 'mmseg'

model = dict(
    type='MaskCLIPSegmentor',
    clip=dict(model_name='ViT-B-16', pretrained='openai'),  # or the path of OpenAI's ViT-B-16.pt
    legacy_imagenet_norm=False,  # True: ImageNet mean/std as the official MaskCLIP configs
    backbone=dict(type='MaskCLIPBackbone', mode='maskclip'),  # value path of the last block
    decode_head=dict(
        type='MaskCLIPHead',
        class_table=None,  # set by each dataset config
        templates='maskclip85',  # 80 ImageNet + 5 scene templates, normalise-mean-normalise
        prompt_denoising=None,
        key_smoothing=None),
    test_cfg=dict(mode='whole'))  # official MaskCLIP: whole image, single scale

test_cfg = dict(type='TestLoop')
env_cfg = dict(cudnn_benchmark=False)
default_hooks = dict(timer=dict(type='IterTimerHook'), logger=dict(type='LoggerHook', interval=50),
                     visualization=dict(type='SegVisualizationHook'))
