"""Pseudo-label engine benchmark: whole job, CAM + CAA, memory, start-up -- in one run.

Every figure comes from the same invocation, on real photos (the 60 VOC images of
``/work/shared/data/voc_sample`` by default), CRF on (``configs/clip_es_voc.py`` settings).
Each measurement runs in its own fresh subprocess (clean peak RSS, the job's fork pool
forked before torch starts threads, as in production). Parts (``--parts``, default all):

* ``job``      whole job through :func:`wsss_mmseg.pseudo.job.run_pseudo_job`: the old
  serial path (``batch_size=1``, ``num_workers=0``, ``postprocess_workers=0``,
  ``torch_threads=2``) vs the batched + overlapped defaults -> images/s, ratio, per-stage
  seconds (decode, model [trunk, last block + grad, CAM, CAA], mask/CRF, encode + write, waits).
* ``cam``      CAM + CAA per image at the model level: the batched generator
  (``CLIPESGenerator.generate`` on batches) vs the official structure (per label a fresh
  last-block forward + backward and the per-label N^3 CAA matrix; ``naive`` adds the whole
  encoder per label); the same thread count for every mode, alternating, best of ``--repeat``.
* ``rss``      peak RSS of the job (defaults) on N vs 10 N images (the list repeated).
* ``bigphoto`` peak RSS of the job on one 6000x4000 photo vs one 500x375 photo (3 labels).
* ``startup``  time to the first image (imports, generator build, first image) with an
  empty and then a reused cache folder (``WSSS_MMSEG_CACHE``); says whether the text
  features were cached.

``job``, ``cam`` and ``startup`` use ViT-B/16-size random weights (``--pretrained``, else
``make_weights.py --variant vitb16`` of the CLIP-ES goldens is run once into
``--cache-dir``; without it open_clip's deterministic random init). ``rss`` and ``bigphoto``
use a tiny CLIP (:mod:`wsss_mmseg.clip.tiny`, width 64, 2 layers) to stay short. Peak RSS
is ``ru_maxrss`` of the job process and, separately, the largest of its children (loader
and post-processing workers).

Usage::

    python benchmarks/bench_generate.py                           # everything (~10-15 min, 2 cores)
    python benchmarks/bench_generate.py --parts job,cam --images 24 --json out.json
    python benchmarks/bench_generate.py --parts rss --rss-images 60 600
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
VOC_SAMPLE = Path('/work/shared/data/voc_sample')
MAKE_WEIGHTS = Path('/work/shared/data/clip_es_golden/make_weights.py')
PARTS = ('job', 'cam', 'rss', 'bigphoto', 'startup')
STAGES = ('wait_loader', 'decode', 'model', 'mask_crf', 'encode_write', 'wait_writer')
MODEL_SPLIT = ('trunk', 'last_block_grad', 'cam', 'caa')
JOB_VARIANTS = {
    'serial': dict(batch_size=1, num_workers=0, postprocess_workers=0, torch_threads=2),
    'overlapped': dict(),  # the engine's defaults: batch 8, min(4, cores-1) workers, 1 torch thread
    'overlapped_t2': dict(torch_threads=2),  # the defaults with the serial path's thread count
    'overlapped_b1_t2': dict(batch_size=1, torch_threads=2),  # ... and no image batching
}


# ------------------------------------------------------------------ data sets (temp folders)
def voc_ids(voc_root: Path) -> List[str]:
    """Image ids of the VOC sample's split."""
    return (voc_root / 'ImageSets/Segmentation/val.txt').read_text().split()


def voc_labels(voc_root: Path) -> Dict[str, List[int]]:
    """``{id: [class indices]}`` of the VOC sample."""
    return json.loads((voc_root / 'cls_labels.json').read_text())['labels']


def make_dataset(root: Path, images: Sequence[Path], labels: Sequence[Sequence[int]]) -> Dict[str, Any]:
    """A VOC-layout folder of symlinks to ``images`` (unique ids) and its ``pseudo_dataset`` section.

    Args:
        root: Empty folder to fill.
        images: Image files (may repeat: each entry gets its own id).
        labels: Class indices per entry.

    Returns:
        The ``VOCImageLabels`` config section.
    """
    img_dir = root / 'JPEGImages'
    img_dir.mkdir(parents=True, exist_ok=True)
    ids, table = [], {}
    for n, (path, labs) in enumerate(zip(images, labels)):
        image_id = f'{n:05d}_{Path(path).stem}'
        os.symlink(os.path.abspath(path), img_dir / f'{image_id}.jpg')
        ids.append(image_id)
        table[image_id] = [int(x) for x in labs]
    (root / 'split.txt').write_text('\n'.join(ids) + '\n')
    (root / 'labels.json').write_text(json.dumps(dict(labels=table)))
    return dict(type='VOCImageLabels', data_root=str(root), split=str(root / 'split.txt'), img_dir='JPEGImages',
                labels=str(root / 'labels.json'), gt_dir=None, class_table='voc20')


def voc_subset(voc_root: Path, n: int, root: Path) -> Dict[str, Any]:
    """The first ``n`` VOC sample images (the list repeated when ``n`` exceeds it)."""
    ids, table = voc_ids(voc_root), voc_labels(voc_root)
    chosen = [ids[i % len(ids)] for i in range(n)]
    return make_dataset(root, [voc_root / 'JPEGImages' / f'{i}.jpg' for i in chosen], [table[i] for i in chosen])


def big_photo(voc_root: Path, root: Path, hw=(4000, 6000)) -> Dict[str, Any]:
    """Two datasets: a VOC photo upscaled (bicubic) to ``hw`` and the original, 3 labels each.

    The photo is the first 500x375 one of the sample (else the first image).
    """
    from PIL import Image
    ids, table = voc_ids(voc_root), voc_labels(voc_root)
    paths = [voc_root / 'JPEGImages' / f'{i}.jpg' for i in ids]
    src = next((p for p in paths if Image.open(p).size == (500, 375)), paths[0])
    root.mkdir(parents=True, exist_ok=True)
    big = root / f'photo_{hw[1]}x{hw[0]}.jpg'
    if not big.exists():
        Image.open(src).convert('RGB').resize((hw[1], hw[0]), Image.BICUBIC).save(big, quality=90)
    labs = (list(table[src.stem]) + [c for c in (14, 8, 11) if c not in table[src.stem]])[:3]
    return dict(big=make_dataset(root / 'big', [big], [labs]), small=make_dataset(root / 'small', [src], [labs]))


# ------------------------------------------------------------------ weights
def vitb16_weights(args) -> Dict[str, Any]:
    """``clip=dict(...)`` of the ViT-B/16-size model (module docstring); the tiny one with ``--generator tiny``."""
    if args.generator == 'tiny':
        return tiny_weights(args)
    if args.pretrained:
        return dict(model_name='ViT-B-16', pretrained=args.pretrained)
    path = Path(args.cache_dir) / 'clip_random_vitb16_seed0.pt'
    if not path.exists() and MAKE_WEIGHTS.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(MAKE_WEIGHTS), '--variant', 'vitb16', '--seed', '0',
                        '--out', str(path)], check=True, capture_output=True)
    if path.exists():
        return dict(model_name='ViT-B-16', pretrained=str(path))
    return dict(model_name='ViT-B-16', pretrained=None)  # open_clip's deterministic random init


def tiny_weights(args) -> Dict[str, Any]:
    """``clip=dict(...)`` of the tiny CLIP (written once into ``--cache-dir``)."""
    path = Path(args.cache_dir) / 'clip_tiny_vit_seed0.pt'
    if not path.exists():
        from wsss_mmseg.clip import save_openai_format, tiny_clip
        save_openai_format(tiny_clip(seed=0, fp16_round=True), str(path))
    return dict(model_name=None, pretrained=str(path))


# ------------------------------------------------------------------ children (one measurement each)
def _peak_rss() -> Dict[str, float]:
    return dict(rss_self_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                rss_children_mib=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def _tree_pids(root: int) -> List[int]:
    """``root`` and its descendants (from ``/proc/*/stat``)."""
    parent: Dict[int, int] = {}
    for d in os.listdir('/proc'):
        if d.isdigit():
            try:
                stat = Path(f'/proc/{d}/stat').read_text()
            except OSError:
                continue
            parent[int(d)] = int(stat.rsplit(')', 1)[1].split()[1])
    tree, grew = {root}, True
    while grew:
        new = {p for p, pp in parent.items() if pp in tree and p not in tree}
        tree |= new
        grew = bool(new)
    return sorted(tree)


class TreeMemorySampler:
    """Peak of the summed PSS (proportional set size: shared pages split between the processes
    sharing them) of this process and its children, sampled every ``interval`` s (Linux).

    Args:
        interval: Seconds between samples.
    """

    def __init__(self, interval: float = 0.5) -> None:
        import threading
        self.interval = interval
        self.peak_pss_mib: Optional[float] = None
        self.peak_processes = 0
        self.samples = 0
        self.child_hwm_mib: Dict[int, float] = {}  # VmHWM (exact peak RSS) of each child, by pid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        total, n = 0, 0
        for pid in _tree_pids(os.getpid()):
            try:
                text = Path(f'/proc/{pid}/smaps_rollup').read_text()
                if pid != os.getpid():
                    status = Path(f'/proc/{pid}/status').read_text()
                    hwm = next(int(ln.split()[1]) for ln in status.splitlines() if ln.startswith('VmHWM:'))
                    self.child_hwm_mib[pid] = max(self.child_hwm_mib.get(pid, 0.0), hwm / 1024)
            except (OSError, StopIteration):
                continue
            total += next(int(ln.split()[1]) for ln in text.splitlines() if ln.startswith('Pss:'))
            n += 1
        if self.peak_pss_mib is None or total / 1024 > self.peak_pss_mib:
            self.peak_pss_mib = total / 1024
        self.peak_processes = max(self.peak_processes, n)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> 'TreeMemorySampler':
        if Path('/proc/self/smaps_rollup').exists():
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def _job_config(spec: Mapping) -> Any:
    from mmengine.config import Config
    cfg = Config.fromfile(str(REPO / 'configs/clip_es_voc.py'))
    cfg.pseudo_dataset = spec['dataset']
    cfg.generator.clip = spec['clip']
    cfg.generator.device = 'cpu'
    job = dict(save_cams=False, evaluate=False, log_interval=10 ** 9)
    gen_opts = {k: v for k, v in spec['options'].items() if k == 'batch_size'}
    job.update({k: v for k, v in spec['options'].items() if k != 'batch_size'})
    cfg.generator.update(gen_opts)
    cfg.pseudo_job = job
    if spec.get('crf', True) is False:
        cfg.mask_maker.crf = None
    return cfg


def child_job(spec: Mapping) -> Dict[str, Any]:
    """Run one job; images/s, stage seconds, the model split and peak RSS."""
    t0 = time.perf_counter()
    import wsss_mmseg  # noqa: F401 - registers the plugin
    from wsss_mmseg.cam.clip_es import CLIPESCAM
    from wsss_mmseg.models.generators import CLIPESGenerator
    from wsss_mmseg.pseudo.job import run_pseudo_job
    t_import = time.perf_counter() - t0
    split = dict.fromkeys(MODEL_SPLIT, 0.0)
    build: Dict[str, float] = {}
    original_batch, original_init = CLIPESCAM.forward_batch, CLIPESGenerator.__init__

    def forward_batch(self, *a, **kw):
        out = original_batch(self, *a, **kw)
        for key, value in getattr(self, 'last_timings', {}).items():
            split[key] = split.get(key, 0.0) + value
        if 'first_image_s' not in build:
            build['first_image_s'] = time.perf_counter() - t0
        return out

    def init(self, *a, **kw):
        t = time.perf_counter()
        original_init(self, *a, **kw)
        build['generator_build_s'] = time.perf_counter() - t

    CLIPESCAM.forward_batch, CLIPESGenerator.__init__ = forward_batch, init
    load_start = os.getloadavg()
    try:
        with TreeMemorySampler(spec.get('pss_interval', 0.5)) as mem:
            summary = run_pseudo_job(_job_config(spec), work_dir=spec['work_dir'], resume=False, logger='silent')
    finally:
        CLIPESCAM.forward_batch, CLIPESGenerator.__init__ = original_batch, original_init
    timings = summary['timings']
    return dict(images=summary['counts']['processed'], failed=summary['counts']['failed'],
                images_per_s=timings['images_per_s'], loop_wall_s=timings['loop_wall_s'],
                job_wall_s=timings['wall_s'], stage_s=timings['stage_s'], model_split_s=split,
                import_s=t_import, torch_threads=timings['per_rank'][0]['torch_threads'],
                job=dict((k, summary['job'][k]) for k in ('num_workers', 'postprocess_workers', 'torch_threads')),
                text_cache_files=len(list(Path(os.environ.get('WSSS_MMSEG_CACHE', '/nonexistent'))
                                          .glob('text_features/*.pt'))),
                peak_tree_pss_mib=mem.peak_pss_mib, peak_processes=mem.peak_processes, pss_samples=mem.samples,
                child_peak_rss_mib=[mem.child_hwm_mib[p] for p in sorted(mem.child_hwm_mib)],
                load_avg_start=load_start, load_avg_end=os.getloadavg(), **build, **_peak_rss())


def child_cam(spec: Mapping) -> Dict[str, Any]:
    """CAM + CAA seconds per image of each mode on the same prepared images (same process)."""
    import numpy as np
    import torch
    import wsss_mmseg  # noqa: F401
    from wsss_mmseg.models.generators import CLIPESGenerator
    from wsss_mmseg.utils.images import load_rgb
    torch.set_num_threads(spec['threads'])
    gen = CLIPESGenerator(clip=spec['clip'], device='cpu', batch_size=spec['batch_size'])
    prep = gen.input_preparer()
    items = [prep(load_rgb(p), labs) for p, labs in zip(spec['images'], spec['labels'])]

    split = dict.fromkeys(MODEL_SPLIT, 0.0)

    def run(mode: str) -> None:
        if mode == 'batched':
            split.update(dict.fromkeys(MODEL_SPLIT, 0.0))
            for s in range(0, len(items), gen.batch_size):
                gen.generate(items[s:s + gen.batch_size])
                for key, value in gen.cam.last_timings.items():
                    split[key] += value
        elif mode == 'per_image':
            for it in items:
                gen.generate([it])
        else:
            for it in items:
                official_structure(gen.cam, it['net_input'], it['label_ids'], it['work_hw'],
                                   naive=mode == 'naive')

    run(spec['modes'][0])  # warm-up (allocations)
    best: Dict[str, float] = {}
    best_split: Dict[str, float] = {}
    load_start = os.getloadavg()
    for _ in range(spec['repeat']):
        for mode in spec['modes']:
            t = time.perf_counter()
            run(mode)
            dt = time.perf_counter() - t
            if dt < best.get(mode, float('inf')):
                best[mode] = dt
                if mode == 'batched':
                    best_split = {k: v / len(items) for k, v in split.items()}
    n = len(items)
    tokens = [int(np.prod(it['net_input'].shape[-2:]) // 256) for it in items]
    return dict(images=n, labels_mean=float(np.mean([len(it['label_ids']) for it in items])),
                tokens_min=min(tokens), tokens_max=max(tokens), threads=torch.get_num_threads(),
                s_per_image={m: best[m] / n for m in spec['modes']}, batched_split_s_per_image=best_split,
                load_avg_start=load_start, load_avg_end=os.getloadavg())


def official_structure(cam, x, keys, out_hw, *, naive: bool = False):
    """One image the official way with the package's pure functions (``cam`` part, module docstring)."""
    import torch
    from wsss_mmseg.cam.clip_es import resize_maps
    from wsss_mmseg.cam.softmax_gradcam import (clip_softmax, gradcam_maps, gradcam_weights, minmax_normalize,
                                                normalize_gradcam, patch_mean_embedding,
                                                target_gradients_per_class)
    from wsss_mmseg.clip.vit import block_forward
    from wsss_mmseg.postprocess.caa import average_attention, caa_propagate, caa_transition, class_box_masks
    vit = cam.vit

    def trunk():
        with torch.no_grad():
            feats = vit.forward_features(x, attn_last=min(cam.attn_layers - 1, vit.num_layers - 1),
                                         stop_before_last=True)
            return feats, vit.blocks[-1].ln_1(feats['pre_last'])

    feats, ln1 = trunk()
    grid, last = tuple(feats['grid']), vit.blocks[-1]
    text = torch.cat([cam.fg_text[list(keys)], cam.bg_text])
    store = {}

    def score_fn(a):
        out, extras = block_forward(last, feats['pre_last'], ln1_out=a, need_attn=True)
        store['attn'] = extras['attn'].detach()
        emb = patch_mean_embedding(out, ln_post=vit.visual.ln_post, proj=vit.visual.proj)
        return clip_softmax(emb, text, logit_scale=cam.logit_scale)

    cams, refined = [], []
    for k in range(len(keys)):
        if naive and k > 0:  # the whole encoder again for every label
            feats, ln1 = trunk()
        _, grads = target_gradients_per_class(ln1, score_fn, [k])  # a fresh forward + backward per label
        cam_k = normalize_gradcam(gradcam_maps(ln1, gradcam_weights(grads), grid))
        attn_avg = average_attention(list(feats['attn']) + [store['attn']], last_n=cam.attn_layers)
        masks, _ = class_box_masks(cam_k, threshold=cam.box_threshold, fidelity=cam.fidelity)
        transition = caa_transition(attn_avg, sinkhorn_rounds=cam.sinkhorn_rounds, power=cam.power)
        refined.append(minmax_normalize(caa_propagate(transition, cam_k, masks)))
        cams.append(cam_k)
    return dict(cam=resize_maps(torch.cat(cams), out_hw), cam_refined=resize_maps(torch.cat(refined), out_hw))


IN_PROCESS = False  # --in-process (smoke test): no subprocesses, so no separate peak RSS


def spawn(kind: str, spec: Mapping, env: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """Run ``child_<kind>(spec)`` in a fresh interpreter; its JSON result plus the spawn-to-exit time."""
    t = time.perf_counter()
    if IN_PROCESS:
        saved = {k: os.environ.get(k) for k in (env or {})}
        os.environ.update(env or {})
        try:
            out = json.loads(json.dumps(globals()[f'child_{kind}'](spec)))
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        out['process_s'] = time.perf_counter() - t
        return out
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), '--child', kind, json.dumps(spec)],
                          capture_output=True, text=True, env=dict(os.environ, **(env or {})))
    if proc.returncode != 0:
        raise RuntimeError(f'benchmark child {kind} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}')
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out['process_s'] = time.perf_counter() - t
    return out


# ------------------------------------------------------------------ parts
def part_job(args, tmp: Path) -> Dict[str, Any]:
    dataset = voc_subset(args.voc_root, args.images, tmp / 'job_data')
    clip = vitb16_weights(args)
    variants = {v: JOB_VARIANTS[v] for v in args.job_variants}
    runs: Dict[str, List[dict]] = {v: [] for v in variants}
    for r in range(args.job_repeat):
        for name, options in variants.items():
            runs[name].append(spawn('job', dict(dataset=dataset, clip=clip, options=options,
                                                work_dir=str(tmp / f'job_{name}_{r}'))))
    best = {v: max(rs, key=lambda d: d['images_per_s']) for v, rs in runs.items()}
    base = best['serial']['images_per_s'] if 'serial' in best else None
    return dict(images=args.images, clip=clip, variants=variants, best=best, runs=runs,
                ratio_vs_serial={v: r['images_per_s'] / base for v, r in best.items() if base and v != 'serial'})


def part_cam(args, tmp: Path) -> Dict[str, Any]:
    ids, table = voc_ids(args.voc_root), voc_labels(args.voc_root)
    chosen = ids[:args.cam_images]
    spec = dict(clip=vitb16_weights(args), threads=args.cam_threads, batch_size=8, repeat=args.repeat,
                modes=args.cam_modes, images=[str(args.voc_root / 'JPEGImages' / f'{i}.jpg') for i in chosen],
                labels=[table[i] for i in chosen])
    out = spawn('cam', spec)
    spi = out['s_per_image']
    out['ratio_batched_vs'] = {m: spi[m] / spi['batched'] for m in spi if m != 'batched' and 'batched' in spi}
    return out


def part_rss(args, tmp: Path) -> Dict[str, Any]:
    clip = tiny_weights(args)
    res = {}
    for n in args.rss_images:
        res[n] = spawn('job', dict(dataset=voc_subset(args.voc_root, n, tmp / f'rss_data_{n}'), clip=clip,
                                   options={}, crf=args.rss_crf, pss_interval=0.05, work_dir=str(tmp / f'rss_{n}')))
    lo, hi = min(args.rss_images), max(args.rss_images)
    return dict(clip='tiny (wsss_mmseg.clip.tiny, width 64, 2 layers)', crf=args.rss_crf,
                runs={str(n): r for n, r in res.items()}, ratios=_memory_ratios(res[hi], res[lo]))


def _memory_ratios(a: Mapping, b: Mapping) -> Dict[str, Optional[float]]:
    """``a / b`` of the peak tree PSS, the main process's and the largest child's peak RSS."""
    return {k: (a[k] / b[k] if a.get(k) and b.get(k) else None)
            for k in ('peak_tree_pss_mib', 'rss_self_mib', 'rss_children_mib')}


def part_bigphoto(args, tmp: Path) -> Dict[str, Any]:
    clip = tiny_weights(args)
    data = big_photo(args.voc_root, tmp / 'bigphoto', hw=tuple(args.big_size))
    res = {name: spawn('job', dict(dataset=ds, clip=clip, options={}, pss_interval=0.05,
                                   work_dir=str(tmp / f'bigphoto_{name}')))
           for name, ds in data.items()}
    return dict(clip='tiny (wsss_mmseg.clip.tiny, width 64, 2 layers)', crf=True, runs=res,
                ratios=_memory_ratios(res['big'], res['small']))


def part_startup(args, tmp: Path) -> Dict[str, Any]:
    clip = vitb16_weights(args)
    dataset = voc_subset(args.voc_root, 1, tmp / 'startup_data')
    env = dict(WSSS_MMSEG_CACHE=str(tmp / 'startup_cache'))
    runs = [spawn('job', dict(dataset=dataset, clip=clip, options={}, work_dir=str(tmp / f'startup_{i}')), env)
            for i in range(2)]
    return dict(clip=clip, runs=dict(empty_cache=runs[0], reused_cache=runs[1]),
                text_features_cached=runs[1]['text_cache_files'] > 0)


# ------------------------------------------------------------------ report
def machine() -> Dict[str, Any]:
    """What the figures were measured on."""
    import torch
    cpu = next((ln.split(':', 1)[1].strip() for ln in Path('/proc/cpuinfo').read_text().splitlines()
                if ln.startswith('model name')), platform.processor()) if Path('/proc/cpuinfo').exists() else '?'
    return dict(cpu=cpu, cores=os.cpu_count(), python=platform.python_version(), torch=torch.__version__,
                cuda=torch.cuda.is_available(), load_avg=os.getloadavg(),
                date=time.strftime('%Y-%m-%d %H:%M %Z'))


def _mib(x: Optional[float]) -> str:
    return 'n/a' if x is None else f'{x:.0f} MiB'


def _clip_name(clip: Mapping) -> str:
    return 'tiny CLIP' if clip.get('model_name') is None else f"{clip['model_name']} ({clip.get('pretrained')})"


def _stages_line(r: Mapping) -> str:
    st, ms = r['stage_s'], r['model_split_s']
    return ('  '.join(f'{k} {st[k]:.2f}' for k in STAGES) + '  | model = '
            + ' + '.join(f'{k} {ms[k]:.2f}' for k in MODEL_SPLIT))


def print_report(res: Mapping) -> None:
    m = res['machine']
    print(f"\n== {m['date']}: {m['cores']} cores ({m['cpu']}), torch {m['torch']}, load {m['load_avg']}")
    if 'job' in res:
        j = res['job']
        print(f"\n[job] {j['images']} VOC images, {_clip_name(j['clip'])}, CRF on (best of runs)")
        for v, r in j['best'].items():
            print(f"  {v:10s} {r['images_per_s']:.3f} img/s  loop {r['loop_wall_s']:.1f} s  threads "
                  f"{r['torch_threads']}  load {r['load_avg_start'][0]:.1f}->{r['load_avg_end'][0]:.1f}  "
                  f"peak PSS {_mib(r['peak_tree_pss_mib'])} ({r['peak_processes']} processes)")
            print('    seconds: ' + _stages_line(r))
        for v, ratio in j['ratio_vs_serial'].items():
            print(f"  ratio {v}/serial: {ratio:.2f}x" + (' (target >= 1.5x)' if v == 'overlapped' else ''))
    if 'cam' in res:
        c = res['cam']
        print(f"\n[cam] CAM + CAA, {c['images']} VOC images ({c['tokens_min']}-{c['tokens_max']} patches, "
              f"{c['labels_mean']:.2f} labels avg), {c['threads']} threads")
        for mode, s in c['s_per_image'].items():
            print(f'  {mode:10s} {s:.3f} s/image  {1 / s:.3f} img/s')
        print('  batched split s/image: ' + ', '.join(f'{k} {v:.3f}' for k, v in c['batched_split_s_per_image'].items()))
        for mode, ratio in c['ratio_batched_vs'].items():
            print(f'  speed-up batched vs {mode}: {ratio:.2f}x' + (' (target >= 1.5x)' if mode == 'official' else ''))
    for part, label in (('rss', 'images'), ('bigphoto', 'photo')):
        if part in res:
            p = res[part]
            print(f"\n[{part}] peak memory, {p['clip']}, CRF {'on' if p['crf'] else 'off'}")
            for n, r in p['runs'].items():
                print(f"  {label} {n:6s} tree PSS {_mib(r['peak_tree_pss_mib'])}, main RSS {r['rss_self_mib']:.0f} MiB, "
                      f"largest child RSS {r['rss_children_mib']:.0f} MiB, {r['images']} done, {r['loop_wall_s']:.1f} s")
                print('    children peak RSS (start order): '
                      + ', '.join(f'{x:.0f}' for x in r.get('child_peak_rss_mib', [])) + ' MiB')
            print('  ratios: ' + ', '.join(f'{k} {v:.3f}' if v else f'{k} n/a' for k, v in p['ratios'].items()))
    if 'startup' in res:
        s = res['startup']
        print(f"\n[startup] 1 image, {_clip_name(s['clip'])}, CRF on")
        for n, r in s['runs'].items():
            print(f"  {n:13s} first image written after {r['process_s']:.1f} s (imports {r['import_s']:.1f}, "
                  f"generator build {r.get('generator_build_s', 0):.1f}, first CAM at {r.get('first_image_s', 0):.1f})")
        print(f"  text features cached on disk: {'yes' if s['text_features_cached'] else 'NO'}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--parts', default=','.join(PARTS), help=f'comma-separated subset of {",".join(PARTS)}')
    p.add_argument('--images', type=int, default=60, help='images of the job part (VOC sample, repeated past 60)')
    p.add_argument('--job-variants', default=','.join(JOB_VARIANTS),
                   help=f'job part variants, of {",".join(JOB_VARIANTS)}')
    p.add_argument('--job-repeat', type=int, default=1, help='alternating runs of each job variant (best kept)')
    p.add_argument('--generator', choices=('vitb16', 'tiny'), default='vitb16',
                   help='model of the job, cam and startup parts (rss and bigphoto always use the tiny one)')
    p.add_argument('--cam-images', type=int, default=6, help='images of the cam part')
    p.add_argument('--cam-modes', default='batched,per_image,official',
                   help='cam part modes: batched, per_image, official, naive')
    p.add_argument('--cam-threads', type=int, default=2, help='torch threads of every cam mode')
    p.add_argument('--repeat', type=int, default=2, help='alternating runs of the cam modes (best kept)')
    p.add_argument('--rss-images', type=int, nargs=2, default=(60, 600), metavar=('N', 'M'))
    p.add_argument('--rss-crf', action='store_true', help='rss part with the CRF (600 images: ~7 min more)')
    p.add_argument('--big-size', type=int, nargs=2, default=(4000, 6000), metavar=('H', 'W'),
                   help='size of the large photo of the bigphoto part')
    p.add_argument('--voc-root', type=Path, default=VOC_SAMPLE)
    p.add_argument('--pretrained', default=None, help='ViT-B/16 weights file (default: random, see above)')
    p.add_argument('--cache-dir', default=os.path.join(tempfile.gettempdir(), 'wsss_bench_weights'),
                   help='where the random weights files are written once')
    p.add_argument('--json', type=Path, default=None, help='also write all results to this JSON file')
    p.add_argument('--in-process', action='store_true',
                   help='no subprocesses (smoke test): RSS figures are then not per measurement')
    p.add_argument('--child', nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        kind, spec = args.child
        print(json.dumps(globals()[f'child_{kind}'](json.loads(spec))))
        return 0
    parts = [x.strip() for x in args.parts.split(',') if x.strip()]
    bad = [x for x in parts if x not in PARTS]
    if bad:
        p.error(f'--parts: unknown part(s) {bad}; choose from {",".join(PARTS)}')
    global IN_PROCESS
    IN_PROCESS = args.in_process
    args.job_variants = [x.strip() for x in args.job_variants.split(',') if x.strip()]
    if not set(args.job_variants) <= set(JOB_VARIANTS):
        p.error(f'--job-variants: choose from {",".join(JOB_VARIANTS)}, got {args.job_variants}')
    args.cam_modes = [x.strip() for x in args.cam_modes.split(',') if x.strip()]
    if not (args.voc_root / 'cls_labels.json').is_file():
        p.error(f'--voc-root {args.voc_root}: no cls_labels.json (the VOC sample folder is needed)')
    res: Dict[str, Any] = dict(machine=machine(), argv=sys.argv[1:] if argv is None else list(argv))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix='bench_generate_') as tmp:
        for part in parts:
            t = time.perf_counter()
            res[part] = globals()[f'part_{part}'](args, Path(tmp))
            res[part]['part_s'] = time.perf_counter() - t
            print(f'[{part}] done in {res[part]["part_s"]:.0f} s', file=sys.stderr, flush=True)
    res['total_s'] = time.perf_counter() - t0
    res['machine']['load_avg_end'] = os.getloadavg()
    print_report(res)
    print(f"\ntotal {res['total_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
