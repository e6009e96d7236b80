# PASCAL VOC 2012 for weakly supervised training: train_aug images with CLIP-ES pseudo labels
# (masks + confidence), val with the real masks. Pipelines (the confidence the CGL loss needs is
# loaded and packed with the mask): pseudo_label_pipelines.py.
#
# The generator sections (pseudo_dataset, generator, mask_maker, pseudo_job) come from
# configs/clip_es_voc.py -- inherited here, the one source of truth for how the pseudo labels are
# made. PseudoLabelHook (in the training configs) makes them into `pseudo_label_dir` before the
# first iteration, or reuses them when they exist and match.
_base_ = ['../../clip_es_voc.py', './pseudo_label_pipelines.py']
import os.path as osp  # (after _base_: mmengine then keeps this a plain, non-lazy config)

# wsss_mmseg registers its datasets, transforms, models and model wrappers; the hook module is
# imported explicitly so that PseudoLabelHook is registered on any version of the package.
custom_imports = dict(imports=['wsss_mmseg', 'wsss_mmseg.hooks'], allow_failed_imports=False)

data_root = {{_base_.data_root}}  # noqa: F821  (mmengine base variable)

# Where the pseudo labels live: <pseudo_label_dir>/masks and <pseudo_label_dir>/confidence. The
# default is the output folder of `tools/generate_pseudo.py configs/clip_es_voc.py` (relative
# to the directory you start from), shared by every VOC segmenter config: they all train on the
# labels of the same generator config. PseudoLabelHook reads the folder from the train dataset's
# seg_map_path below; move both at once with
#   --cfg-options train_dataloader.dataset.data_prefix.seg_map_path=/abs/dir/masks
pseudo_label_dir = osp.abspath('work_dirs/clip_es_voc/pseudo')

train_dataloader = dict(
    batch_size=4,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='PseudoLabelSegDataset',
        data_root=data_root,
        ann_file='ImageSets/Segmentation/train_aug.txt',  # = pseudo_dataset.split
        data_prefix=dict(img_path='JPEGImages',
                         seg_map_path=osp.join(pseudo_label_dir, 'masks')),
        pipeline={{_base_.train_pipeline}}))  # noqa: F821  (mmengine base variable)
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='PascalVOCDataset',
        data_root=data_root,
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt',
        pipeline={{_base_.test_pipeline}}))  # noqa: F821
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
