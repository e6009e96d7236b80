"""Speed and peak memory of the CLIP-ES CAM generator vs a straightforward per-class loop.

Both sides compute the same math (Softmax-GradCAM + CAA, fidelity mode) with the same
weights on the same images, in the same run:

* ``ours``     — :class:`wsss_mmseg.cam.clip_es.CLIPESCAM`: blocks 1..L-1 once, ONE forward
  of the last block shared by all labels, batched/per-label backward through the last block
  only, CAA by repeated (K, N) x (N, N) products.
* ``official`` — the structure of the official code: blocks 1..L-1 once, then for EACH label
  a fresh forward of the last block with autograd and one backward, and per label the
  class-independent CAA matrix (Sinkhorn, symmetrisation, N^3 matrix power) recomputed.
* ``naive``    — the straightforward batch-1 Grad-CAM loop: for EACH label the whole image
  encoder forward, one backward, and the CAA of ``official``.

Each mode runs in its own subprocess so that peak resident memory (CPU) / peak allocated
memory (CUDA) is measured separately. Prints a table and the speed ratio.

Usage::

    python benchmarks/bench_generate.py                      # ViT-B/16 geometry, random weights
    python benchmarks/bench_generate.py --images 8 --labels 3 --size 375 500
    python benchmarks/bench_generate.py --pretrained /path/ViT-B-16.pt --device cuda
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Dict, List

import numpy as np

MODES = ('naive', 'official', 'ours')


def _images(n: int, h: int, w: int, seed: int) -> List[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        # a few smooth blobs so that CAMs and boxes are not degenerate
        yy, xx = np.mgrid[0:h, 0:w]
        for _ in range(3):
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(20, max(21, h // 3))
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 255, 3)
        out.append(img)
    return out


def _baseline(cam, x, keys, orig_hw, *, naive: bool = False):
    """``official`` / ``naive`` structure with the same pure functions (module docstring)."""
    import torch
    from wsss_mmseg.cam.clip_es import resize_maps
    from wsss_mmseg.cam.softmax_gradcam import (clip_softmax, gradcam_maps, gradcam_weights,
                                                normalize_gradcam, patch_mean_embedding,
                                                target_gradients_per_class)
    from wsss_mmseg.clip.vit import block_forward
    from wsss_mmseg.postprocess.caa import (average_attention, caa_propagate, caa_transition,
                                            class_box_masks)
    from wsss_mmseg.cam.softmax_gradcam import minmax_normalize
    vit = cam.vit
    with torch.no_grad():
        feats = vit.forward_features(x, attn_last=cam.attn_layers - 1, stop_before_last=True)
        pre_last, grid = feats['pre_last'], tuple(feats['grid'])
        last = vit.blocks[-1]
        ln1 = last.ln_1(pre_last)
    text = torch.cat([cam.fg_text[keys], cam.bg_text]).to(x.device)
    store = {}

    def score_fn(a):
        out, extras = block_forward(last, pre_last, ln1_out=a, need_attn=True)
        store['attn'] = extras['attn'].detach()
        emb = patch_mean_embedding(out, ln_post=vit.visual.ln_post, proj=vit.visual.proj)
        return clip_softmax(emb, text, logit_scale=cam.logit_scale)

    cams, refined = [], []
    for k in range(len(keys)):
        if naive and k > 0:  # the whole encoder again for every label
            with torch.no_grad():
                feats = vit.forward_features(x, attn_last=cam.attn_layers - 1, stop_before_last=True)
                pre_last = feats['pre_last']
                ln1 = last.ln_1(pre_last)
        _, grads = target_gradients_per_class(ln1, score_fn, [k])  # fresh forward + backward
        w = gradcam_weights(grads)
        cam_k = normalize_gradcam(gradcam_maps(ln1, w, grid))
        attn_avg = average_attention(list(feats['attn']) + [store['attn']], last_n=cam.attn_layers)
        masks, _ = class_box_masks(cam_k, threshold=cam.box_threshold, fidelity=cam.fidelity)
        transition = caa_transition(attn_avg, sinkhorn_rounds=cam.sinkhorn_rounds, power=cam.power)
        refined.append(minmax_normalize(caa_propagate(transition, cam_k, masks)))
        cams.append(cam_k)
    return dict(cam=resize_maps(torch.cat(cams), orig_hw),
                cam_refined=resize_maps(torch.cat(refined), orig_hw))


def run_mode(args) -> Dict[str, float]:
    import torch
    from wsss_mmseg.cam.clip_es import CLIPESCAM
    from wsss_mmseg.clip import build_clip
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build_clip(args.model, args.pretrained, device=device)
    g = torch.Generator().manual_seed(1)
    e = model.visual.output_dim
    fg = torch.nn.functional.normalize(torch.randn(20, e, generator=g), dim=-1)
    bg = torch.nn.functional.normalize(torch.randn(25, e, generator=g), dim=-1)
    cam = CLIPESCAM(model.visual, fg.to(device), bg.to(device), logit_scale=100.0, fidelity=True)
    images = _images(args.images, args.size[0], args.size[1], seed=2)
    rng = np.random.default_rng(3)
    labels = [sorted(rng.choice(20, args.labels, replace=False).tolist()) for _ in images]
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()

    def one(img, keys):
        x = cam.preprocess(img).to(device)
        if args.mode == 'ours':
            return cam(x, keys, img.shape[:2])
        return _baseline(cam, x, keys, img.shape[:2], naive=args.mode == 'naive')

    one(images[0], labels[0])  # warm-up (allocations, caches)
    if device.type == 'cuda':
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for img, keys in zip(images, labels):
        one(img, keys)
    if device.type == 'cuda':
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == 'cuda'
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return dict(mode=args.mode, images=len(images), seconds=dt, images_per_s=len(images) / dt,
                peak_mib=peak, device=str(device), threads=torch.get_num_threads())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default='ViT-B-16')
    p.add_argument('--pretrained', default=None, help='weights path (default: random init)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--images', type=int, default=6)
    p.add_argument('--labels', type=int, default=3, help='labels per image (K)')
    p.add_argument('--size', type=int, nargs=2, default=(375, 500), metavar=('H', 'W'))
    p.add_argument('--repeat', type=int, default=2, help='alternating runs of each mode')
    p.add_argument('--mode', choices=MODES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.mode:
        print(json.dumps(run_mode(args)))
        return 0
    results: Dict[str, List[dict]] = {m: [] for m in MODES}
    base_cmd = [sys.executable, os.path.abspath(__file__), '--model', args.model, '--device', args.device,
                '--images', str(args.images), '--labels', str(args.labels),
                '--size', str(args.size[0]), str(args.size[1])]
    if args.pretrained:
        base_cmd += ['--pretrained', args.pretrained]
    for _ in range(args.repeat):
        for mode in MODES:
            out = subprocess.run(base_cmd + ['--mode', mode], capture_output=True, text=True, check=True)
            results[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    best = {m: max(r, key=lambda d: d['images_per_s']) for m, r in results.items()}
    print(f'CLIP-ES CAM + CAA, {args.model}, {args.images} images {args.size[0]}x{args.size[1]}, '
          f'K={args.labels} labels, device={args.device}, torch threads={best["ours"]["threads"]} '
          f'(best of {args.repeat} alternating runs)')
    print(f'{"mode":10s} {"images/s":>9s} {"s/image":>8s} {"peak MiB":>9s}')
    for m in MODES:
        b = best[m]
        print(f'{m:10s} {b["images_per_s"]:9.3f} {1 / b["images_per_s"]:8.3f} {b["peak_mib"]:9.0f}')
    for m in ('naive', 'official'):
        print(f'speed-up ours/{m}: {best["ours"]["images_per_s"] / best[m]["images_per_s"]:.2f}x')
    return 0


if __name__ == '__main__':
    sys.exit(main())
