"""From class activation maps to a pseudo mask and a confidence map (spec ``clip_es.md`` §7-8).

Label convention (VOC style): ``0`` = background, ``key + 1`` for the foreground
class with dataset index ``key``, ``ignore_index`` (255) = ignored pixel.

* Background score ``bg = (1 - max_k cam_k) ** bg_power`` (``eval_cam.py``).
* Without CRF the label is ``argmax([bg, cam_1..cam_K])`` (ties -> the lower
  channel, background first) and the confidence is the maximum of the
  normalised vector: ``conf = max(bg, cam_1..cam_K) / (bg + sum_k cam_k)``.
* With a CRF posterior ``Q (K+1, H, W)`` the label is ``argmax_c Q`` and the
  confidence ``max_c Q`` (official ``eval_cam_with_crf.py``).
* ``ignore_below=mu`` sets pixels with ``confidence < mu`` to ``ignore_index``
  (the confidence-guided loss of CLIP-ES uses ``mu = 0.95`` on the CRF
  posterior; with the official CRF posterior this reproduces the official PNGs).
* Arithmetic runs in the dtype of ``cams``: pass the float16 maps the official
  code saves to reproduce ``eval_cam.py`` label maps bit for bit.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence, Tuple, Union

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ['background_score', 'cams_to_probs', 'make_pseudo_mask']

ArrayLike = Union[np.ndarray, 'torch.Tensor']


def _as_cams(cams: ArrayLike) -> np.ndarray:
    if hasattr(cams, 'detach'):
        cams = cams.detach().float().cpu().numpy()
    c = np.asarray(cams)
    if c.ndim != 3 or c.shape[0] < 1:
        raise ValueError(f'cams must be (K, H, W) with K >= 1, got shape {c.shape}')
    if c.dtype not in (np.float16, np.float32, np.float64):
        c = c.astype(np.float32)
    return c


def background_score(cams: ArrayLike, *, power: float = 1.0) -> np.ndarray:
    """Background score ``(1 - max_k cam_k) ** power``.

    Args:
        cams: ``(K, H, W)`` foreground maps in ``[0, 1]``.
        power: exponent ``> 0`` (1 and 2 are the official choices).

    Returns:
        ``(H, W)`` array of the dtype of ``cams`` (float arithmetic in that dtype).
    """
    if not power > 0:
        raise ValueError(f'background power must be > 0, got {power}')
    c = _as_cams(cams)
    one = c.dtype.type(1)
    return np.power(one - c.max(axis=0), c.dtype.type(power))


def cams_to_probs(cams: ArrayLike, *, bg_power: float = 1.0, normalize: bool = False) -> np.ndarray:
    """Stack ``[bg, cam_1, ..., cam_K]`` along channel 0.

    Args:
        cams: ``(K, H, W)`` foreground maps in ``[0, 1]``.
        bg_power: exponent of the background score.
        normalize: divide by the per-pixel sum (a proper probability vector).

    Returns:
        ``(K + 1, H, W)`` array (dtype of ``cams``; float32 when normalised).
    """
    c = _as_cams(cams)
    p = np.concatenate([background_score(c, power=bg_power)[None], c], axis=0)
    if normalize:
        p = p.astype(np.float32)
        p = p / np.maximum(p.sum(axis=0, keepdims=True), np.float32(1e-12))
    return p


def make_pseudo_mask(cams: ArrayLike, keys: Sequence[int], *, bg_power: float = 1.0,
                     crf_Q: Optional[np.ndarray] = None, ignore_below: Optional[float] = None,
                     ignore_index: int = 255) -> Tuple[np.ndarray, np.ndarray]:
    """Pseudo mask and confidence from CAMs (optionally through a CRF posterior).

    Args:
        cams: ``(K, H, W)`` foreground maps in ``[0, 1]`` (image size).
        keys: ``(K,)`` dataset class indices of the maps (label value = key + 1).
        bg_power: background exponent (used without CRF).
        crf_Q: optional ``(K + 1, H, W)`` CRF posterior (channel 0 = background);
            when given, label = argmax and confidence = max of ``crf_Q``.
        ignore_below: confidence threshold ``mu``; pixels below get ``ignore_index``.
        ignore_index: label of ignored pixels.

    Returns:
        ``(mask (H, W) uint8, confidence (H, W) float32)``.
    """
    c = _as_cams(cams)
    k, h, w = c.shape
    keys_arr = np.asarray(keys, dtype=np.int64).reshape(-1)
    if keys_arr.size != k:
        raise ValueError(f'{keys_arr.size} keys given for {k} class maps')
    if (keys_arr < 0).any() or (keys_arr + 1 >= ignore_index).any() or (keys_arr + 1 > 255).any():
        raise ValueError(f'class keys {keys_arr.tolist()} must satisfy 0 <= key + 1 < ignore_index={ignore_index} '
                         f'and fit in uint8')
    if not 0 <= ignore_index <= 255:
        raise ValueError(f'ignore_index must fit in uint8, got {ignore_index}')
    if crf_Q is not None:
        q = np.asarray(crf_Q, dtype=np.float32)
        if q.shape != (k + 1, h, w):
            raise ValueError(f'crf_Q must be ({k + 1}, {h}, {w}), got shape {q.shape}')
        idx = q.argmax(axis=0)
        conf = q.max(axis=0)
    else:
        p = cams_to_probs(c, bg_power=bg_power)
        idx = p.argmax(axis=0)
        p32 = p.astype(np.float32)
        conf = p32.max(axis=0) / np.maximum(p32.sum(axis=0), np.float32(1e-12))
    lut = np.concatenate([[0], keys_arr + 1]).astype(np.uint8)
    mask = lut[idx]
    conf = conf.astype(np.float32)
    if ignore_below is not None:
        mask[conf < ignore_below] = ignore_index
    return mask, conf
