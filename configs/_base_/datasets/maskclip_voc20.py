# PASCAL VOC 2012 val, 20 classes WITHOUT background (MaskCLIP's "VOC-20", spec maskclip_pacl.md
# §1.7): the 20 mmseg class names as metainfo make mmseg map background (0) to 255 (ignored) and
# class c+1 to c -- the same labels as reduce_zero_label. Test-time protocol §1.8: short side 512.
# Otherwise maskclip_voc21.py (root: WSSS_VOC_ROOT=/path/to/it in the environment moves it).
_base_ = ['./maskclip_voc21.py']
voc20_classes = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
                 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train',
                 'tvmonitor')
test_dataloader = dict(dataset=dict(metainfo=dict(classes=voc20_classes)))
