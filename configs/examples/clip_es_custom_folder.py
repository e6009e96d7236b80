# CLIP-ES pseudo labels for any folder of images with class NAMES per image.
#
# labels.json:  {"dog1.jpg": ["dog", "person"], "street/cat2.png": "cat;sofa"}
# or labels.csv:
#     image,labels
#     dog1.jpg,dog|person
#
#   python tools/generate_pseudo.py configs/examples/clip_es_custom_folder.py \
#       --cfg-options pseudo_dataset.img_dir=my/images pseudo_dataset.labels=my/labels.csv \
#                     generator.clip.pretrained=/path/ViT-B-16.pt
#
# Class names are looked up in `class_table` (here VOC's 20 names; 'coco80', 'ade150',
# 'context59', ... also work). Unknown names stop the job with the file, image and close matches.
_base_ = ['../clip_es_voc.py']
work_dir = 'work_dirs/clip_es_custom'

pseudo_dataset = dict(
    _delete_=True,
    type='FolderImageLabels',
    img_dir='my/images',
    labels='my/labels.json',
    class_table='voc20')
