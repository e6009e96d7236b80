"""``mim train mmsegmentation configs/deeplabv3_cgl_voc.py``: the whole weakly supervised pipeline.

Image-level labels -> CLIP pseudo masks (PseudoLabelHook, tiny random CLIP) -> DeepLabV3 with the
CGL loss, on real VOC photos from ``../shared/data/voc_sample``, through OpenMMLab's own CLI in a
subprocess (``mim`` from this interpreter's virtualenv runs mmseg's installed ``tools/train.py``).
The test config is the real ``configs/deeplabv3_cgl_voc.py`` loaded with mmengine and shrunk
(ResNet-18 with 16 base channels, 64-px crops, 20 iterations, 8 training / 4 validation images,
BN instead of SyncBN, which torch refuses in CPU DDP) and dumped to a file.
"""
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[2]
ITERS = 20
N_TRAIN, N_VAL = 8, 4


def _mim() -> Path:
    path = Path(sys.executable).parent / 'mim'
    if not path.is_file():
        pytest.skip(f'mim is not installed next to {sys.executable}')
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def tiny_voc_config(tmp: Path, voc: Path, clip: str, *, workers: int = 0,
                    pseudo_dir: Path = None, labels: str = 'cls_labels.json') -> Path:
    """Shrink the real DeepLabV3 CGL VOC config to CPU-test size and dump it to ``tmp``."""
    ids = (voc / 'ImageSets/Segmentation/val.txt').read_text().split()
    (tmp / 'train.txt').write_text('\n'.join(ids[:N_TRAIN]) + '\n')
    (tmp / 'val.txt').write_text('\n'.join(ids[N_TRAIN:N_TRAIN + N_VAL]) + '\n')
    cfg = Config.fromfile(str(REPO / 'configs' / 'deeplabv3_cgl_voc.py'))
    crop = (64, 64)
    # pseudo-label generator: the real sections, tiny CLIP, sample data (train ids only)
    cfg.generator.clip = dict(model_name=None, pretrained=clip)
    cfg.generator.device = 'cpu'
    cfg.pseudo_job.torch_threads = 1
    cfg.pseudo_dataset.update(data_root=str(voc), split=str(tmp / 'train.txt'), labels=labels,
                              gt_dir='SegmentationClass')
    # segmenter: DeepLabV3 on a ResNet-18 with 16 base channels (no pretrained weights)
    m = cfg.model
    m.pretrained = None
    m.data_preprocessor.size = crop
    m.backbone.update(depth=18, base_channels=16, stem_channels=16)
    for part in (m.backbone, m.decode_head, m.auxiliary_head):
        part.norm_cfg = dict(type='BN', requires_grad=True)
    m.decode_head.update(in_channels=128, channels=32)
    m.auxiliary_head.update(in_channels=64, channels=16)
    # data: the real pipelines with smaller scales
    tr = cfg.train_dataloader
    tr.update(batch_size=2, num_workers=workers, persistent_workers=workers > 0)
    tr.dataset.update(data_root=str(voc), ann_file=str(tmp / 'train.txt'))
    tr.dataset.data_prefix.seg_map_path = str((pseudo_dir or tmp / 'pseudo') / 'masks')
    for t in tr.dataset.pipeline:
        if t.type == 'RandomResize':
            t.scale = (256, 96)
        if t.type == 'RandomCrop':
            t.crop_size = crop
    for key in ('val_dataloader', 'test_dataloader'):
        loader = cfg[key]
        loader.update(num_workers=0, persistent_workers=False)
        loader.dataset.update(data_root=str(voc), ann_file=str(tmp / 'val.txt'))
        for t in loader.dataset.pipeline:
            if t.type == 'Resize':
                t.scale = (160, 96)
    cfg.train_cfg.update(max_iters=ITERS, val_interval=ITERS)
    cfg.param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=ITERS,
                                by_epoch=False)]
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = ITERS // 2
    cfg.randomness = dict(seed=0)
    out = tmp / 'deeplabv3_cgl_voc_tiny.py'
    cfg.dump(str(out))
    return out


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    env['PYTHONPATH'] = os.pathsep.join([str(REPO)] + (
        [env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    return env


def _run(*args, timeout: int = 240) -> tuple:
    t = time.perf_counter()
    proc = subprocess.run([str(_mim()), *map(str, args)], env=_env(), capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)
    return proc, proc.stdout + proc.stderr, time.perf_counter() - t


def _losses(log: str) -> dict:
    """``iteration -> total loss`` from mmengine's training log lines."""
    out = {}
    for m in re.finditer(r'Iter\(train\) \[\s*(\d+)/\d+\].*?\sloss: ([0-9.]+)', log):
        out[int(m.group(1))] = float(m.group(2))
    return out


def _miou(log: str, mode: str) -> float:
    found = re.findall(rf'Iter\({mode}\) \[\d+/\d+\]\s+aAcc: [0-9.]+\s+mIoU: ([0-9.]+)', log)
    assert found, log[-3000:]
    return float(found[-1])


@pytest.fixture
def voc(shared_data):
    root = shared_data / 'voc_sample'
    if not (root / 'cls_labels.json').is_file():
        pytest.skip(f'{root} is incomplete')
    return root


def test_mim_train_generates_reuses_resumes_and_tests(tmp_path, voc, tiny_clip_path):
    cfg = tiny_voc_config(tmp_path, voc, tiny_clip_path, workers=2)
    work = tmp_path / 'work'

    # 1. first run: the hook makes the pseudo labels, then DeepLabV3 trains on them with CGL
    proc, log1, t1 = _run('train', 'mmsegmentation', cfg, '--gpus', '0', '--work-dir', work)
    assert proc.returncode == 0, log1[-4000:]
    assert f'PseudoLabelHook: generated {N_TRAIN} pseudo label(s)' in log1, log1[-3000:]
    assert 'decode.loss_cgl' in log1 and 'aux.loss_cgl' in log1
    losses = _losses(log1)
    assert sorted(losses) == list(range(1, ITERS + 1))
    first, last = [losses[i] for i in range(1, 6)], [losses[i] for i in range(ITERS - 4, ITERS + 1)]
    assert sum(last) < sum(first) - 0.1, losses
    assert (work / f'iter_{ITERS}.pth').is_file() and (work / f'iter_{ITERS // 2}.pth').is_file()
    _miou(log1, 'val')  # validated against the real VOC masks
    pseudo = tmp_path / 'pseudo'
    assert len(list((pseudo / 'masks').glob('*.png'))) == N_TRAIN
    summary = json.loads((pseudo / 'summary.json').read_text())
    assert summary['counts'] == dict(total=N_TRAIN, done=N_TRAIN, processed=N_TRAIN,
                                     skipped_resumed=0, failed=0, evaluation_failed=0)

    # 2. second run into the same work dir: labels reused, training identical
    mask_bytes = {p.name: p.read_bytes() for p in (pseudo / 'masks').iterdir()}
    proc, log2, t2 = _run('train', 'mmsegmentation', cfg, '--gpus', '0', '--work-dir', work)
    assert proc.returncode == 0, log2[-4000:]
    assert f'PseudoLabelHook: reused {N_TRAIN} existing pseudo label(s)' in log2, log2[-3000:]
    assert 'PseudoLabelHook: generated' not in log2
    assert {p.name: p.read_bytes() for p in (pseudo / 'masks').iterdir()} == mask_bytes
    assert _losses(log2) == losses  # generating changed nothing in the training that followed
    val_miou = _miou(log2, 'val')

    # 3. --resume after a run "killed" after iteration 10: continues at iteration 11
    (work / f'iter_{ITERS}.pth').unlink()
    (work / 'last_checkpoint').write_text(str(work / f'iter_{ITERS // 2}.pth'))
    proc, log3, t3 = _run('train', 'mmsegmentation', cfg, '--gpus', '0', '--work-dir', work,
                          '--resume')
    assert proc.returncode == 0, log3[-4000:]
    assert 'PseudoLabelHook: reused' in log3
    resumed = _losses(log3)
    assert sorted(resumed) == list(range(ITERS // 2 + 1, ITERS + 1)), log3[-3000:]
    assert (work / f'iter_{ITERS}.pth').is_file()
    resumed_miou = _miou(log3, 'val')

    # 4. mim test: mIoU of the final checkpoint against the real masks
    proc, log4, t4 = _run('test', 'mmsegmentation', cfg, '--checkpoint', work / f'iter_{ITERS}.pth',
                          '--gpus', '0', '--work-dir', tmp_path / 'test_work')
    assert proc.returncode == 0, log4[-4000:]
    assert 'PseudoLabelHook: ' not in log4  # testing never (re)makes pseudo labels
    assert _miou(log4, 'test') == pytest.approx(resumed_miou)
    assert 0.0 <= val_miou <= 100.0
    print(f'mim train {t1:.1f}s (generate), {t2:.1f}s (reuse), {t3:.1f}s (resume); '
          f'mim test {t4:.1f}s')


def test_mim_train_two_processes_gloo(tmp_path, voc, tiny_clip_path):
    cfg = tiny_voc_config(tmp_path, voc, tiny_clip_path)
    work = tmp_path / 'work'
    proc, log, t = _run('train', 'mmsegmentation', cfg, '--launcher', 'pytorch', '--gpus', '2',
                        '--port', _free_port(), '--work-dir', work,
                        '--cfg-options', f'train_cfg.max_iters={ITERS // 4}',
                        f'train_cfg.val_interval={ITERS // 4}', timeout=300)
    assert proc.returncode == 0, log[-4000:]
    assert log.count('using the gloo backend') == 2, log[-3000:]
    assert 'Distributed training: True' in log
    assert f'PseudoLabelHook: generated {N_TRAIN} pseudo label(s)' in log, log[-3000:]
    summary = json.loads((tmp_path / 'pseudo' / 'summary.json').read_text())
    assert summary['world_size'] == 2
    assert [r['assigned'] for r in summary['timings']['per_rank']] == [N_TRAIN // 2] * 2
    assert summary['counts']['done'] == N_TRAIN and summary['counts']['failed'] == 0
    assert (work / f'iter_{ITERS // 4}.pth').is_file()
    print(f'2-process mim train {t:.1f}s')


def test_mim_train_stops_on_failed_images(tmp_path, voc, tiny_clip_path):
    labels = json.loads((voc / 'cls_labels.json').read_text())
    ids = (voc / 'ImageSets/Segmentation/val.txt').read_text().split()[:N_TRAIN]
    broken = dict(labels['labels'])
    broken[ids[2]] = [25]  # no such VOC class
    (tmp_path / 'labels.json').write_text(json.dumps(dict(labels=broken)))
    cfg = tiny_voc_config(tmp_path, voc, tiny_clip_path, labels=str(tmp_path / 'labels.json'))
    proc, log, _ = _run('train', 'mmsegmentation', cfg, '--gpus', '0',
                        '--work-dir', tmp_path / 'work')
    assert proc.returncode != 0
    assert '1 image(s) failed' in log and ids[2] in log and 'out of range' in log, log[-3000:]
    assert 'Training stopped' in log
    assert 'Iter(train)' not in log
    assert not list((tmp_path / 'work').glob('*.pth'))
