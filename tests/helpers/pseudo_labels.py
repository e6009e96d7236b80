"""Synthetic pseudo-label files (mask + confidence PNGs) for the training-side tests.

Files use the format of :mod:`wsss_mmseg.pseudo.io`: palette PNG masks (0 bg,
k+1 class k, 255 ignore) and 16-bit confidence PNGs holding round(conf * 65535).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np
from PIL import Image

from tests.helpers.synthetic import write_synthetic_seg_dataset
from wsss_mmseg.pseudo.io import write_confidence_png, write_mask_png


def quantize_conf(conf: np.ndarray) -> np.ndarray:
    """The float32 values a 16-bit confidence PNG of ``conf`` reads back as."""
    q = np.rint(np.clip(np.asarray(conf, np.float64), 0, 1) * 65535)
    return (q / 65535).astype(np.float32)


def conf_of_label(label: np.ndarray) -> np.ndarray:
    """Confidence as a known function of the label: (label + 1) / 32, 0.5 on 255 pixels."""
    label = np.asarray(label)
    return np.where(label == 255, 0.5, (label.astype(np.float64) + 1) / 32)


def random_label(rng: np.random.Generator, h: int, w: int, *, num_classes: int = 4,
                 ignore_frac: float = 0.05) -> np.ndarray:
    """Blocky random labels (so that nearest resizing keeps structure) with some 255 pixels."""
    bh, bw = max(1, h // 6), max(1, w // 6)
    small = rng.integers(0, num_classes, (h // bh + 1, w // bw + 1))
    label = np.kron(small, np.ones((bh, bw), np.int64))[:h, :w]
    noise = rng.integers(0, num_classes, (h, w))
    flip = rng.random((h, w)) < 0.1
    label = np.where(flip, noise, label)
    label[rng.random((h, w)) < ignore_frac] = 255
    return label.astype(np.uint8)


def write_sample(root: Path, sid: str, img: np.ndarray, label: np.ndarray,
                 conf: Optional[np.ndarray] = None) -> None:
    """Write ``root/img/<sid>.png``, ``root/pseudo/{masks,confidence}/<sid>.png``."""
    for sub in ('img', 'pseudo/masks', 'pseudo/confidence'):
        (root / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(root / 'img' / f'{sid}.png')
    write_mask_png(root / 'pseudo' / 'masks' / f'{sid}.png', label, fsync=False)
    if conf is None:
        conf = conf_of_label(label)
    write_confidence_png(root / 'pseudo' / 'confidence' / f'{sid}.png', conf, fsync=False)


def write_pseudo_label_dataset(root: Path, *, n: int = 8, size: int = 64, num_classes: int = 3,
                               seed: int = 0, band: int = 3, low_conf: float = 0.3) -> List[str]:
    """Images with one coloured square each, plus noisy pseudo masks and confidence maps.

    Uses :func:`write_synthetic_seg_dataset` for the images and true labels
    (``root/img``, ``root/ann``, ``root/list.txt``). The pseudo mask equals the
    true label except in a ``band``-pixel ring around the square, where labels
    are random and the confidence is ``low_conf``; elsewhere the confidence is
    0.99. Written to ``root/pseudo/masks`` and ``root/pseudo/confidence``.

    Returns:
        The image ids.
    """
    ids = write_synthetic_seg_dataset(root, n=n, size=size, num_classes=num_classes, seed=seed)
    rng = np.random.default_rng(seed + 1)
    (root / 'pseudo' / 'masks').mkdir(parents=True, exist_ok=True)
    (root / 'pseudo' / 'confidence').mkdir(parents=True, exist_ok=True)
    for sid in ids:
        gt = np.array(Image.open(root / 'ann' / f'{sid}.png'))
        fg = gt > 0
        grown = np.zeros_like(fg)
        shrunk = np.ones_like(fg)
        for dy in range(-band, band + 1):
            for dx in range(-band, band + 1):
                shifted = np.roll(np.roll(fg, dy, 0), dx, 1)
                grown |= shifted
                shrunk &= shifted
        ring = grown & ~shrunk
        pseudo = gt.copy()
        pseudo[ring] = rng.integers(0, num_classes, int(ring.sum()))
        conf = np.where(ring, low_conf, 0.99)
        write_mask_png(root / 'pseudo' / 'masks' / f'{sid}.png', pseudo, fsync=False)
        write_confidence_png(root / 'pseudo' / 'confidence' / f'{sid}.png', conf, fsync=False)
    return ids
