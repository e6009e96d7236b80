"""Demo: CLIP-ES pseudo masks for a few real photos, with overlays.

The photos are public-domain / CC0 samples that ship inside scikit-image (astronaut,
Chelsea the cat, a cup of coffee, a motorcycle); they are read from the installed package
at run time. Each gets image-level labels (class names), the regular pseudo-label job
(``wsss_mmseg.pseudo.job``, the code path of ``tools/generate_pseudo.py``) writes masks and
confidence maps, and this script adds overlay PNGs.

Usage::

    python tools/demo.py --pretrained /path/ViT-B-16.pt      # OpenAI's file, or an open_clip ckpt
    python tools/demo.py                                      # pretrained='openai' (downloads)
    python tools/demo.py --random-weights                     # smoke test, meaningless masks

Without reachable weights it stops and says how to give a path (exit status 2). Outputs:
``work_dirs/demo/{images,masks,confidence,overlays}`` and ``summary.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys
from typing import Dict, List, Optional

import numpy as np

# (scikit-image sample, file name, class names in the COCO-80 table)
SAMPLES = [
    ('astronaut', 'astronaut.png', ['person']),
    ('chelsea', 'chelsea.png', ['cat']),
    ('coffee', 'coffee.png', ['cup']),
    ('stereo_motorcycle', 'motorcycle.png', ['motorbike']),
]

RANDOM_BANNER = ('*** SMOKE TEST: random CLIP weights (--random-weights). The pipeline runs end to '
                 'end but the masks carry no meaning. ***')


def sample_images() -> Dict[str, np.ndarray]:
    """The demo photos as RGB uint8 arrays, keyed by file name."""
    try:
        import skimage.data as data
    except ImportError as err:  # pragma: no cover - scikit-image is in the requirements
        raise SystemExit('the demo photos come with scikit-image: pip install scikit-image') from err
    out = {}
    for func, name, _ in SAMPLES:
        img = getattr(data, func)()
        if isinstance(img, tuple):  # stereo_motorcycle -> (left, right, disparity)
            img = img[0]
        out[name] = np.ascontiguousarray(img[..., :3]).astype(np.uint8)
    return out


def overlay(img: np.ndarray, mask: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the palette colour of each labelled pixel (not background / ignore) into the image."""
    out = img.astype(np.float32).copy()
    fg = (mask > 0) & (mask < 255)
    out[fg] = (1 - alpha) * out[fg] + alpha * palette[mask[fg]].astype(np.float32)
    return out.clip(0, 255).astype(np.uint8)


def build_config(work_dir: str, pretrained: Optional[str], device: str) -> dict:
    labels = {name: classes for _, name, classes in SAMPLES}
    with open(osp.join(work_dir, 'labels.json'), 'w') as f:
        json.dump(labels, f, indent=1)
    return dict(
        pseudo_dataset=dict(type='FolderImageLabels', img_dir=osp.join(work_dir, 'images'),
                            labels=osp.join(work_dir, 'labels.json'), class_table='coco80'),
        generator=dict(type='CLIPESGenerator', clip=dict(model_name='ViT-B-16', pretrained=pretrained),
                       class_table='coco80', synonyms='clip_es', templates='clip_es',
                       background='clip_es', box_threshold=0.7, device=device),
        mask_maker=dict(type='PseudoMaskMaker', bg_power=1, crf=dict(type='DenseCRF')),
        pseudo_job=dict(save_cams=False, evaluate=False, log_interval=1))


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--pretrained', default=os.environ.get('WSSS_CLIP_WEIGHTS', 'openai'),
                   help="CLIP ViT-B/16 weights: 'openai' (download) or a path "
                        '(default: $WSSS_CLIP_WEIGHTS or openai)')
    p.add_argument('--random-weights', action='store_true',
                   help='smoke test with random weights (the masks are meaningless)')
    p.add_argument('--work-dir', default='work_dirs/demo')
    p.add_argument('--device', default='auto')
    args = p.parse_args(argv)

    from mmengine.config import Config

    import wsss_mmseg  # noqa: F401  (registers the components)
    from wsss_mmseg.clip import build_clip
    from wsss_mmseg.pseudo.io import read_mask_png, voc_palette
    from wsss_mmseg.pseudo.job import run_pseudo_job
    from PIL import Image

    pretrained = None if args.random_weights else args.pretrained
    if pretrained is not None:
        try:  # fail early, with instructions, where the weights cannot be had
            build_clip('ViT-B-16', pretrained)
        except Exception as err:  # noqa: BLE001 - any loading failure gets the same advice
            print(f'Could not load CLIP ViT-B/16 weights ({pretrained!r}):\n  {err}\n\n'
                  'Give a local file instead, e.g.\n'
                  '  python tools/demo.py --pretrained /path/ViT-B-16.pt\n'
                  '  make demo DEMO_ARGS="--pretrained /path/ViT-B-16.pt"\n'
                  "(OpenAI's ViT-B-16.pt or an open_clip checkpoint), or run the pipeline with random "
                  'weights as a smoke test: python tools/demo.py --random-weights', file=sys.stderr)
            return 2
    if pretrained is None:
        print(RANDOM_BANNER)

    os.makedirs(osp.join(args.work_dir, 'images'), exist_ok=True)
    for name, img in sample_images().items():
        Image.fromarray(img).save(osp.join(args.work_dir, 'images', name))
    cfg = Config(build_config(args.work_dir, pretrained, args.device))
    summary = run_pseudo_job(cfg, work_dir=args.work_dir, resume=True)

    from wsss_mmseg.text import class_names
    names = ['background'] + class_names('coco80')
    os.makedirs(osp.join(args.work_dir, 'overlays'), exist_ok=True)
    for _, name, classes in SAMPLES:
        stem = osp.splitext(name)[0]
        mask_path = osp.join(args.work_dir, 'masks', stem + '.png')
        if not osp.exists(mask_path):
            continue
        mask = read_mask_png(mask_path)
        img = np.asarray(Image.open(osp.join(args.work_dir, 'images', name)).convert('RGB'))
        out = osp.join(args.work_dir, 'overlays', stem + '.png')
        Image.fromarray(overlay(img, mask, voc_palette())).save(out)
        present = sorted(set(np.unique(mask).tolist()) - {0, 255})
        frac = {names[v]: round(float((mask == v).mean()), 3) for v in present}
        print(f'{name:16s} labels={classes} -> pixels {frac}  overlay: {out}')
    if pretrained is None:
        print(RANDOM_BANNER)
    failed = summary['counts'].get('failed', 0)
    print(f"done: {summary['counts']} -> {args.work_dir}")
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
