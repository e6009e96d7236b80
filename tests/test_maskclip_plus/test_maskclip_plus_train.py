"""``mim train mmsegmentation`` on a tiny MaskCLIP+ made from the real DeepLabV2 config.

Real VOC photos and masks from ``../shared/data/voc_sample`` (training images containing an unseen
class), tiny random CLIP teacher, ResNetV1c-18 (16 base channels) student, 64-px crops. The phase
switches to self-training after iteration SWITCH (asserted per iteration from the logged
``pseudo.self_training``), validation runs in between, ``--resume`` from before and after the
switch continues in the right phase, and the loss falls.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, split_ids, tiny_config

ITERS, SWITCH, CKPT = 12, 6, 3
N_TRAIN, N_VAL = 8, 2


def _mim() -> Path:
    path = Path(sys.executable).parent / 'mim'
    if not path.is_file():
        pytest.skip(f'mim is not installed next to {sys.executable}')
    return path


def _write_config(tmp: Path, voc: Path, clip: str) -> Path:
    train, val = split_ids(voc, N_TRAIN, N_VAL)
    (tmp / 'train.txt').write_text('\n'.join(train) + '\n')
    (tmp / 'val.txt').write_text('\n'.join(val) + '\n')
    cfg = tiny_config('maskclip_plus_deeplabv2_r101_voc.py', clip)
    tr = cfg.train_dataloader
    tr.update(batch_size=2, num_workers=0, persistent_workers=False)
    # the real list/mask folders are not in the sample: the val masks stand in for SegmentationClassAug
    tr.dataset.update(data_root=str(voc), ann_file=str(tmp / 'train.txt'))
    tr.dataset.data_prefix.seg_map_path = 'SegmentationClass'
    for t in tr.dataset.pipeline:
        if t.type == 'RandomResize':
            t.scale = (160, 80)
        if t.type == 'RandomCrop':
            t.crop_size = (64, 64)
    for key in ('val_dataloader', 'test_dataloader'):
        loader = cfg[key]
        loader.update(num_workers=0, persistent_workers=False)
        loader.dataset.update(data_root=str(voc), ann_file=str(tmp / 'val.txt'))
        for t in loader.dataset.pipeline:
            if t.type == 'Resize':
                t.scale = (128, 64)
    cfg.train_cfg.update(max_iters=ITERS, val_interval=4)
    # mean over labelled pixels: comparable between crops with few / many labelled pixels
    cfg.model.decode_head.loss_decode.avg_non_ignore = True
    # 12 iterations at lr 0.01 stay within the batch-to-batch noise of the loss for some student
    # inits (e.g. upstream stack once the teacher stopped consuming random numbers before the
    # student's init); 0.05 makes the decrease visible on both stacks
    cfg.optim_wrapper.optimizer.lr = 0.05
    cfg.param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=ITERS, by_epoch=False)]
    cfg.custom_hooks = [dict(type='MaskCLIPPlusPhaseHook', switch_ratio=SWITCH / ITERS)]
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = CKPT
    cfg.default_hooks.pop('visualization', None)
    cfg.env_cfg.cudnn_benchmark = False
    cfg.randomness = dict(seed=0)
    out = tmp / 'maskclip_plus_tiny.py'
    cfg.dump(str(out))
    return out


def _run(*args, timeout: int = 240):
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    env['PYTHONPATH'] = os.pathsep.join([str(REPO)] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    proc = subprocess.run([str(_mim()), *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    return proc, proc.stdout + proc.stderr


def _per_iter(log: str, key: str) -> dict:
    out = {}
    for m in re.finditer(rf'Iter\(train\) \[\s*(\d+)/\d+\].*?\s{re.escape(key)}: ([0-9.]+)', log):
        out[int(m.group(1))] = float(m.group(2))
    return out


def test_mim_train_switches_phase_resumes_and_learns(tmp_path, voc, tiny_clip_path):
    cfg = _write_config(tmp_path, voc, tiny_clip_path)
    work = tmp_path / 'work'
    proc, log = _run('train', 'mmsegmentation', cfg, '--gpus', '0', '--work-dir', work)
    assert proc.returncode == 0, log[-4000:]
    phase = _per_iter(log, 'pseudo.self_training')
    assert phase == {i: float(i > SWITCH) for i in range(1, ITERS + 1)}, log[-3000:]
    assert f"MaskCLIPPlusPhaseHook: phase 'teacher' from iteration 1" in log
    assert f"MaskCLIPPlusPhaseHook: phase 'self' from iteration {SWITCH + 1}" in log
    assert re.search(r'Iter\(val\) \[\d+/\d+\]\s+aAcc', log), log[-3000:]  # validation in between
    labelled = _per_iter(log, 'pseudo.labelled')
    assert all(v > 0 for v in labelled.values()), labelled  # unseen pixels got pseudo labels
    losses = _per_iter(log, 'loss')
    assert sorted(losses) == list(range(1, ITERS + 1))
    assert sum(losses[i] for i in range(ITERS - 2, ITERS + 1)) < sum(losses[i] for i in range(1, 4)), losses

    # --resume after the switch (iteration 9 done): still self-training
    (work / f'iter_{ITERS}.pth').unlink()
    (work / 'last_checkpoint').write_text(str(work / f'iter_{3 * CKPT}.pth'))
    proc, log = _run('train', 'mmsegmentation', cfg, '--gpus', '0', '--work-dir', work, '--resume')
    assert proc.returncode == 0, log[-4000:]
    assert _per_iter(log, 'pseudo.self_training') == {i: 1.0 for i in range(3 * CKPT + 1, ITERS + 1)}, log[-3000:]
    assert "phase 'teacher'" not in log

    # --resume before the switch (iteration 3 done): teacher until SWITCH, then self-training
    (work / 'last_checkpoint').write_text(str(work / f'iter_{CKPT}.pth'))
    proc, log = _run('train', 'mmsegmentation', cfg, '--gpus', '0', '--work-dir', work, '--resume')
    assert proc.returncode == 0, log[-4000:]
    assert _per_iter(log, 'pseudo.self_training') == {i: float(i > SWITCH) for i in range(CKPT + 1, ITERS + 1)}

    # the checkpoint holds the student only (no teacher / CLIP tensors), text classifier included
    import torch
    state = torch.load(work / f'iter_{ITERS}.pth', map_location='cpu', weights_only=False)['state_dict']
    assert 'decode_head.conv_seg.text_embeddings' in state
    assert all(k.split('.')[0] in ('backbone', 'decode_head') for k in state), sorted(state)[:5]
