# PASCAL VOC 2012 train_aug with image-level labels (derived from SegmentationClassAug; give an
# IRN cls_labels.npy / JSON with `labels=`): the training loader of the classic configs, 16
# images a batch; each config adds its train pipeline (train_dataloader.dataset.pipeline).
# The dataset root, defined once and referenced below: WSSS_VOC_ROOT=/path/to/it in the environment
# moves every dataset path of this config (mmengine substitutes it when reading the file).
data_root = '{{$WSSS_VOC_ROOT:data/VOCdevkit/VOC2012}}'
train_dataloader = dict(
    batch_size=16, num_workers=4, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='ImageLevelLabelDataset',
                 source=dict(type='VOCImageLabels', data_root=data_root,
                             split='ImageSets/Segmentation/train_aug.txt', img_dir='JPEGImages',
                             labels=None, gt_dir='SegmentationClassAug', class_table='voc20')))
