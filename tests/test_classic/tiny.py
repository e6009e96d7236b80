"""Tiny configs shared by the classic-WSSS tests (ResNetV1c-18 with 8 base channels, 64 px)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]
CROP = (64, 64)


def tiny_backbone() -> Dict[str, Any]:
    return dict(type='ResNetV1c', depth=18, stem_channels=8, base_channels=8, num_stages=4,
                out_indices=(3,), dilations=(1, 1, 1, 1), strides=(1, 2, 2, 2),
                norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False, style='pytorch',
                contract_dilation=True)


def tiny_classifier(head: Optional[Dict[str, Any]] = None, *, num_classes: int = 20,
                    mixup: Optional[Dict[str, float]] = None,
                    equivariance: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    model = dict(
        type='MultiLabelClassifier',
        data_preprocessor=dict(type='MultiLabelDataPreProcessor', mean=MEAN, std=STD,
                               bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=CROP,
                               mixup=mixup),
        backbone=tiny_backbone(),
        cls_head=head or dict(type='MultiLabelClsHead', in_channels=64, num_classes=num_classes))
    if equivariance is not None:
        model['equivariance'] = equivariance
    return model


def write_split(path: Path, voc_root: Path, n: int) -> List[str]:
    ids = (voc_root / 'ImageSets' / 'Segmentation' / 'val.txt').read_text().split()[:n]
    path.write_text('\n'.join(ids) + '\n')
    return ids


def classifier_runner_cfg(voc_root: Path, split: Path, work_dir: Path, *, max_iters: int,
                          model: Dict[str, Any], extra_train: Optional[list] = None,
                          val: bool = True) -> Dict[str, Any]:
    source = dict(type='VOCImageLabels', data_root=str(voc_root), split=str(split),
                  labels='cls_labels.json', gt_dir=None)
    train_pipeline = [dict(type='LoadImageFromFile'), *(extra_train or []),
                      dict(type='Resize', scale=CROP, keep_ratio=False),
                      dict(type='RandomFlip', prob=0.5), dict(type='PackMultiLabelInputs')]
    test_pipeline = [dict(type='LoadImageFromFile'),
                     dict(type='Resize', scale=CROP, keep_ratio=False),
                     dict(type='PackMultiLabelInputs')]
    cfg = dict(
        model=model, work_dir=str(work_dir), default_scope='mmseg',
        train_dataloader=dict(batch_size=4, num_workers=0,
                              sampler=dict(type='InfiniteSampler', shuffle=True),
                              dataset=dict(type='ImageLevelLabelDataset', source=source,
                                           pipeline=train_pipeline)),
        optim_wrapper=dict(type='OptimWrapper',
                           optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=max_iters,
                       val_interval=max_iters),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1),
                           checkpoint=dict(type='CheckpointHook', by_epoch=False,
                                           interval=max_iters),
                           timer=dict(type='IterTimerHook')),
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo')),
        randomness=dict(seed=0), log_level='WARNING')
    if val:
        cfg.update(
            val_dataloader=dict(batch_size=2, num_workers=0,
                                sampler=dict(type='DefaultSampler', shuffle=False),
                                dataset=dict(type='ImageLevelLabelDataset', source=source,
                                             pipeline=test_pipeline)),
            val_evaluator=dict(type='MultiLabelMetric'), val_cfg=dict(type='ValLoop'))
    return cfg
