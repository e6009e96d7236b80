# ResNet-50-V1c multi-label classifier (output stride 16, as IRN's CAM network), BCE on the
# 20 VOC image-level labels. The classifier head gets 10x the backbone learning rate.
crop_size = (512, 512)
model = dict(
    type='MultiLabelClassifier',
    data_preprocessor=dict(type='MultiLabelDataPreProcessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
                           seg_pad_val=255, size=crop_size, mixup=None),
    pretrained='open-mmlab://resnet50_v1c',
    backbone=dict(type='ResNetV1c', depth=50, num_stages=4, out_indices=(3,),
                  dilations=(1, 1, 1, 1), strides=(1, 2, 2, 1),
                  norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False,
                  style='pytorch', contract_dilation=True),
    cls_head=dict(type='MultiLabelClsHead', in_channels=2048, num_classes=20, dropout_ratio=0.0))
