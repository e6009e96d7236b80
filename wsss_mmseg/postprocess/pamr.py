"""PAMR: pixel-adaptive mask refinement (Araslanov & Roth, CVPR 2020; spec maskclip_pacl.md §5.3,
§5.5, §6.4: 10 iterations, dilations (8, 16) in NACLIP). Pure torch.

For every pixel ``i`` and its 8 neighbours ``j`` at each dilation ``d`` (replicate padding):

    k_ij = mean_c( -|x_ic - x_jc| / (1e-8 + 0.1 * sigma_ic) )
    a_ij = softmax_j(k_ij)                     (over all 8 * len(dilations) neighbours)
    m_i  <- sum_j a_ij m_j                     (``iters`` times)

``sigma_ic`` is the standard deviation (unbiased) of channel ``c`` of the image over the 3x3
neighbourhoods of ``i`` at all dilations, centre included (9 values per dilation). The masks are
resized bilinearly to the image first.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['neighbour_offsets', 'pamr']


def neighbour_offsets(dilations: Sequence[int]) -> List[Tuple[int, int]]:
    """The 8 neighbour offsets ``(dy, dx)`` of every dilation, in a fixed order."""
    out = []
    for d in dilations:
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dy or dx:
                    out.append((dy * int(d), dx * int(d)))
    return out


def _shifted(x: Tensor, offsets: Sequence[Tuple[int, int]], pad: int) -> Tensor:
    """``(B, C, P, H, W)``: ``x`` at ``(y + dy, x + dx)`` for each offset, replicate padding."""
    h, w = x.shape[-2:]
    xp = F.pad(x, (pad, pad, pad, pad), mode='replicate')
    return torch.stack([xp[..., pad + dy:pad + dy + h, pad + dx:pad + dx + w] for dy, dx in offsets], dim=2)


def pamr(image: Tensor, masks: Tensor, *, iters: int = 10, dilations: Sequence[int] = (8, 16)) -> Tensor:
    """Refine class maps with image-adaptive local affinities.

    Args:
        image: ``(B, 3, H, W)`` float image (any normalisation).
        masks: ``(B, K, h, w)`` class maps (resized to ``(H, W)``).
        iters: Propagation steps (10).
        dilations: Neighbourhood dilations in pixels ((8, 16)).

    Returns:
        ``(B, K, H, W)`` refined maps.

    Raises:
        ValueError: Bad shapes or options.
    """
    if image.dim() != 4 or masks.dim() != 4 or image.shape[0] != masks.shape[0]:
        raise ValueError(f'image (B, C, H, W) {tuple(image.shape)} and masks (B, K, h, w) {tuple(masks.shape)} '
                         'must share the batch')
    if int(iters) < 0 or not dilations or min(int(d) for d in dilations) < 1:
        raise ValueError(f'PAMR needs iters >= 0 and dilations >= 1, got iters={iters}, dilations={dilations}')
    x = image.float()
    h, w = x.shape[-2:]
    m = F.interpolate(masks.float(), size=(h, w), mode='bilinear', align_corners=False)
    offsets = neighbour_offsets(dilations)
    pad = max(int(d) for d in dilations)
    with_centre = [off for d in dilations for off in [(0, 0)] + neighbour_offsets([d])]  # 9 per dilation
    sigma = _shifted(x, with_centre, pad).std(dim=2, keepdim=True)                  # (B, C, 1, H, W)
    diff = (_shifted(x, offsets, pad) - x[:, :, None]).abs()                         # (B, C, P, H, W)
    kernel = (-diff / (1e-8 + 0.1 * sigma)).mean(dim=1, keepdim=True)                # (B, 1, P, H, W)
    aff = kernel.softmax(dim=2)
    for _ in range(int(iters)):
        m = (_shifted(m, offsets, pad) * aff).sum(dim=2)
    return m
