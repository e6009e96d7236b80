"""AffinityNet end to end on ../shared/data/voc_sample (classic_wsss.md, SEAM row: AffinityNet RW):
classifier -> CAMs saved by tools/generate_pseudo.py -> AffinityNet trained on the confident
regions (la 4 / ha 24, dense CRF) -> tools/generate_pseudo.py with RandomWalkGenerator -> eval."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config

from tests.test_classic.tiny import (CROP, MEAN, STD, classifier_runner_cfg, tiny_backbone,
                                     tiny_classifier, write_split)

REPO = Path(__file__).resolve().parents[2]


def tiny_affinity_net():
    backbone = dict(tiny_backbone(), out_indices=(1, 2, 3))
    return dict(type='AffinityNet',
                data_preprocessor=dict(type='SegDataPreProcessor', mean=MEAN, std=STD,
                                       bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=CROP),
                backbone=backbone,
                aff_head=dict(type='AffinityHead', in_channels=(16, 32, 64), in_index=(0, 1, 2),
                              channels=16, embed_dims=32),
                radius=3)


def _generate(cfg: dict, cfg_path: Path, out: Path, *extra: str) -> dict:
    Config(cfg).dump(str(cfg_path))
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'generate_pseudo.py'),
                           str(cfg_path), '--work-dir', str(out), *extra],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['counts']['failed'] == 0, summary
    return summary


@pytest.mark.slow
def test_affinitynet_random_walk_end_to_end(tmp_path, shared_data):
    from mmengine.runner import Runner
    from PIL import Image

    import wsss_mmseg.datasets  # noqa: F401
    import wsss_mmseg.models  # noqa: F401
    voc = shared_data / 'voc_sample'
    if not voc.is_dir():
        pytest.skip(f'{voc} absent')
    split = tmp_path / 'split.txt'
    ids = write_split(split, voc, 4)

    # 1. classifier + CAMs saved by the pseudo-label tool
    runner = Runner.from_cfg(Config(classifier_runner_cfg(
        voc, split, tmp_path / 'cls', max_iters=8, model=tiny_classifier(), val=False)))
    runner.train()
    ckpt = tmp_path / 'cls' / 'iter_8.pth'
    source = dict(type='VOCImageLabels', data_root=str(voc), split=str(split),
                  labels='cls_labels.json', gt_dir='SegmentationClass')
    cam_gen = dict(type='ClassifierCAMGenerator', model=tiny_classifier(), checkpoint=str(ckpt),
                   method='cam', scales=(1.0,), flip=True, max_side=64, class_table='voc20',
                   device='cpu')
    imports = dict(imports=['wsss_mmseg.models'], allow_failed_imports=False)
    job = dict(fsync=False, torch_threads=1, eval_conf_thresholds=[])
    cams_out = tmp_path / 'cams_job'
    _generate(dict(pseudo_dataset=source, generator=cam_gen, custom_imports=imports,
                   mask_maker=dict(type='PseudoMaskMaker', bg_power=1, crf=None),
                   pseudo_job=job), tmp_path / 'cam_cfg.py', cams_out, '--save-cams')

    # 2. AffinityNet on the confident regions (mmseg pipeline, dense CRF in the transform)
    iters = 6
    aff_cfg = dict(
        model=tiny_affinity_net(), work_dir=str(tmp_path / 'aff'), default_scope='mmseg',
        train_dataloader=dict(
            batch_size=4, num_workers=0, sampler=dict(type='InfiniteSampler', shuffle=True),
            dataset=dict(type='ImageLevelLabelDataset', source=dict(source, gt_dir=None),
                         pipeline=[dict(type='LoadImageFromFile'),
                                   dict(type='LoadConfidentRegions',
                                        cam_dir=str(cams_out / 'cams'), crf=True,
                                        cache=True),
                                   dict(type='Resize', scale=CROP, keep_ratio=False),
                                   dict(type='PackSegInputs')])),
        optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=iters),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1),
                           checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=iters),
                           timer=dict(type='IterTimerHook')),
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo')),
        randomness=dict(seed=0), log_level='WARNING')
    aff_runner = Runner.from_cfg(Config(aff_cfg))
    aff_runner.train()
    hub = aff_runner.message_hub
    for key in ('loss_aff_bg', 'loss_aff_fg', 'loss_aff_neg'):
        vals = hub.get_scalar(f'train/{key}').data[0]
        assert len(vals) == iters and np.isfinite(vals).all(), (key, vals)
    losses = hub.get_scalar('train/loss').data[0]
    assert losses[-1] < losses[0], losses  # the same 4 images every iteration
    aff_ckpt = tmp_path / 'aff' / f'iter_{iters}.pth'
    assert aff_ckpt.is_file()

    # 3. random-walk pseudo labels through the same generator interface, with evaluation
    rw_out = tmp_path / 'rw_job'
    rw_gen = dict(type='RandomWalkGenerator', base=cam_gen,
                  affinity_net=dict(model=tiny_affinity_net(), checkpoint=str(aff_ckpt)),
                  random_walk=dict(type='RandomWalk', beta=10, steps=16, radius=3),
                  device='cpu')
    summary = _generate(dict(pseudo_dataset=source, generator=rw_gen, custom_imports=imports,
                             mask_maker=dict(type='PseudoMaskMaker', bg_power=1,
                                             crf=dict(type='DenseCRF', fidelity=False)),
                             pseudo_job=job), tmp_path / 'rw_cfg.py', rw_out, '--save-cams')
    assert summary['counts']['done'] == len(ids)
    report = json.loads((rw_out / 'eval.json').read_text())
    assert report['num_images'] == len(ids) and report['variants']
    for variant in report['variants'].values():
        assert variant['miou'] is not None and 0 <= variant['miou'] <= 100
    assert (rw_out / 'eval.md').is_file()
    labels = json.loads((voc / 'cls_labels.json').read_text())['labels']
    changed = []
    for image_id in ids:
        mask = np.asarray(Image.open(rw_out / 'masks' / f'{image_id}.png'))
        assert set(np.unique(mask)) <= {0, 255} | {c + 1 for c in labels[image_id]}
        rec = np.load(rw_out / 'cams' / f'{image_id}.npy', allow_pickle=True).item()
        assert rec['cam_refined'].shape == rec['cam'].shape
        assert 0 <= rec['cam_refined'].min() and rec['cam_refined'].max() <= 1
        changed.append(not np.allclose(rec['cam_refined'], rec['cam'], atol=1e-3))
    assert any(changed)  # (a map that is 0 everywhere after 8 iterations stays 0)
