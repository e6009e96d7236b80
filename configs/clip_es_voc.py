# CLIP-ES pseudo labels for PASCAL VOC 2012 train_aug (CVPR 2023), official settings.
#
#   python tools/generate_pseudo.py configs/clip_es_voc.py \
#       --cfg-options generator.clip.pretrained=/path/ViT-B-16.pt
#
# CLIP weights: ONE key, `generator.clip.pretrained` ('openai' downloads them; or a path to
# OpenAI's ViT-B-16.pt / an open_clip checkpoint). Outputs go to work_dirs/clip_es_voc/pseudo.
custom_imports = dict(imports=['wsss_mmseg'], allow_failed_imports=False)
default_scope = 'mmseg'
work_dir = 'work_dirs/clip_es_voc'

# The dataset root, defined once and referenced below: WSSS_VOC_ROOT=/path/to/it in the environment
# moves every dataset path of this config (mmengine substitutes it when reading the file).
data_root = '{{$WSSS_VOC_ROOT:data/VOCdevkit/VOC2012}}'

# Image-level labels: the IRN/CLIMS `cls_labels.npy` (id -> 20-dim multi-hot), a JSON
# {id: [class indices]}, a text file `id idx idx ...`, or None = derived from the GT masks.
pseudo_dataset = dict(
    type='VOCImageLabels',
    data_root=data_root,
    split='ImageSets/Segmentation/train_aug.txt',
    img_dir='JPEGImages',
    labels=None,
    gt_dir='SegmentationClassAug',  # only for evaluation of the pseudo masks (None: skip)
    class_table='voc20')

generator = dict(
    type='CLIPESGenerator',
    clip=dict(model_name='ViT-B-16', pretrained='openai'),
    class_table='voc20',
    synonyms='clip_es',          # 'bird avian', 'person with clothes,people,human', ...
    templates='clip_es',         # 'a clean origami {}.'
    background='clip_es',        # the 25 VOC background words
    box_threshold=0.4,           # CAA box threshold lambda (VOC)
    attn_layers=8,               # CAA: attention of the last 8 blocks
    caa=True,
    fidelity=True,               # reproduce the official outputs (see README: fidelity)
    max_side=1024,               # bounded memory: maps, CRF and confidence of larger photos are made at
                                 # a working size with this longer side, only the final mask and
                                 # confidence are upsampled (VOC/COCO images never hit it)
    batch_size=None,             # images per forward pass (None: 8 on CUDA, 1 on the CPU; bucketed by token count)
    max_tokens_per_batch=16384,  # token budget of one pass (bounds GPU memory for mixed sizes)
    autocast=None,               # 'fp16'/'bf16' on GPUs: mixed-precision trunk (see README)
    device='auto')

# CAMs -> pseudo mask + confidence (max CRF posterior). The CGL loss ignores pixels whose
# confidence is below mu at training time, so no pixel is set to 255 here.
mask_maker = dict(
    type='PseudoMaskMaker',
    bg_power=1,
    crf=dict(type='DenseCRF', iters=10, pos_xy_std=1, pos_w=3, bi_xy_std=67, bi_rgb_std=3,
             bi_w=4, fidelity=True),
    ignore_below=None)

# num_workers / postprocess_workers: 0 = inline (default); None = min(4, cores - 1) workers so that
# loading and CRF + PNG writing overlap the model (use it on GPU machines with spare cores);
# torch_threads: None = 1 per process on the CPU (bit-identical outputs whatever the launcher)
pseudo_job = dict(save_cams=False, evaluate=True, eval_conf_thresholds=[0.95], log_interval=50,
                  num_workers=0, postprocess_workers=0, torch_threads=None)
