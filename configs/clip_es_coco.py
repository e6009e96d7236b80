# CLIP-ES pseudo labels for COCO 2014 train (official settings: box threshold 0.7, 23 bg words).
#
#   python tools/generate_pseudo.py configs/clip_es_coco.py \
#       --cfg-options generator.clip.pretrained=/path/ViT-B-16.pt
_base_ = ['./clip_es_voc.py']
work_dir = 'work_dirs/clip_es_coco'
# The dataset root, defined once and referenced below: WSSS_COCO_ROOT=/path/to/it in the environment
# moves every dataset path of this config (mmengine substitutes it when reading the file).
data_root = '{{$WSSS_COCO_ROOT:data/coco}}'

pseudo_dataset = dict(
    _delete_=True,
    type='COCOImageLabels',
    data_root=data_root,
    ann_file='annotations/instances_train2014.json',
    img_dir='train2014',
    gt_dir=None,                 # e.g. 'SegmentationClass/train2014' to evaluate
    class_table='coco80')

generator = dict(class_table='coco80', box_threshold=0.7)
