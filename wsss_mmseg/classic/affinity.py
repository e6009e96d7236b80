"""AffinityNet (Ahn & Kwak, CVPR 2018) inter-pixel affinity supervision as pure functions.

Spec: ``classic_wsss.md`` (SEAM row: "AffinityNet RW (la_crf 4.0, ha_crf 24.0)"); the
pixel pairs are IRN's (Ahn et al., CVPR 2019) "path index" neighbourhood.

1. **Confident regions** (:func:`confident_region_label`): the CAMs are turned into two
   label maps with the background score ``(1 - max_k cam_k) ** alpha``: a *low* alpha
   (``la = 4``) gives a large background score, so the pixels still foreground are
   confident foreground; a *high* alpha (``ha = 24``) gives a small background score, so
   the pixels still background are confident background. Both maps are usually refined
   by a dense CRF (:func:`crf_region_labels`). Everything else is ignored (255).
2. **Pairs** (:func:`radius_offsets`): every pixel is paired with the pixels at a
   Euclidean distance ``< radius`` (one offset per unordered pair: ``dy > 0`` or
   ``dy == 0, dx > 0``).
3. **Affinity labels** (:func:`affinity_labels`): a pair of two non-ignored pixels is a
   background-positive pair (both background), a foreground-positive pair (same
   foreground class) or a negative pair (different labels).
4. **Affinity** of an embedding ``f`` (:func:`pair_affinity`):
   ``a_ij = exp(-mean_d |f_i,d - f_j,d|)`` in ``(0, 1]``.
5. **Loss** (:func:`affinity_loss`): ``L = L_bg/4 + L_fg/4 + L_neg/2`` with
   ``L_bg = mean_{bg pairs} -log(a + eps)``, ``L_fg`` likewise,
   ``L_neg = mean_{neg pairs} -log(1 + eps - a)``.

Only torch and numpy are imported here.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['radius_offsets', 'region_label_from_scores', 'confident_region_label',
           'crf_region_labels', 'affinity_labels', 'pair_affinity', 'affinity_loss',
           'LA_CRF', 'HA_CRF']

#: Background exponent of the confident-foreground map (SEAM/PSA ``la_crf``).
LA_CRF = 4.0
#: Background exponent of the confident-background map (SEAM ``ha_crf``).
HA_CRF = 24.0


def radius_offsets(radius: int) -> List[Tuple[int, int]]:
    """Offsets ``(dy, dx)`` of the pixel pairs within ``radius`` (one per unordered pair).

    Args:
        radius: Pairs have ``dy**2 + dx**2 < radius**2`` (IRN/PSA: 5 on the feature grid).

    Returns:
        ``[(0, 1), ..., (0, radius-1), (1, -radius+1), ...]``: ``dy == 0, dx > 0`` first,
        then ``dy > 0`` row by row.

    Raises:
        ValueError: ``radius < 2`` (no pair).
    """
    radius = int(radius)
    if radius < 2:
        raise ValueError(f'radius must be >= 2 (otherwise there is no pixel pair), got {radius}')
    offsets = [(0, dx) for dx in range(1, radius)]
    for dy in range(1, radius):
        for dx in range(-radius + 1, radius):
            if dy * dy + dx * dx < radius * radius:
                offsets.append((dy, dx))
    return offsets


def region_label_from_scores(cams: np.ndarray, keys: Sequence[int], alpha: float, *,
                             posterior: Optional[np.ndarray] = None) -> np.ndarray:
    """Label map of ``argmax([(1 - max_k cam_k) ** alpha, cam_1..cam_K])``.

    Args:
        cams: ``(K, H, W)`` foreground maps in ``[0, 1]``.
        keys: ``(K,)`` class indices (label value ``key + 1``; 0 = background).
        alpha: Background exponent.
        posterior: Optional ``(K + 1, H, W)`` scores to take the argmax of instead
            (e.g. the dense-CRF posterior of the same background rule).

    Returns:
        ``(H, W)`` uint8 labels (0 background, ``key + 1`` class).
    """
    c = np.asarray(cams, dtype=np.float32)
    keys_arr = np.asarray(keys, dtype=np.int64).reshape(-1)
    if c.ndim != 3 or c.shape[0] != keys_arr.size:
        raise ValueError(f'cams must be (K, H, W) with K = {keys_arr.size} keys, got {c.shape}')
    if posterior is None:
        bg = np.power(1.0 - c.max(axis=0, initial=0.0), float(alpha))[None]
        posterior = np.concatenate([bg, c], axis=0)
    posterior = np.asarray(posterior)
    if posterior.shape != (c.shape[0] + 1,) + c.shape[1:]:
        raise ValueError(f'posterior must be {(c.shape[0] + 1,) + c.shape[1:]}, '
                         f'got {posterior.shape}')
    lut = np.concatenate([[0], keys_arr + 1]).astype(np.uint8)
    return lut[posterior.argmax(axis=0)]


def confident_region_label(label_la: np.ndarray, label_ha: np.ndarray, *,
                           ignore_index: int = 255) -> np.ndarray:
    """Combine the low-alpha and high-alpha label maps into confident regions.

    Foreground of ``label_la`` keeps its class, background of ``label_ha`` is 0
    (it wins where both claim a pixel), every other pixel is ``ignore_index``.

    Args:
        label_la: ``(H, W)`` labels with the low background exponent.
        label_ha: ``(H, W)`` labels with the high background exponent.
        ignore_index: Value of the uncertain pixels.

    Returns:
        ``(H, W)`` uint8 labels.
    """
    la, ha = np.asarray(label_la), np.asarray(label_ha)
    if la.shape != ha.shape or la.ndim != 2:
        raise ValueError(f'label maps must be equal (H, W) shapes, got {la.shape} and {ha.shape}')
    out = np.full(la.shape, ignore_index, dtype=np.uint8)
    fg = la > 0
    out[fg] = la[fg]
    out[ha == 0] = 0
    return out


def crf_region_labels(cams: np.ndarray, keys: Sequence[int], img_rgb: Optional[np.ndarray], *,
                      la: float = LA_CRF, ha: float = HA_CRF,
                      crf: Optional[Callable[..., np.ndarray]] = None,
                      ignore_index: int = 255) -> np.ndarray:
    """Confident-region labels of one image (the AffinityNet training target).

    Args:
        cams: ``(K, H, W)`` foreground maps in ``[0, 1]`` at the image size.
        keys: ``(K,)`` class indices.
        img_rgb: ``(H, W, 3)`` uint8 image (needed with ``crf``).
        la: Low background exponent (confident foreground).
        ha: High background exponent (confident background).
        crf: ``crf(cams, img_rgb, bg_power=alpha) -> (K + 1, H, W)`` posterior (e.g.
            :func:`wsss_mmseg.postprocess.crf.crf_refine`), or None for the plain argmax.
        ignore_index: Value of the uncertain pixels.

    Returns:
        ``(H, W)`` uint8 labels: 0 background, ``key + 1`` foreground, ``ignore_index``.
    """
    if not 0 < la < ha:
        raise ValueError(f'need 0 < la < ha, got la={la}, ha={ha}')
    labels = []
    for alpha in (la, ha):
        q = None if crf is None else crf(cams, img_rgb, bg_power=float(alpha))
        labels.append(region_label_from_scores(cams, keys, alpha, posterior=q))
    return confident_region_label(labels[0], labels[1], ignore_index=ignore_index)


def _shifted(x: Tensor, dy: int, dx: int, fill: float) -> Tensor:
    """``out[..., y, x] = x[..., y + dy, x + dx]`` (``fill`` outside)."""
    h, w = x.shape[-2:]
    out = torch.full_like(x, fill)
    ys, yd = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h - max(dy, 0))
    xs, xd = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w - max(dx, 0))
    out[..., yd, xd] = x[..., ys, xs]
    return out


def affinity_labels(label: Tensor, offsets: Sequence[Tuple[int, int]], *,
                    ignore_index: int = 255) -> Dict[str, Tensor]:
    """Pair labels of every pixel ``p`` with ``p + offset``.

    Args:
        label: ``(..., h, w)`` integer labels (0 background, > 0 classes,
            ``ignore_index`` uncertain).
        offsets: ``(dy, dx)`` offsets (:func:`radius_offsets`).
        ignore_index: Uncertain label.

    Returns:
        ``dict(bg_pos, fg_pos, neg)`` boolean ``(..., P, h, w)`` masks indexed by the
        first pixel of the pair; pairs leaving the image are False in all three.
    """
    lab = label.long()
    valid_a = lab != ignore_index
    bg, fg, neg = [], [], []
    for dy, dx in offsets:
        other = _shifted(lab, int(dy), int(dx), float(ignore_index))
        valid = valid_a & (other != ignore_index)
        same = lab == other
        bg.append(valid & same & (lab == 0))
        fg.append(valid & same & (lab != 0))
        neg.append(valid & ~same)
    dim = lab.dim() - 2
    return dict(bg_pos=torch.stack(bg, dim), fg_pos=torch.stack(fg, dim),
                neg=torch.stack(neg, dim))


def pair_affinity(embedding: Tensor, offsets: Sequence[Tuple[int, int]]) -> Tensor:
    """``a(p, p + o) = exp(-mean_d |f_d(p) - f_d(p + o)|)`` for every offset.

    Args:
        embedding: ``(..., D, h, w)`` affinity embedding.
        offsets: ``(dy, dx)`` offsets.

    Returns:
        ``(..., P, h, w)`` affinities in ``(0, 1]``; 0 where ``p + o`` leaves the image.
    """
    if embedding.dim() < 3:
        raise ValueError(f'embedding must be (..., D, h, w), got {tuple(embedding.shape)}')
    h, w = embedding.shape[-2:]
    ones = embedding.new_ones((h, w))
    out = []
    for dy, dx in offsets:
        other = _shifted(embedding, int(dy), int(dx), 0.0)
        inside = _shifted(ones, int(dy), int(dx), 0.0)
        out.append(torch.exp(-(embedding - other).abs().mean(dim=-3)) * inside)
    return torch.stack(out, dim=-3)


def affinity_loss(affinity: Tensor, labels: Dict[str, Tensor], *,
                  eps: float = 1e-5) -> Dict[str, Tensor]:
    """AffinityNet loss terms (already weighted 1/4, 1/4, 1/2).

    Args:
        affinity: ``(..., P, h, w)`` pair affinities (:func:`pair_affinity`).
        labels: :func:`affinity_labels` output of the same shape.
        eps: Log and count epsilon (PSA: 1e-5).

    Returns:
        ``dict(loss_aff_bg, loss_aff_fg, loss_aff_neg)`` scalars; a term without any
        pair is 0.
    """
    for key in ('bg_pos', 'fg_pos', 'neg'):
        if labels[key].shape != affinity.shape:
            raise ValueError(f'{key} labels {tuple(labels[key].shape)} and affinities '
                             f'{tuple(affinity.shape)} differ in shape')

    def mean_of(term: Tensor, mask: Tensor) -> Tensor:
        m = mask.to(affinity.dtype)
        return (term * m).sum() / (m.sum() + eps)

    return dict(loss_aff_bg=0.25 * mean_of(-torch.log(affinity + eps), labels['bg_pos']),
                loss_aff_fg=0.25 * mean_of(-torch.log(affinity + eps), labels['fg_pos']),
                loss_aff_neg=0.5 * mean_of(-torch.log(1.0 + eps - affinity), labels['neg']))


def downscale_label(label: Tensor, size: Tuple[int, int]) -> Tensor:
    """Nearest-neighbour down-scaling of ``(B, H, W)`` labels to the embedding grid."""
    return F.interpolate(label[:, None].float(), size=tuple(size), mode='nearest')[:, 0].long()


__all__.append('downscale_label')
