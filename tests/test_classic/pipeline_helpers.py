"""Helpers of the second-wave classic e2e tests: classifier CAMs on the VOC sample, the real
tools/generate_pseudo.py in a fresh process, tiny segmenter configs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

from mmengine.config import Config

from tests.test_classic.tiny import (CROP, MEAN, STD, classifier_runner_cfg, tiny_backbone,
                                     tiny_classifier, write_split)

REPO = Path(__file__).resolve().parents[2]
JOB = dict(fsync=False, torch_threads=1, eval_conf_thresholds=[])
IMPORTS = dict(imports=['wsss_mmseg.models', 'wsss_mmseg.datasets'], allow_failed_imports=False)


def voc_source(voc: Path, split: Path, gt: bool = True) -> Dict[str, Any]:
    return dict(type='VOCImageLabels', data_root=str(voc), split=str(split),
                labels='cls_labels.json', gt_dir='SegmentationClass' if gt else None)


def generate(cfg: Dict[str, Any], work: Path, name: str, *extra: str) -> Dict[str, Any]:
    """Run tools/generate_pseudo.py on ``cfg``; return its summary (asserts success)."""
    cfg_path = work / f'{name}_cfg.py'
    Config(dict(cfg, custom_imports=IMPORTS, pseudo_job=JOB)).dump(str(cfg_path))
    out = work / name
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'generate_pseudo.py'),
                           str(cfg_path), '--work-dir', str(out), *extra],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['counts']['failed'] == 0, summary
    return summary


def classifier_cams(voc: Path, work: Path, n: int = 4,
                    iters: int = 8) -> Tuple[List[str], Path, Dict[str, Any], Path]:
    """Train a tiny classifier, save its CAMs; returns (ids, split, CAM generator cfg, cams dir)."""
    from mmengine.runner import Runner
    split = work / 'split.txt'
    ids = write_split(split, voc, n)
    runner = Runner.from_cfg(Config(classifier_runner_cfg(
        voc, split, work / 'cls', max_iters=iters, model=tiny_classifier(), val=False)))
    runner.train()
    gen = dict(type='ClassifierCAMGenerator', model=tiny_classifier(),
               checkpoint=str(work / 'cls' / f'iter_{iters}.pth'), method='cam',
               scales=(1.0,), flip=True, max_side=64, class_table='voc20', device='cpu')
    generate(dict(pseudo_dataset=voc_source(voc, split), generator=gen,
                  mask_maker=dict(type='PseudoMaskMaker', bg_power=1, crf=None)),
             work, 'cam_job', '--save-cams')
    return ids, split, gen, work / 'cam_job' / 'cams'


def tiny_segmenter(seg_type: str = 'EncoderDecoder', **extra: Any) -> Dict[str, Any]:
    return dict(
        type=seg_type,
        data_preprocessor=dict(type='SegDataPreProcessor', mean=MEAN, std=STD, bgr_to_rgb=True,
                               pad_val=0, seg_pad_val=255, size=CROP),
        backbone=tiny_backbone(),
        decode_head=dict(type='FCNHead', in_channels=64, in_index=0, channels=16, num_convs=1,
                         concat_input=False, dropout_ratio=0.0, num_classes=21,
                         norm_cfg=dict(type='BN', requires_grad=True),
                         loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
        train_cfg=dict(), test_cfg=dict(mode='whole'), **extra)


def runner_cfg(model: Dict[str, Any], dataset: Dict[str, Any], work_dir: Path,
               iters: int, batch_size: int = 4) -> Dict[str, Any]:
    return dict(
        model=model, work_dir=str(work_dir), default_scope='mmseg',
        train_dataloader=dict(batch_size=batch_size, num_workers=0,
                              sampler=dict(type='InfiniteSampler', shuffle=True), dataset=dataset),
        optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=iters),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1),
                           checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=iters),
                           timer=dict(type='IterTimerHook')),
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo')),
        randomness=dict(seed=0), log_level='WARNING')


def check_eval(out: Path, n: int) -> Dict[str, Any]:
    report = json.loads((out / 'eval.json').read_text())
    assert report['num_images'] == n and report['variants']
    for v in report['variants'].values():
        assert v['miou'] is not None and 0 <= v['miou'] <= 100
    assert (out / 'eval.md').is_file()
    return report


PACK_WITH_LABELS = dict(type='PackSegInputs', meta_keys=(
    'img_path', 'img_id', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor', 'flip',
    'flip_direction', 'label_ids'))
__all__ = ['REPO', 'voc_source', 'generate', 'classifier_cams', 'tiny_segmenter', 'runner_cfg',
           'check_eval', 'PACK_WITH_LABELS', 'CROP']
