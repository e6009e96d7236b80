"""Training faults through mmseg's own ``tools/train.py`` (subprocess, tiny FCN, CPU).

* SIGKILL while ``iter_3.pth`` is half written (test-only module
  ``rel_train_faults`` loaded with ``custom_imports``), then ``--resume``: the
  run continues from ``iter_2.pth`` (``last_checkpoint`` still points there) and
  finishes;
* a diverging run (huge learning rate) with ``NaNLossGuardHook`` stops with a
  clear message and no checkpoint of the non-finite iteration.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rel_common as rc  # noqa: E402


def _train_py() -> Path:
    import mmseg
    path = Path(mmseg.__file__).parent / '.mim' / 'tools' / 'train.py'
    if not path.is_file():
        pytest.skip(f'mmseg tools/train.py not found at {path}')
    return path


def _config(tmp: Path, *, lr: float = 0.01, iters: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for sub in ('img', 'ann'):
        (tmp / 'data' / sub).mkdir(parents=True, exist_ok=True)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            tmp / 'data' / 'img' / f'{i}.png')
        Image.fromarray(rng.integers(0, 3, (32, 32), dtype=np.uint8)).save(
            tmp / 'data' / 'ann' / f'{i}.png')
    cfg = tmp / 'tiny_fcn.py'
    cfg.write_text(f'''
custom_imports = dict(imports=['wsss_mmseg', 'wsss_mmseg.hooks.nan_guard', 'rel_train_faults'],
                      allow_failed_imports=False)
default_scope = 'mmseg'
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[128.0] * 3, std=[64.0] * 3,
                           bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=(32, 32)),
    backbone=dict(type='ResNetV1c', depth=18, base_channels=8, stem_channels=8,
                  num_stages=2, out_indices=(1,), strides=(1, 2), dilations=(1, 1),
                  norm_cfg=norm_cfg),
    decode_head=dict(type='FCNHead', in_channels=16, in_index=0, channels=8, num_convs=1,
                     num_classes=3, norm_cfg=norm_cfg, concat_input=False,
                     loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
    train_cfg=dict(), test_cfg=dict(mode='whole'))
train_dataloader = dict(
    batch_size=2, num_workers=0, sampler=dict(type='InfiniteSampler', shuffle=False),
    dataset=dict(type='BaseSegDataset', data_root={str(tmp / 'data')!r},
                 data_prefix=dict(img_path='img', seg_map_path='ann'),
                 img_suffix='.png', seg_map_suffix='.png',
                 metainfo=dict(classes=('a', 'b', 'c'), palette=[[0, 0, 0]] * 3),
                 pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                           dict(type='PackSegInputs')]))
train_cfg = dict(type='IterBasedTrainLoop', max_iters={iters}, val_interval=1000)
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr={lr!r}, momentum=0.9))
default_hooks = dict(timer=dict(type='IterTimerHook'),
                     logger=dict(type='LoggerHook', interval=1),
                     param_scheduler=dict(type='ParamSchedulerHook'),
                     checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1),
                     sampler_seed=dict(type='DistSamplerSeedHook'))
custom_hooks = [dict(type='NaNLossGuardHook')]
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'),
               mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0))
randomness = dict(seed=0)
log_level = 'WARNING'
load_from = None
resume = False
''')
    return cfg


def _train(cfg: Path, work: Path, *extra: str, **env: str):
    return subprocess.run([sys.executable, str(_train_py()), str(cfg), '--work-dir', str(work),
                           *extra], cwd=rc.REPO, env=rc.sub_env(**env), capture_output=True,
                          text=True, timeout=300)


def test_kill_while_saving_then_resume_from_last_complete_checkpoint(tmp_path):
    cfg = _config(tmp_path)
    work = tmp_path / 'work'
    out = _train(cfg, work, WSSS_TEST_KILL_CKPT='iter_3.pth')
    assert out.returncode == -9, out.stderr[-3000:]
    assert (work / 'iter_3.pth').stat().st_size > 0  # partial file, not referenced
    assert (work / 'last_checkpoint').read_text().endswith('iter_2.pth')
    out = _train(cfg, work, '--resume')
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    loaded = [line for line in log.splitlines() if 'Loads checkpoint' in line]
    assert len(loaded) == 1 and loaded[0].endswith('iter_2.pth'), loaded
    assert (work / 'last_checkpoint').read_text().endswith('iter_4.pth')
    ckpt = torch.load(work / 'iter_4.pth', map_location='cpu', weights_only=False)
    assert ckpt['meta']['iter'] == 4
    # iter_3.pth was rewritten completely by the resumed run
    assert torch.load(work / 'iter_3.pth', map_location='cpu', weights_only=False)['meta']['iter'] == 3


def test_diverging_training_stops_at_the_first_non_finite_loss(tmp_path):
    cfg = _config(tmp_path, lr=1e30, iters=6)
    work = tmp_path / 'nan'
    out = _train(cfg, work)
    assert out.returncode != 0
    assert 'FloatingPointError: non-finite loss at iteration' in out.stderr, out.stderr[-3000:]
    bad_iter = int(out.stderr.split('non-finite loss at iteration ')[1].split()[0])
    saved = sorted(int(p.stem.split('_')[1]) for p in work.glob('iter_*.pth'))
    assert saved == list(range(1, bad_iter))
    for it in saved:
        state = torch.load(work / f'iter_{it}.pth', map_location='cpu', weights_only=False)
        assert all(torch.isfinite(v).all() for v in state['state_dict'].values()
                   if v.is_floating_point())
