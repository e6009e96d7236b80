"""Tiny end-to-end run on ../shared/data/voc_sample: classifier -> CAMs -> pseudo masks -> CGL."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config

from tests.test_classic.tiny import (CROP, MEAN, STD, classifier_runner_cfg, tiny_backbone,
                                     tiny_classifier, write_split)

REPO = Path(__file__).resolve().parents[2]


def _seg_runner_cfg(voc_root: Path, split: Path, masks: Path, work_dir: Path, max_iters: int):
    dataset = dict(
        type='PseudoLabelSegDataset', data_root=str(voc_root), ann_file=str(split),
        data_prefix=dict(img_path='JPEGImages', seg_map_path=str(masks)), check_files=True,
        pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadPseudoLabel'),
                  dict(type='Resize', scale=CROP, keep_ratio=False),
                  dict(type='RandomFlip', prob=0.5), dict(type='PackSegInputsWithConfidence')])
    backbone = tiny_backbone()
    model = dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='PseudoLabelDataPreProcessor', mean=MEAN, std=STD,
                               bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=CROP),
        backbone=backbone,
        decode_head=dict(type='FCNHead', in_channels=64, in_index=0, channels=16, num_convs=1,
                         concat_input=False, dropout_ratio=0.0, num_classes=21,
                         norm_cfg=dict(type='BN', requires_grad=True),
                         loss_decode=dict(type='CGLLoss', mu=0.5)),
        train_cfg=dict(), test_cfg=dict(mode='whole'))
    return dict(
        model=model, work_dir=str(work_dir), default_scope='mmseg',
        train_dataloader=dict(batch_size=2, num_workers=0,
                              sampler=dict(type='InfiniteSampler', shuffle=True), dataset=dataset),
        optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=max_iters),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1), checkpoint=None,
                           timer=dict(type='IterTimerHook')),
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo')),
        randomness=dict(seed=0), log_level='WARNING')


def test_classifier_cams_pseudo_masks_cgl(tmp_path, shared_data):
    from mmengine.runner import Runner

    import wsss_mmseg.datasets.classic_transforms  # noqa: F401
    import wsss_mmseg.models.classic  # noqa: F401
    voc = shared_data / 'voc_sample'
    if not voc.is_dir():
        pytest.skip(f'{voc} absent')
    split = tmp_path / 'split.txt'
    ids = write_split(split, voc, 4)

    # 1. classifier: BCE on image-level labels, the loss falls; val reports mAP/F1
    iters = 12
    runner = Runner.from_cfg(Config(classifier_runner_cfg(
        voc, split, tmp_path / 'cls', max_iters=iters,
        model=tiny_classifier(),
        extra_train=[dict(type='HideAndSeek', grid_sizes=(16, 32), prob=0.2)])))
    runner.train()
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    assert len(losses) == iters and np.isfinite(losses).all()
    assert losses[-3:].mean() < 0.8 * losses[:3].mean(), losses
    scalars = runner.message_hub.log_scalars
    assert 'val/multilabel/mAP' in scalars and 'val/multilabel/F1' in scalars, list(scalars)
    ckpt = tmp_path / 'cls' / f'iter_{iters}.pth'
    assert ckpt.is_file()

    # 2. CAMs + pseudo masks with tools/generate_pseudo.py (CAA on the feature affinity)
    pseudo_cfg = dict(
        pseudo_dataset=dict(type='VOCImageLabels', data_root=str(voc), split=str(split),
                            labels='cls_labels.json', gt_dir='SegmentationClass'),
        generator=dict(type='ClassifierCAMGenerator', model=tiny_classifier(),
                       checkpoint=str(ckpt), method='cam', scales=(1.0, 0.5), flip=True,
                       max_side=64, caa=dict(type='CAA', box_threshold=0.4, fidelity=False),
                       class_table='voc20', device='cpu'),
        mask_maker=dict(type='PseudoMaskMaker', bg_power=1, crf=None),
        custom_imports=dict(imports=['wsss_mmseg.models.classic'], allow_failed_imports=False),
        pseudo_job=dict(fsync=False, torch_threads=1, eval_conf_thresholds=[]))
    cfg_path = tmp_path / 'pseudo_cfg.py'
    Config(pseudo_cfg).dump(str(cfg_path))
    out = tmp_path / 'pseudo'
    # the real command line, in a fresh process (no Runner has set mmengine's default scope)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'generate_pseudo.py'),
                           str(cfg_path), '--work-dir', str(out), '--save-cams'],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['counts']['failed'] == 0
    from PIL import Image
    labels = json.loads((voc / 'cls_labels.json').read_text())['labels']
    for image_id in ids:
        mask = np.asarray(Image.open(out / 'masks' / f'{image_id}.png'))
        img = Image.open(voc / 'JPEGImages' / f'{image_id}.jpg')
        assert mask.shape == (img.height, img.width)
        assert set(np.unique(mask)) <= {0, 255} | {c + 1 for c in labels[image_id]}
        cams = np.load(out / 'cams' / f'{image_id}.npy', allow_pickle=True).item()
        # CAM files are at the working size (generator.max_side caps the longer side; the mask above
        # is upsampled to the image size)
        from wsss_mmseg.generators import work_size
        gen_side = summary['config']['generator'].get('max_side')
        assert cams['cam'].shape == (len(labels[image_id]),) + work_size(img.height, img.width, gen_side)
        assert cams['cam_refined'] is not None
        assert 0 <= cams['cam'].min() and cams['cam'].max() <= 1

    # 3. a tiny segmenter trains on the pseudo masks with the CGL loss
    seg = Runner.from_cfg(Config(_seg_runner_cfg(voc, split, out / 'masks', tmp_path / 'seg', 4)))
    seg.train()
    from wsss_mmseg.models.cgl_loss import CGLLoss
    assert isinstance(seg.model.decode_head.loss_decode, CGLLoss)
    seg_losses = seg.message_hub.get_scalar('train/loss').data[0]
    assert len(seg_losses) == 4 and np.isfinite(seg_losses).all()
    assert torch.isfinite(torch.as_tensor(seg_losses)).all()
