"""Overlapping patch embedding for dense PACL inference (spec maskclip_pacl.md §3.4: the patch
convolution run with a stride of 4, positional embeddings interpolated to the denser grid). Pure torch.

The image (already normalised) is zero-padded right/bottom to a multiple of ``stride`` and then by
``patch - stride`` pixels split over both sides (left/top ``(patch - stride) // 2``), so the grid is
``(ceil(H / s), ceil(W / s))`` and patch ``(i, j)`` is centred on the ``s x s`` cell ``(i, j)`` of
the image: the usual bilinear resize of the score maps to the image stays aligned.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F

__all__ = ['strided_patch_embed']


def strided_patch_embed(images: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor = None, *,
                        stride: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Patch embedding with overlapping patches.

    Args:
        images: ``(B, 3, H, W)`` normalised images.
        weight: ``(D, 3, p, p)`` patch-embedding kernel (CLIP's ``conv1``).
        bias: Optional ``(D,)`` bias (CLIP has none).
        stride: Step between patches in pixels, ``1 <= stride <= p``.

    Returns:
        ``(tokens (B, h * w, D) row-major, (h, w))`` with ``h = ceil(H / stride)``.

    Raises:
        ValueError: Bad stride or shapes.
    """
    if images.dim() != 4 or weight.dim() != 4 or weight.shape[-1] != weight.shape[-2]:
        raise ValueError(f'images (B, C, H, W) {tuple(images.shape)} / square kernel {tuple(weight.shape)} expected')
    p = int(weight.shape[-1])
    s = int(stride)
    if not 1 <= s <= p:
        raise ValueError(f'patch stride must be in [1, {p}] (the patch size), got {stride}')
    h, w = images.shape[-2:]
    gh, gw = math.ceil(h / s), math.ceil(w / s)
    extra = p - s
    lo = extra // 2
    x = F.pad(images, (lo, gw * s - w + extra - lo, lo, gh * s - h + extra - lo))
    out = F.conv2d(x.to(weight.dtype), weight, bias, stride=s)
    assert out.shape[-2:] == (gh, gw)
    return out.flatten(2).transpose(1, 2), (gh, gw)
