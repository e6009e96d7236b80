# MaskCLIP (ViT-B/16, training-free dense labels, spec maskclip_pacl.md §1) as the pseudo-label
# source of tools/generate_pseudo.py for PASCAL VOC 2012 train_aug -- same job, dataset and mask
# maker as configs/clip_es_voc.py, only the generator differs.
#
#   python tools/generate_pseudo.py configs/maskclip_pseudo_voc.py \
#       --cfg-options generator.clip.pretrained=/path/ViT-B-16.pt
#
# Per image, restricted to its labels: P = softmax(100 * cos) over the image's K label prompts +
# the 25 CLIP-ES background words; cam_k = P_k / max P_k (each present class reaches 1, as a CAM);
# cam_refined = key smoothing (token-cosine keys) of the same logits, normalised the same way.
# Surgery variants: generator.mode=clearclip|sclip|naclip (spec §5.6).
# Dataset (VOC train_aug, root: WSSS_VOC_ROOT=/path/to/it in the environment) and mask maker
# (dense CRF, confidence = max posterior) are those of clip_es_voc.py.
_base_ = ['./clip_es_voc.py']
custom_imports = dict(imports=['wsss_mmseg', 'wsss_mmseg.models.maskclip'], allow_failed_imports=False)
work_dir = 'work_dirs/maskclip_pseudo_voc'

generator = dict(
    _delete_=True,
    type='MaskCLIPGenerator',
    clip=dict(model_name='ViT-B-16', pretrained='openai'),
    class_table='voc20',          # label ids index this table
    text_table='voc20_readable',  # prompt names (MaskCLIP's readable VOC names, same order)
    templates='maskclip85',
    background='clip_es_voc',     # the 25 CLIP-ES VOC background words
    scale=100.0,
    cam_norm='max',
    mode='maskclip',
    key_smoothing=dict(type='KeySmoothing', thresh=1.0, scale=100.0, key_norm='token'),
    caa=None,                     # or dict(type='CAA', box_threshold=0.4, attn_layers=8)
    pamr=None,                    # or dict(type='PAMR', iters=10, dilations=(8, 16)) (spec §5.3/§6.4)
    legacy_imagenet_norm=False,
    max_side=1024,
    device='auto')

pseudo_job = dict(_delete_=True, save_cams=False, evaluate=True, eval_conf_thresholds=[0.95], log_interval=50)
