"""Sustained load of the pseudo-label job: resident memory over time and throughput per window.

Runs :func:`wsss_mmseg.pseudo.job.run_pseudo_job` in this process over N small
synthetic images (default 5000, 32x40 px, PNG) and samples, every K generated
images, the resident set size (``/proc/self/statm``, i.e. current RSS, not the
peak) and the wall time. Prints one line per window (images/s in that window,
RSS) and a verdict: RSS after warm-up (the first window), at the end, and the
growth in MiB. A leak in the loop (per-image state kept alive, growing lists,
logger handlers, ...) shows up as steady growth.

The generator is the test fake (``--generator fake``: pixel-dependent maps,
no network; measures the job's own overhead: loading, masks, atomic PNG
writes with fsync) or the real ``CLIPESGenerator`` with a tiny random CLIP
(``--generator tiny``; width 64, 2 layers).

Usage::

    python benchmarks/bench_sustained_load.py                          # 5000 images, fake
    python benchmarks/bench_sustained_load.py --num-images 500 --generator tiny --window 50
    python benchmarks/bench_sustained_load.py --no-fsync --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / 'tests' / 'test_pseudo'))  # the fake generator

_SAMPLES: List[Dict[str, float]] = []


def rss_mib() -> float:
    """Current resident set size of this process in MiB (Linux ``/proc``; else peak RSS)."""
    try:
        with open('/proc/self/statm') as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf('SC_PAGE_SIZE') / 2 ** 20
    except OSError:  # pragma: no cover - non-Linux: fall back to the peak
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _register_sampler() -> None:
    from mmseg.registry import MODELS
    from wsss_mmseg.generators import PseudoLabelGenerator

    @MODELS.register_module(name='BenchSamplingGenerator', force=True)
    class SamplingGenerator(PseudoLabelGenerator):
        """Wraps a generator; records (images, seconds, RSS) every ``every`` images."""

        def __init__(self, inner: Dict[str, Any], every: int) -> None:
            self.inner = MODELS.build(inner)
            self._class_names = self.inner.class_names
            self.max_side = getattr(self.inner, 'max_side', None)
            self.batch_size = getattr(self.inner, 'batch_size', 1)
            self.every = int(every)
            self.calls = 0
            _SAMPLES.append(dict(images=0, t=time.perf_counter(), rss=rss_mib()))

        def input_preparer(self):
            return self.inner.input_preparer()

        def generate(self, items: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
            out = self.inner.generate(items)
            for _ in items:
                self.calls += 1
                if self.calls % self.every == 0:
                    _SAMPLES.append(dict(images=self.calls, t=time.perf_counter(), rss=rss_mib()))
            return out


def make_dataset(root: Path, n: int, size: tuple) -> Dict[str, Any]:
    """N random PNG images and a labels JSON (one or two VOC classes each)."""
    from PIL import Image
    voc = ['aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair',
           'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant',
           'sheep', 'sofa', 'train', 'tvmonitor']
    img_dir = root / 'images'
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = {}
    for i in range(n):
        name = f'{i:06d}.png'
        Image.fromarray(rng.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)).save(
            img_dir / name, compress_level=1)
        labels[name] = [voc[i % 20]] + ([voc[(7 * i + 3) % 20]] if i % 3 == 0 else [])
    (root / 'labels.json').write_text(json.dumps(labels))
    return dict(type='FolderImageLabels', img_dir=str(img_dir),
                labels=str(root / 'labels.json'), class_table='voc20')


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--num-images', type=int, default=5000)
    p.add_argument('--window', type=int, default=500, help='sample every K images')
    p.add_argument('--size', type=int, nargs=2, default=(32, 40), metavar=('H', 'W'))
    p.add_argument('--generator', choices=('fake', 'tiny'), default='fake')
    p.add_argument('--no-fsync', action='store_true', help='pseudo_job.fsync=False')
    p.add_argument('--work-dir', help='keep data and outputs here (default: a temp dir)')
    p.add_argument('--json', help='also write the samples and figures to this file')
    args = p.parse_args(argv)

    os.environ.setdefault('OMP_NUM_THREADS', '1')
    import torch
    torch.set_num_threads(1)
    from mmengine.config import Config
    from mmengine.logging import MMLogger

    import wsss_mmseg.datasets  # noqa: F401
    from wsss_mmseg.pseudo.job import run_pseudo_job
    _register_sampler()

    tmp = None
    if args.work_dir:
        root = Path(args.work_dir)
    else:
        tmp = tempfile.TemporaryDirectory(prefix='wsss_sustained_')
        root = Path(tmp.name)
    t0 = time.perf_counter()
    ds = make_dataset(root / 'data', args.num_images, tuple(args.size))
    print(f'wrote {args.num_images} images {args.size[0]}x{args.size[1]} in '
          f'{time.perf_counter() - t0:.1f} s')
    if args.generator == 'fake':
        import pseudo_fakes as pf
        inner = dict(type=pf.FAKE_GENERATOR, class_table='voc20')
        mask_maker = dict(type=pf.FAKE_MASK_MAKER)
    else:
        import wsss_mmseg.models.generators  # noqa: F401
        from wsss_mmseg.clip import save_openai_format, tiny_clip
        clip_path = root / 'tiny_vit.pt'
        save_openai_format(tiny_clip(seed=0, fp16_round=True), str(clip_path))
        inner = dict(type='CLIPESGenerator', clip=dict(model_name=None,
                                                       pretrained=str(clip_path)),
                     class_table='voc20')
        mask_maker = dict(type='PseudoMaskMaker', bg_power=1, crf=None)
    cfg = Config(dict(pseudo_dataset=ds,
                      generator=dict(type='BenchSamplingGenerator', inner=inner,
                                     every=args.window),
                      mask_maker=mask_maker,
                      pseudo_job=dict(log_interval=10 ** 9, fsync=not args.no_fsync,
                                      evaluate=False)))
    logger = MMLogger.get_instance(f'bench_sustained_{os.getpid()}', log_level='WARNING')
    rss_before = rss_mib()
    t_job = time.perf_counter()
    summary = run_pseudo_job(cfg, work_dir=root / 'out', logger=logger)
    wall = time.perf_counter() - t_job
    counts = summary['counts']

    print(f'\n{"images":>8} {"window img/s":>13} {"RSS MiB":>9}')
    for prev, cur in zip(_SAMPLES, _SAMPLES[1:]):
        rate = (cur['images'] - prev['images']) / max(cur['t'] - prev['t'], 1e-9)
        print(f'{cur["images"]:>8} {rate:>13.1f} {cur["rss"]:>9.1f}')
    warm = _SAMPLES[1]['rss'] if len(_SAMPLES) > 1 else _SAMPLES[0]['rss']
    end = _SAMPLES[-1]['rss']
    rates = [(c['images'] - p['images']) / max(c['t'] - p['t'], 1e-9)
             for p, c in zip(_SAMPLES, _SAMPLES[1:])]
    figures = dict(
        num_images=args.num_images, size=list(args.size), generator=args.generator,
        fsync=not args.no_fsync, done=counts['done'], failed=counts['failed'],
        wall_s=wall, images_per_s=counts['processed'] / wall if wall else None,
        rss_before_job_mib=rss_before, rss_after_warmup_mib=warm, rss_end_mib=end,
        rss_growth_mib=end - warm,
        window_rate_min=min(rates) if rates else None,
        window_rate_max=max(rates) if rates else None,
        torch=torch.__version__, cpu_count=os.cpu_count())
    print(f'\n{counts["done"]}/{counts["total"]} done, {counts["failed"]} failed, '
          f'{wall:.1f} s, {figures["images_per_s"]:.1f} img/s overall; window rates '
          f'{figures["window_rate_min"]:.1f}..{figures["window_rate_max"]:.1f} img/s')
    print(f'RSS: {rss_before:.1f} MiB before the job, {warm:.1f} MiB after the first '
          f'{args.window} images (warm-up), {end:.1f} MiB at the end: growth '
          f'{end - warm:+.1f} MiB over {args.num_images - args.window} images')
    if args.json:
        Path(args.json).write_text(json.dumps(dict(figures=figures, samples=_SAMPLES), indent=1))
    if tmp is not None:
        tmp.cleanup()
    return 0 if counts['failed'] == 0 and counts['done'] == args.num_images else 1


if __name__ == '__main__':
    sys.exit(main())
