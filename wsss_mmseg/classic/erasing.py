"""Adversarial erasing (Wei et al. 2017): mine CAM regions, merge them, erase them.

Round ``t`` trains a classifier on images whose regions mined in rounds
``< t`` are erased (filled with the mean pixel); its CAMs on those erased
images give new discriminative regions (``CAM_k > threshold`` for each
labelled class), which are merged (union) with the earlier ones.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

__all__ = ['mine_regions', 'erase_with_fill']


def mine_regions(cams: np.ndarray, *, threshold: float,
                 previous: Optional[np.ndarray] = None) -> np.ndarray:
    """Union of the CAM regions above ``threshold`` (and of earlier regions).

    Args:
        cams: ``(K, H, W)`` CAMs of the labelled classes, normalised to ``[0, 1]``.
        threshold: Region threshold in ``(0, 1)`` (pixels with ``cam > threshold``).
        previous: Optional ``(H, W)`` bool mask of regions mined earlier.

    Returns:
        ``(H, W)`` bool mask: ``previous | any_k(cam_k > threshold)``.

    Raises:
        ValueError: Bad shapes or threshold.
    """
    cams = np.asarray(cams)
    if cams.ndim != 3:
        raise ValueError(f'cams must be (K, H, W), got {cams.shape}')
    if not 0.0 < threshold < 1.0:
        raise ValueError(f'threshold must be in (0, 1), got {threshold}')
    region = (cams > threshold).any(axis=0) if cams.shape[0] else np.zeros(cams.shape[1:], bool)
    if previous is not None:
        previous = np.asarray(previous, dtype=bool)
        if previous.shape != region.shape:
            raise ValueError(f'previous mask {previous.shape} does not match the CAMs '
                             f'{region.shape}')
        region = region | previous
    return region


def erase_with_fill(img: np.ndarray, mask: np.ndarray, *,
                    fill: Union[float, Sequence[float]]) -> np.ndarray:
    """Replace the masked pixels by ``fill`` (the mean pixel).

    Args:
        img: ``(H, W, C)`` image (not modified).
        mask: ``(H, W)`` bool/0-1 mask of pixels to erase.
        fill: Scalar or per-channel value (in the image's channel order).

    Returns:
        The erased copy (same dtype; the fill is rounded for integer images).

    Raises:
        ValueError: Mask and image sizes differ, or ``fill`` has the wrong length.
    """
    img = np.asarray(img)
    mask = np.asarray(mask).astype(bool)
    if img.ndim != 3 or mask.shape != img.shape[:2]:
        raise ValueError(f'mask {mask.shape} does not match the image {img.shape}')
    fill_arr = np.asarray(fill, dtype=np.float64).reshape(-1)
    if fill_arr.size not in (1, img.shape[2]):
        raise ValueError(f'fill has {fill_arr.size} values, the image {img.shape[2]} channels')
    if np.issubdtype(img.dtype, np.integer):
        fill_arr = np.rint(fill_arr)
    out = img.copy()
    out[mask] = np.broadcast_to(fill_arr, (img.shape[2],)).astype(img.dtype)
    return out
