"""ACoL end to end on ../shared/data/voc_sample (classic_wsss.md, ACoL row): the classifier with
ACoLHead trains, tools/generate_pseudo.py makes pseudo labels from its checkpoint, with eval."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config

from tests.test_classic.tiny import classifier_runner_cfg, tiny_classifier, write_split

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_acol_train_and_pseudo_labels(tmp_path, shared_data):
    from mmengine.runner import Runner

    import wsss_mmseg.models  # noqa: F401
    voc = shared_data / 'voc_sample'
    if not voc.is_dir():
        pytest.skip(f'{voc} absent')
    split = tmp_path / 'split.txt'
    ids = write_split(split, voc, 4)
    model = tiny_classifier(head=dict(type='ACoLHead', in_channels=64, num_classes=20,
                                      delta=0.6, channels=16, num_convs=1))
    iters = 10
    runner = Runner.from_cfg(Config(classifier_runner_cfg(
        voc, split, tmp_path / 'cls', max_iters=iters, model=model)))
    runner.train()
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    assert len(losses) == iters and np.isfinite(losses).all()
    assert losses[-3:].mean() < losses[:3].mean(), losses
    assert 'val/multilabel/mAP' in runner.message_hub.log_scalars

    cfg = dict(
        pseudo_dataset=dict(type='VOCImageLabels', data_root=str(voc), split=str(split),
                            labels='cls_labels.json', gt_dir='SegmentationClass'),
        generator=dict(type='ClassifierCAMGenerator', model=model,
                       checkpoint=str(tmp_path / 'cls' / f'iter_{iters}.pth'), method='cam',
                       scales=(1.0, 0.5), flip=True, max_side=64, class_table='voc20',
                       device='cpu'),
        mask_maker=dict(type='PseudoMaskMaker', bg_power=1, crf=None),
        custom_imports=dict(imports=['wsss_mmseg.models'], allow_failed_imports=False),
        pseudo_job=dict(fsync=False, torch_threads=1, eval_conf_thresholds=[]))
    cfg_path = tmp_path / 'pseudo_cfg.py'
    Config(cfg).dump(str(cfg_path))
    out = tmp_path / 'pseudo'
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'generate_pseudo.py'),
                           str(cfg_path), '--work-dir', str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['counts']['failed'] == 0 and summary['counts']['done'] == len(ids)
    report = json.loads((out / 'eval.json').read_text())
    assert report['num_images'] == len(ids)
    assert all(v['miou'] is not None for v in report['variants'].values())
    assert all((out / 'masks' / f'{i}.png').is_file() for i in ids)
