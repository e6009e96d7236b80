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
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_support import (REPO, VOC_SAMPLE, TreeMemorySampler, _peak_rss, big_photo, machine,  # noqa: E402
                           tiny_weights, vitb16_weights, voc_ids, voc_labels, voc_subset)
from bench_report import MEMORY_VARIANTS, MODEL_SPLIT, STAGES, print_report  # noqa: E402
PARTS = ('job', 'cam', 'rss', 'bigphoto', 'startup', 'autocast')
JOB_VARIANTS = {
    # the path before the engine: one process, one image at a time, all cores for torch
    'serial': dict(batch_size=1, num_workers=0, postprocess_workers=0, torch_threads=2),
    # the engine's defaults (batch 8, inline loading/post-processing, 1 torch thread on the CPU)
    'defaults': dict(),
    # the documented CPU scaling: one process per core (torchrun --nproc_per_node 2), defaults each
    'sharded': dict(ranks=2),
    # the opt-in overlapped pipeline: 1 loading + 1 post-processing worker, 2 torch threads
    'overlapped_t2': dict(num_workers=1, postprocess_workers=1, torch_threads=2),
    # ... with 1 torch thread (the CRF worker gets a core of its own)
    'overlapped': dict(num_workers=1, postprocess_workers=1),
}


def _job_config(spec: Mapping) -> Any:
    from mmengine.config import Config
    cfg = Config.fromfile(str(REPO / 'configs/clip_es_voc.py'))
    cfg.pseudo_dataset = spec['dataset']
    cfg.generator.clip = spec['clip']
    cfg.generator.device = 'cpu'
    job = dict(save_cams=False, evaluate=False, log_interval=10 ** 9)
    gen_opts = {k: v for k, v in spec['options'].items() if k == 'batch_size'}
    job.update({k: v for k, v in spec['options'].items() if k not in ('batch_size', 'ranks')})
    cfg.generator.update(gen_opts)
    cfg.pseudo_job = job
    if spec.get('crf', True) is False:
        cfg.mask_maker.crf = None
    return cfg


def child_job(spec: Mapping) -> Dict[str, Any]:
    """Run one job; images/s, stage seconds, the model split and peak RSS."""
    t0 = time.perf_counter()
    import wsss_mmseg  # noqa: F401 - registers the plugin
    if spec.get('world', 1) > 1:  # one rank of a torchrun-like launch (gloo on the CPU)
        from mmengine.dist import init_dist
        os.environ.update(RANK=str(spec['rank']), LOCAL_RANK=str(spec['rank']), WORLD_SIZE=str(spec['world']),
                          MASTER_ADDR='127.0.0.1', MASTER_PORT=str(spec['port']))
        init_dist('pytorch', backend='gloo')
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
    if 'timings' not in summary:  # rank > 0: rank 0's summary holds the job's figures
        return dict(rank=spec.get('rank'), model_split_s=split, peak_tree_pss_mib=mem.peak_pss_mib,
                    peak_processes=mem.peak_processes, **_peak_rss())
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
    # the reference computes the same maps (else the comparison would be meaningless)
    ref = official_structure(gen.cam, items[0]['net_input'], items[0]['label_ids'], items[0]['work_hw'])
    ours = gen.generate(items[:1])[0]
    agree = {k: float(np.abs(np.asarray(ref[k]) - np.asarray(ours[k])).max()) for k in ('cam', 'cam_refined')}
    roof = roofline(gen.cam.vit, items[0]['net_input'], best_split.get('trunk'))
    return dict(images=n, labels_mean=float(np.mean([len(it['label_ids']) for it in items])),
                tokens_min=min(tokens), tokens_max=max(tokens), threads=torch.get_num_threads(),
                s_per_image={m: best[m] / n for m in spec['modes']}, batched_split_s_per_image=best_split,
                reference_max_abs_diff=agree, roofline=roof,
                load_avg_start=load_start, load_avg_end=os.getloadavg())


def roofline(vit, x, trunk_s: Optional[float]) -> Dict[str, float]:
    """FLOPs of one image's trunk (blocks 1..L-1) and this machine's fp32 GEMM rate at its shape."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        vit.forward_features(x, stop_before_last=True)
    flops = counter.get_total_flops()
    n_tok = 1 + int(x.shape[-2]) // int(vit.patch_size) * (int(x.shape[-1]) // int(vit.patch_size))
    width = int(vit.blocks[0].mlp.c_fc.in_features)
    a, w = torch.randn(n_tok, width), torch.randn(4 * width, width)
    with torch.no_grad():
        for _ in range(3):
            torch.nn.functional.linear(a, w)
        t = time.perf_counter()
        for _ in range(20):
            torch.nn.functional.linear(a, w)
        gemm = 2 * n_tok * width * 4 * width * 20 / (time.perf_counter() - t)
    out = dict(trunk_gflop=flops / 1e9, gemm_gflops=gemm / 1e9, tokens=n_tok, threads=torch.get_num_threads())
    if trunk_s:
        out.update(trunk_gflops=flops / trunk_s / 1e9, trunk_fraction_of_gemm=flops / trunk_s / gemm)
    return out


def official_structure(cam, x, keys, out_hw, *, naive: bool = False):
    """One image the way the official script computes it, with the package's pure functions.

    As ``generate_cams_voc12.py`` + its ``pytorch_grad_cam``: the trunk once without grad;
    then per label a fresh forward of the last block (ln_1 output hooked), ``zero_grad`` and
    ``loss.backward(retain_graph=True)`` with the model's parameters requiring grad (the
    official model is not frozen, so the backward also fills the last block's, ``ln_post``'s
    and ``proj``'s ``.grad``), then the per-label ``N^3`` CAA transition. ``naive`` also
    reruns the whole encoder for every label after the first.
    """
    import torch
    from wsss_mmseg.cam.clip_es import resize_maps
    from wsss_mmseg.cam.softmax_gradcam import (clip_softmax, gradcam_maps, gradcam_weights, minmax_normalize,
                                                normalize_gradcam, patch_mean_embedding)
    from wsss_mmseg.clip.vit import block_forward
    from wsss_mmseg.postprocess.caa import average_attention, caa_propagate, caa_transition, class_box_masks
    vit = cam.vit

    def trunk():
        with torch.no_grad():
            return vit.forward_features(x, attn_last=min(cam.attn_layers - 1, vit.num_layers - 1),
                                        stop_before_last=True)

    feats = trunk()
    grid, last, visual = tuple(feats['grid']), vit.blocks[-1], vit.visual
    text = torch.cat([cam.fg_text[list(keys)], cam.bg_text])
    params = list(last.parameters()) + list(visual.ln_post.parameters()) + (
        [visual.proj] if isinstance(visual.proj, torch.nn.Parameter) else [])
    was = [p.requires_grad for p in params]
    cams, refined = [], []
    try:
        for p in params:
            p.requires_grad_(True)
        for k in range(len(keys)):
            if naive and k > 0:  # the whole encoder again for every label
                feats = trunk()
            for p in params:  # model.zero_grad()
                p.grad = None
            with torch.enable_grad():
                ln1 = last.ln_1(feats['pre_last'])  # the hooked target layer
                ln1.retain_grad()
                out, extras = block_forward(last, feats['pre_last'], ln1_out=ln1, need_attn=True)
                emb = patch_mean_embedding(out, ln_post=visual.ln_post, proj=visual.proj)
                clip_softmax(emb, text, logit_scale=cam.logit_scale)[0, k].backward(retain_graph=True)
            act = ln1.detach()
            cam_k = normalize_gradcam(gradcam_maps(act, gradcam_weights(ln1.grad), grid))
            attn_avg = average_attention(list(feats['attn']) + [extras['attn'].detach()], last_n=cam.attn_layers)
            masks, _ = class_box_masks(cam_k, threshold=cam.box_threshold, fidelity=cam.fidelity)
            transition = caa_transition(attn_avg, sinkhorn_rounds=cam.sinkhorn_rounds, power=cam.power)
            refined.append(minmax_normalize(caa_propagate(transition, cam_k, masks)))
            cams.append(cam_k)
    finally:
        for p, w in zip(params, was):
            p.requires_grad_(w)
            p.grad = None
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
            spec = dict(dataset=dataset, clip=clip, options=options, work_dir=str(tmp / f'job_{name}_{r}'))
            runs[name].append(spawn_ranks(spec, int(options.get('ranks', 1))))
    best = {v: max(rs, key=lambda d: d['images_per_s']) for v, rs in runs.items()}
    base = best['serial']['images_per_s'] if 'serial' in best else None
    out = dict(images=args.images, clip=clip, variants=variants, best=best, runs=runs,
               ratio_vs_serial={v: r['images_per_s'] / base for v, r in best.items() if base and v != 'serial'})
    if 'serial' in best:
        one = next((best[v] for v in ('defaults', 'sharded') if v in best and best[v]['torch_threads'] == 1), None)
        out['overlap_ceiling'] = overlap_ceiling(best['serial'], os.cpu_count() or 1, one)
    return out


def spawn_ranks(spec: Mapping, ranks: int) -> Dict[str, Any]:
    """One job in ``ranks`` concurrent processes (gloo, as ``torchrun``); rank 0's summary gives images/s
    (all images / the slowest rank's loop) and the summed stage seconds."""
    if ranks == 1:
        return spawn('job', spec)
    if IN_PROCESS:
        raise RuntimeError('--in-process cannot run a multi-rank variant')
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    with concurrent.futures.ThreadPoolExecutor(ranks) as pool:
        outs = list(pool.map(lambda r: spawn('job', dict(spec, rank=r, world=ranks, port=port)), range(ranks)))
    first = dict(outs[0])  # rank 0: the job's summary (all ranks' images, the slowest rank's loop)
    first.update(ranks=outs, model_split_s={k: sum(o['model_split_s'].get(k, 0.0) for o in outs) for k in MODEL_SPLIT},
                 peak_tree_pss_mib=sum(o['peak_tree_pss_mib'] or 0 for o in outs),
                 peak_processes=sum(o['peak_processes'] for o in outs))
    return first


def overlap_ceiling(serial: Mapping, cores: int, one_thread: Optional[Mapping] = None) -> Dict[str, float]:
    """Best speed-up over ``serial`` that any schedule of the same work can reach on ``cores`` cores.

    No overlap or sharding beats the work's core-seconds spread over all cores. The work is
    taken from a run with 1 torch thread per process (``one_thread``: every stage second is a
    core-second); without one, the serial run's model seconds are counted as ``threads`` cores
    busy, which overstates the work when threads do not scale perfectly.
    """
    wall = sum(serial['stage_s'].values())
    if one_thread is not None:
        st = one_thread['stage_s']
        model_core_s = st['model']
        other_core_s = sum(v for k, v in st.items() if k not in ('model', 'wait_loader', 'wait_writer'))
    else:
        st = serial['stage_s']
        model_core_s = st['model'] * min(max(1, int(serial['torch_threads'])), cores)
        other_core_s = sum(v for k, v in st.items() if k != 'model')
    best_wall = (model_core_s + other_core_s) / cores  # every core busy all the time
    return dict(serial_stage_wall_s=wall, model_core_s=model_core_s, other_core_s=other_core_s,
                best_wall_s=best_wall, max_speedup=wall / best_wall,
                work_from='1-thread run' if one_thread is not None else 'serial run x threads')


def part_cam(args, tmp: Path) -> Dict[str, Any]:
    ids, table = voc_ids(args.voc_root), voc_labels(args.voc_root)
    chosen = ids[:args.cam_images]
    spec = dict(clip=vitb16_weights(args), threads=args.cam_threads, batch_size=8, repeat=args.repeat,
                modes=args.cam_modes, images=[str(args.voc_root / 'JPEGImages' / f'{i}.jpg') for i in chosen],
                labels=[table[i] for i in chosen])
    out = spawn('cam', spec)
    spi = out['s_per_image']
    out['ratio_batched_vs'] = {m: spi[m] / spi['batched'] for m in spi if m != 'batched' and 'batched' in spi}
    out['speedup_vs_official'] = {m: spi['official'] / spi[m] for m in spi if m != 'official' and 'official' in spi}
    return out


def part_rss(args, tmp: Path) -> Dict[str, Any]:
    clip = tiny_weights(args)
    out: Dict[str, Any] = dict(clip='tiny (wsss_mmseg.clip.tiny, width 64, 2 layers)', crf=args.rss_crf)
    lo, hi = min(args.rss_images), max(args.rss_images)
    for v in MEMORY_VARIANTS:
        res = {}
        for n in args.rss_images:
            res[n] = spawn('job', dict(dataset=voc_subset(args.voc_root, n, tmp / f'rss_data_{v}_{n}'), clip=clip,
                                       options=JOB_VARIANTS[v], crf=args.rss_crf, pss_interval=0.05,
                                       work_dir=str(tmp / f'rss_{v}_{n}')))
        out[v] = dict(runs={str(n): r for n, r in res.items()}, ratios=_memory_ratios(res[hi], res[lo]))
    return out


def _memory_ratios(a: Mapping, b: Mapping) -> Dict[str, Optional[float]]:
    """``a / b`` of the peak tree PSS, the main process's and the largest child's peak RSS."""
    return {k: (a[k] / b[k] if a.get(k) and b.get(k) else None)
            for k in ('peak_tree_pss_mib', 'rss_self_mib', 'rss_children_mib')}


def part_bigphoto(args, tmp: Path) -> Dict[str, Any]:
    clip = tiny_weights(args)
    data = big_photo(args.voc_root, tmp / 'bigphoto', hw=tuple(args.big_size))
    out: Dict[str, Any] = dict(clip='tiny (wsss_mmseg.clip.tiny, width 64, 2 layers)', crf=True)
    for v in MEMORY_VARIANTS:
        res = {name: spawn('job', dict(dataset=ds, clip=clip, options=JOB_VARIANTS[v], pss_interval=0.05,
                                       work_dir=str(tmp / f'bigphoto_{v}_{name}')))
               for name, ds in data.items()}
        out[v] = dict(runs=res, ratios=_memory_ratios(res['big'], res['small']))
    return out


def child_autocast(spec: Mapping) -> Dict[str, Any]:
    """Pseudo masks (CRF on, the shipped VOC settings) with ``generator.autocast`` vs fp32 on the same images."""
    import numpy as np
    import torch
    from mmengine.config import Config
    from mmseg.registry import MODELS
    import wsss_mmseg  # noqa: F401
    from wsss_mmseg.models.generators import CLIPESGenerator
    from wsss_mmseg.utils.images import load_rgb
    torch.set_num_threads(spec['threads'])
    cfg = Config.fromfile(str(REPO / 'configs/clip_es_voc.py'))
    maker = MODELS.build(cfg.mask_maker)
    gens = {m: CLIPESGenerator(clip=spec['clip'], device=spec['device'], batch_size=8,
                               autocast=None if m == 'fp32' else m) for m in ['fp32'] + spec['modes']}
    prep = gens['fp32'].input_preparer()
    items = [prep(load_rgb(p), labs) for p, labs in zip(spec['images'], spec['labels'])]
    out: Dict[str, Any] = dict(images=len(items), device=spec['device'], threads=torch.get_num_threads())
    results, seconds = {}, {}
    for m, gen in gens.items():
        t = time.perf_counter()
        results[m] = [r for s in range(0, len(items), 8) for r in gen.generate(items[s:s + 8])]
        seconds[m] = time.perf_counter() - t
    masks = {m: [maker(r, it['image'])[0] for r, it in zip(rs, items)] for m, rs in results.items()}
    for m in spec['modes']:
        same = sum(int((a == b).sum()) for a, b in zip(masks[m], masks['fp32']))
        total = sum(a.size for a in masks['fp32'])
        diff = max(float(np.abs(np.asarray(a['cam_refined']) - np.asarray(b['cam_refined'])).max())
                   for a, b in zip(results[m], results['fp32']))
        out[m] = dict(mask_pixel_agreement=same / total, max_abs_diff_cam_refined=diff,
                      generate_s=seconds[m], speed_vs_fp32=seconds['fp32'] / seconds[m])
    out['fp32_generate_s'] = seconds['fp32']
    return out


def part_autocast(args, tmp: Path) -> Dict[str, Any]:
    ids, table = voc_ids(args.voc_root), voc_labels(args.voc_root)
    chosen = ids[:args.autocast_images]
    import torch
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    modes = ['bf16', 'fp16'] if device == 'cuda' else ['bf16']  # CPU autocast: bf16
    return spawn('autocast', dict(clip=vitb16_weights(args), threads=args.cam_threads, device=device, modes=modes,
                                  images=[str(args.voc_root / 'JPEGImages' / f'{i}.jpg') for i in chosen],
                                  labels=[table[i] for i in chosen]))


def part_startup(args, tmp: Path) -> Dict[str, Any]:
    clip = vitb16_weights(args)
    dataset = voc_subset(args.voc_root, 1, tmp / 'startup_data')
    env = dict(WSSS_MMSEG_CACHE=str(tmp / 'startup_cache'))
    runs = [spawn('job', dict(dataset=dataset, clip=clip, options={}, work_dir=str(tmp / f'startup_{i}')), env)
            for i in range(2)]
    return dict(clip=clip, runs=dict(empty_cache=runs[0], reused_cache=runs[1]),
                text_features_cached=runs[1]['text_cache_files'] > 0)


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
    p.add_argument('--autocast-images', type=int, default=12, help='images of the autocast part')
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
