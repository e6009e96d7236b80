"""Which images the gallery shows, and their thumbnails.

Selection streams: :class:`GallerySelector` sees one ``(key, score)`` per image
and keeps at most ``size`` of them, so memory does not grow with the dataset.
Lower scores are worse (per-image mIoU, or the mean confidence without GT).
When the dataset has at most ``size`` scored images, all are shown, worst first.
Otherwise the gallery is split into three sections:

* ``worst``: the ``size // 2`` lowest scores, worst first;
* ``best``: the ``size // 4`` highest, best first;
* ``random``: the rest, a uniform sample (reservoir sampling with a fixed seed,
  so the same folder gives the same report) of the images not in the other two.

Images without any score (no labelled pixel and no GT) sort as worst: an empty
mask is what a user wants to see first.

Thumbnails (PIL only): the photo, the pseudo mask blended over it in the VOC
palette (ignore = white), the confidence as grey levels and, when present,
the GT blended the same way; JPEGs with at most ``max_side`` pixels per side.
"""
from __future__ import annotations

import heapq
import random
from pathlib import Path
from typing import Any, List, Optional, Tuple

import numpy as np
from PIL import Image

from wsss_mmseg.pseudo.io import voc_palette

__all__ = ['GallerySelector', 'overlay_mask', 'confidence_image', 'save_thumbnail',
           'thumbnail_size', 'resize_nearest', 'resize_rgb']

_IGNORE = 255


def _sort_score(score: Optional[float]) -> float:
    return float('-inf') if score is None else float(score)


class GallerySelector:
    """Streams ``(key, score)`` pairs and keeps the worst / best / random ones.

    Args:
        size: Most images shown (``>= 0``).
        seed: Seed of the random sample.
    """

    def __init__(self, size: int, *, seed: int = 0) -> None:
        if size < 0:
            raise ValueError(f'gallery size must be >= 0, got {size}')
        self.size = int(size)
        self.n_worst = self.size // 2
        self.n_best = self.size // 4
        self.n_random = self.size - self.n_worst - self.n_best
        self._all: List[Tuple[float, int, Any]] = []   # kept while count <= size
        self._worst: List[Tuple[float, int, Any]] = []  # max-heap via negated score
        self._best: List[Tuple[float, int, Any]] = []   # min-heap
        # the reservoir must still hold n_random images after removing the
        # worst / best ones, so it samples size entries
        self._reservoir: List[Tuple[int, Any, float]] = []
        self._rng = random.Random(seed)
        self._seed = seed
        self.count = 0

    def add(self, key: Any, score: Optional[float]) -> None:
        """Offer one image.

        Args:
            key: What identifies the image (returned by :meth:`sections`).
            score: Lower is worse; None sorts first.
        """
        s = _sort_score(score)
        i = self.count
        self.count += 1
        if self.size == 0:
            return
        if self.count <= self.size:
            self._all.append((s, i, key))
        elif self._all:
            self._all = []  # more images than fit: the sections take over
        item = (-s, -i, key)  # ties: the earlier image counts as worse
        if len(self._worst) < self.n_worst:
            heapq.heappush(self._worst, item)
        elif self.n_worst and item > self._worst[0]:
            heapq.heapreplace(self._worst, item)
        bitem = (s, i, key)
        if len(self._best) < self.n_best:
            heapq.heappush(self._best, bitem)
        elif self.n_best and bitem > self._best[0]:
            heapq.heapreplace(self._best, bitem)
        if len(self._reservoir) < self.size:
            self._reservoir.append((i, key, s))
        else:
            j = self._rng.randrange(i + 1)
            if j < self.size:
                self._reservoir[j] = (i, key, s)

    def candidates(self) -> set:
        """Keys that :meth:`sections` may still return (the rest can be forgotten)."""
        keys = {k for _, _, k in self._all} | {k for _, _, k in self._worst}
        keys |= {k for _, _, k in self._best} | {k for _, k, _ in self._reservoir}
        return keys

    def sections(self) -> List[Tuple[str, List[Any]]]:
        """The gallery, as ``[(section name, [key, ...]), ...]``.

        Returns:
            ``[('all', keys worst first)]`` when at most ``size`` images were
            offered, else ``[('worst', ...), ('best', ...), ('random', ...)]``.
        """
        if self.count <= self.size:
            return [('all', [k for _, _, k in sorted(self._all, key=lambda t: (t[0], t[1]))])]
        worst = [(-ns, -ni, k) for ns, ni, k in self._worst]
        worst.sort(key=lambda t: (t[0], t[1]))
        best = sorted(self._best, key=lambda t: (-t[0], t[1]))
        taken = {i for _, i, _ in worst} | {i for _, i, _ in best}
        # the reservoir is a uniform sample of all images, so what is left of it
        # after removing the worst / best is a uniform sample of the others; a
        # seeded draw from it (not its first entries: they favour early images)
        rest = [t for t in self._reservoir if t[0] not in taken]
        draw = random.Random(f'gallery-sample-{self._seed}')  # independent of the reservoir's
        rest = draw.sample(rest, min(self.n_random, len(rest)))
        randoms = [k for _, k, _ in sorted(rest, key=lambda t: t[0])]
        return [('worst', [k for _, _, k in worst]), ('best', [k for _, _, k in best]),
                ('random', randoms)]


def overlay_mask(image: np.ndarray, mask: np.ndarray, *, alpha: float = 0.55) -> np.ndarray:
    """Blend a label mask in the VOC palette over an RGB image.

    Background (0) is left as the photo, ignore (255) is drawn white,
    label ``k`` as palette colour ``k``.

    Args:
        image: ``uint8`` ``(H, W, 3)``.
        mask: Labels ``(H, W)``.
        alpha: Weight of the label colour.

    Returns:
        ``uint8`` ``(H, W, 3)``.
    """
    palette = voc_palette(256).astype(np.float64)
    palette[_IGNORE] = 255.0
    colours = palette[np.asarray(mask, np.int64)]
    img = np.asarray(image, np.float64)
    blend = np.where((np.asarray(mask) == 0)[..., None], img,
                     (1 - alpha) * img + alpha * colours)
    return np.clip(np.rint(blend), 0, 255).astype(np.uint8)


def confidence_image(confidence: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Confidence as an RGB grey-level image; ignored pixels tinted red.

    Args:
        confidence: ``(H, W)`` in ``[0, 1]``.
        mask: Optional pseudo mask; its 255 pixels are shown dark red.

    Returns:
        ``uint8`` ``(H, W, 3)``.
    """
    grey = np.clip(np.rint(np.asarray(confidence, np.float64) * 255), 0, 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if mask is not None:
        ign = np.asarray(mask) == _IGNORE
        rgb[ign] = (np.array([128, 0, 0]) + rgb[ign] // 2).clip(0, 255).astype(np.uint8)
    return rgb


def thumbnail_size(height: int, width: int, max_side: int) -> Tuple[int, int]:
    """``(h, w)`` scaled so that the longer side is at most ``max_side`` (never enlarged)."""
    scale = min(1.0, max_side / max(height, width, 1))
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_nearest(labels: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D array (label values stay label values).

    Args:
        labels: ``(H, W)``.
        size: ``(h, w)``.

    Returns:
        ``(h, w)`` array, pixel centres sampled.
    """
    h, w = size
    rows = ((np.arange(h) + 0.5) * labels.shape[0] / h).astype(np.int64)
    cols = ((np.arange(w) + 0.5) * labels.shape[1] / w).astype(np.int64)
    return labels[rows[:, None], cols[None, :]]


def resize_rgb(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Area-averaging resize of a ``uint8`` RGB image to ``(h, w)``."""
    if image.shape[:2] == tuple(size):
        return image
    img = Image.fromarray(np.ascontiguousarray(image), 'RGB')
    return np.asarray(img.resize((size[1], size[0]), Image.BOX))


def save_thumbnail(array: np.ndarray, path: Path, *, quality: int = 80) -> None:
    """Save an RGB array (already at thumbnail size) as a JPEG.

    Args:
        array: ``uint8`` ``(H, W, 3)``.
        path: Destination ``.jpg`` (its folder must exist).
        quality: JPEG quality.
    """
    Image.fromarray(np.ascontiguousarray(array), 'RGB').save(path, format='JPEG',
                                                            quality=quality)

