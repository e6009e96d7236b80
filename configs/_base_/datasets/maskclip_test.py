# The test loader and metric of the MaskCLIP zero-shot dataset configs (maskclip_*.py): one image a
# batch, mIoU. Each dataset config adds its test_pipeline and test_dataloader.dataset.
test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False))
test_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
