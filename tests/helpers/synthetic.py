"""Tiny synthetic segmentation data written to disk for end-to-end tests."""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
from PIL import Image


def write_synthetic_seg_dataset(root: Path, *, n: int = 8, size: int = 64, num_classes: int = 3,
                                seed: int = 0) -> List[str]:
    """Write ``n`` RGB images with one coloured square each, and their label masks.

    Layout: ``root/img/<id>.png``, ``root/ann/<id>.png`` (0 = background, 1..num_classes-1
    = the square's class), ``root/list.txt``. Deterministic for a seed. Returns the ids.
    """
    rng = np.random.default_rng(seed)
    (root / 'img').mkdir(parents=True, exist_ok=True)
    (root / 'ann').mkdir(parents=True, exist_ok=True)
    colours = np.array([[40, 40, 40], [220, 30, 30], [30, 200, 60], [40, 60, 220]], np.uint8)
    ids = []
    for i in range(n):
        cls = 1 + i % (num_classes - 1)
        img = np.full((size, size, 3), colours[0], np.uint8)
        img = np.clip(img + rng.integers(0, 20, img.shape), 0, 255).astype(np.uint8)
        ann = np.zeros((size, size), np.uint8)
        s = size // 2
        y, x = rng.integers(0, size - s, 2)
        img[y:y + s, x:x + s] = colours[cls % len(colours)]
        ann[y:y + s, x:x + s] = cls
        sid = f'{i:04d}'
        Image.fromarray(img).save(root / 'img' / f'{sid}.png')
        Image.fromarray(ann).save(root / 'ann' / f'{sid}.png')
        ids.append(sid)
    (root / 'list.txt').write_text('\n'.join(ids) + '\n')
    return ids
