"""ACoL (Zhang et al., CVPR 2018, adversarial complementary learning) as pure functions.

Spec (``classic_wsss.md``, ACoL row): two parallel classifiers; the shared features
are erased where classifier A's localisation map is above ``delta`` (0.6-0.9) before
classifier B; the localisation map is the element-wise maximum of both branches'.

* :func:`minmax_normalize` — ``(M - min) / (max - min)`` per map (ACoL's normalisation
  of the map that is thresholded).
* :func:`acol_erase_mask` — union over the labelled classes of
  ``minmax(A_k) > delta``; the multi-label generalisation of erasing the region of the
  ground-truth class.
* :func:`erase_features` — zero the features inside the mask.
* :func:`acol_fuse` — ``max(N(A), N(B))`` with ``N`` = ReLU / max
  (:func:`wsss_mmseg.classic.cam.normalize_maps`).

Only torch is imported here.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .cam import normalize_maps

__all__ = ['minmax_normalize', 'acol_erase_mask', 'erase_features', 'acol_fuse']


def minmax_normalize(maps: Tensor, *, eps: float = 1e-5) -> Tensor:
    """``(M - min) / (max - min + eps)`` over the last two dimensions.

    Args:
        maps: ``(..., h, w)`` maps.
        eps: Denominator epsilon (a constant map becomes 0).

    Returns:
        Maps in ``[0, 1)``.
    """
    flat = maps.flatten(-2)
    lo = flat.amin(dim=-1)[..., None, None]
    hi = flat.amax(dim=-1)[..., None, None]
    return (maps - lo) / (hi - lo + eps)


def acol_erase_mask(cams_a: Tensor, targets: Tensor, *, delta: float) -> Tensor:
    """Positions erased before classifier B.

    Args:
        cams_a: ``(B, K, h, w)`` class maps of classifier A.
        targets: ``(B, K)`` label vectors; classes with a value ``> 0`` are used
            (mixed labels included).
        delta: Erasing threshold in ``(0, 1)`` on the min-max normalised maps.

    Returns:
        ``(B, 1, h, w)`` bool mask, True = erased.
    """
    if not 0.0 < delta < 1.0:
        raise ValueError(f'ACoL delta must be in (0, 1), got {delta}')
    if cams_a.dim() != 4 or targets.shape != cams_a.shape[:2]:
        raise ValueError(f'cams_a {tuple(cams_a.shape)} must be (B, K, h, w) and targets '
                         f'{tuple(targets.shape)} (B, K)')
    above = minmax_normalize(cams_a) > float(delta)
    present = (targets > 0)[..., None, None]
    return (above & present).any(dim=1, keepdim=True)


def erase_features(features: Tensor, mask: Tensor) -> Tensor:
    """Zero the ``(B, C, h, w)`` features where the ``(B, 1, h, w)`` mask is True."""
    if mask.shape[0] != features.shape[0] or mask.shape[2:] != features.shape[2:]:
        raise ValueError(f'mask {tuple(mask.shape)} does not fit features '
                         f'{tuple(features.shape)}')
    return features * (~mask).to(features.dtype)


def acol_fuse(cams_a: Tensor, cams_b: Tensor) -> Tensor:
    """Fused localisation map ``max(N(A), N(B))`` (``N`` = ReLU / max per map)."""
    if cams_a.shape != cams_b.shape:
        raise ValueError(f'branch maps differ in shape: {tuple(cams_a.shape)} vs '
                         f'{tuple(cams_b.shape)}')
    return torch.maximum(normalize_maps(cams_a), normalize_maps(cams_b))
