# COCO 2014 for weakly supervised training: train2014 images with CLIP-ES pseudo labels (masks +
# confidence), val2014 with semantic masks (0 background, 1..80 = COCO-80 class + 1, 255 ignore;
# the usual WSSS layout data/coco/SegmentationClass/{train2014,val2014}/<image name>.png).
# Pipelines: pseudo_label_pipelines.py.
#
# The generator sections come from configs/clip_es_coco.py (inherited here).
_base_ = ['../../clip_es_coco.py', './pseudo_label_pipelines.py']
import os.path as osp  # (after _base_: mmengine then keeps this a plain, non-lazy config)

custom_imports = dict(imports=['wsss_mmseg', 'wsss_mmseg.hooks'], allow_failed_imports=False)

data_root = {{_base_.data_root}}  # noqa: F821  (mmengine base variable)

# <pseudo_label_dir>/masks and /confidence; the output folder of
# `tools/generate_pseudo.py configs/clip_es_coco.py`. Move it with
#   --cfg-options train_dataloader.dataset.data_prefix.seg_map_path=/abs/dir/masks
pseudo_label_dir = osp.abspath('work_dirs/clip_es_coco/pseudo')

# The training list: the train2014 images with at least one annotation -- the images the
# generator (COCOImageLabels, drop_unlabeled=True) makes pseudo labels for; an image without
# labels has no pseudo mask, and PseudoLabelHook refuses training samples without one. Write it
# once with:
#   python -c "import json; d = json.load(open('data/coco/annotations/instances_train2014.json')); \
#     has = {a['image_id'] for a in d['annotations']}; \
#     print('\n'.join(sorted(i['file_name'][:-4] for i in d['images'] if i['id'] in has)))" \
#     > data/coco/train2014_labeled.txt
train_list = 'train2014_labeled.txt'

# Label value k (1..80) = COCO-80 class k-1 in the generator's class table 'coco80'.
coco_classes = (
    'background', 'person', 'bicycle', 'car', 'motorbike', 'aeroplane', 'bus', 'train', 'truck',
    'boat', 'traffic light', 'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat',
    'dog', 'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'backpack',
    'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball',
    'kite', 'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket',
    'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple',
    'sandwich', 'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair',
    'sofa', 'pottedplant', 'bed', 'diningtable', 'toilet', 'tvmonitor', 'laptop', 'mouse',
    'remote', 'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink', 'refrigerator',
    'book', 'clock', 'vase', 'scissors', 'teddy bear', 'hair drier', 'toothbrush',
)

train_dataloader = dict(
    batch_size=4,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='PseudoLabelSegDataset',
        data_root=data_root,
        ann_file=train_list,
        metainfo=dict(classes=coco_classes),
        data_prefix=dict(img_path='train2014',
                         seg_map_path=osp.join(pseudo_label_dir, 'masks')),
        pipeline={{_base_.train_pipeline}}))  # noqa: F821  (mmengine base variable)
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='BaseSegDataset',
        data_root=data_root,
        metainfo=dict(classes=coco_classes),
        img_suffix='.jpg',
        seg_map_suffix='.png',
        data_prefix=dict(img_path='val2014', seg_map_path='SegmentationClass/val2014'),
        pipeline={{_base_.test_pipeline}}))  # noqa: F821
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
