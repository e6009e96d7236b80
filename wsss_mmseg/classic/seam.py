"""SEAM's equivariant regularisation (Wang et al. 2020), the scale-transform part.

A CAM network ``A`` should commute with a spatial transform ``T``:
``A(T(I)) = T(A(I))``. SEAM uses ``T`` = down-scaling (factor 0.3) and the loss
``ER = || A(T(I)) - T(A(I)) ||_1`` (mean absolute difference) on the
normalised CAMs of the two Siamese views. The CAM of the original view is
resized (bilinear) to the size of the CAM of the scaled view.
"""
from __future__ import annotations

from typing import Tuple

import torch.nn.functional as F
from torch import Tensor

__all__ = ['rescale_maps', 'equivariance_loss']


def rescale_maps(maps: Tensor, *, size: Tuple[int, int]) -> Tensor:
    """The transform ``T`` on maps/images: bilinear resize (align_corners=False).

    Args:
        maps: ``(B, K, h, w)`` maps or images.
        size: Target ``(h', w')``.

    Returns:
        ``(B, K, h', w')``.
    """
    if maps.dim() != 4:
        raise ValueError(f'maps must be (B, K, h, w), got {tuple(maps.shape)}')
    return F.interpolate(maps, size=tuple(int(v) for v in size), mode='bilinear',
                         align_corners=False)


def equivariance_loss(cam_original: Tensor, cam_transformed: Tensor) -> Tensor:
    """``mean | A(T(I)) - T(A(I)) |`` with ``T`` = resize to the transformed CAM's size.

    Args:
        cam_original: ``(B, K, h, w)`` CAMs of the original view, ``A(I)``.
        cam_transformed: ``(B, K, h', w')`` CAMs of the scaled view, ``A(T(I))``.

    Returns:
        Scalar L1 loss (0 for an exactly scale-equivariant network).

    Raises:
        ValueError: Batch or class dimensions differ.
    """
    if cam_original.dim() != 4 or cam_transformed.dim() != 4 or \
            cam_original.shape[:2] != cam_transformed.shape[:2]:
        raise ValueError(f'CAM shapes {tuple(cam_original.shape)} and '
                         f'{tuple(cam_transformed.shape)} must be (B, K, h, w) with equal B, K')
    target = rescale_maps(cam_original, size=cam_transformed.shape[2:])
    return (cam_transformed - target).abs().mean()
