"""SEC (Kolesnikov & Lampert, ECCV 2016): seed, expand and constrain losses as pure functions.

Spec (``classic_wsss.md``, SEC row): seed loss on CAM cues (foreground: the top of each
present class's CAM at 20 %; background from saliency or low CAM), expand loss = global
weighted rank pooling with decays ``q_fg = 0.996`` and ``q_bg = 0.999``, constrain loss =
KL divergence between the prediction and its dense-CRF refinement.

* :func:`sec_cues` — cue map (0 background, ``key + 1`` class, 255 no cue).
  Foreground rule ``'max_ratio'`` (default): ``cam_k >= 0.2 * max(cam_k)`` (the CAM paper's
  20 %-of-maximum localisation rule, which SEC adopts); ``'top_fraction'``: the 20 % highest
  pixels of ``cam_k``. Background: ``saliency < bg_saliency`` when a saliency map is given,
  else ``max_k cam_k < bg_cam``. Conflicts: foreground beats background; between classes the
  one with the smaller cue area wins (small objects are not swallowed by large ones).
* :func:`seed_loss` — ``-1/|S| sum_{c} sum_{u in S_c} log f_{u,c}`` per image (mean over
  the cue pixels), averaged over the batch.
* :func:`gwrp_weights`, :func:`gwrp` — ``G_c = sum_j q^(j-1) s_(j) / sum_j q^(j-1)`` with
  ``s_(1) >= s_(2) >= ...`` the sorted scores of map ``c``; ``q = 0`` is max pooling,
  ``q = 1`` average pooling.
* :func:`expand_loss` — ``-mean_{c in T} log G_c(q_fg) - mean_{c not in T} log(1 - G_c(q_absent))
  - log G_bg(q_bg)`` (``q_absent = 0``: max pooling, as in SEC) per image, batch mean.
* :func:`constrain_loss` — ``1/n sum_u sum_c Q_{u,c} log(Q_{u,c} / f_{u,c})`` with ``Q`` the
  CRF posterior of ``f`` (a constant target), per image, batch mean.
* :func:`sec_crf_posterior` — ``Q`` for one image (pydensecrf2 on the CPU, picklable for a
  process pool): unary ``-log f``, SEC's kernels scaled by the map's down-sampling factor.

Only torch and numpy are imported at module level.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ['sec_cues', 'seed_loss', 'gwrp_weights', 'gwrp', 'expand_loss', 'constrain_loss',
           'sec_crf_posterior', 'Q_FG', 'Q_BG']

#: GWRP decay of the present foreground classes.
Q_FG = 0.996
#: GWRP decay of the background.
Q_BG = 0.999
_EPS = 1e-5


def sec_cues(cams: np.ndarray, keys: Sequence[int], *, fg_ratio: float = 0.2,
             fg_rule: str = 'max_ratio', bg_cam: float = 0.1,
             saliency: Optional[np.ndarray] = None, bg_saliency: float = 0.1,
             ignore_index: int = 255) -> np.ndarray:
    """Localisation cues of one image from its CAMs (and optionally a saliency map).

    Args:
        cams: ``(K, H, W)`` maps in ``[0, 1]`` of the image's classes.
        keys: ``(K,)`` class indices (cue value ``key + 1``).
        fg_ratio: 0.2: the foreground threshold (fraction of the maximum, or of the pixels).
        fg_rule: ``'max_ratio'`` (``cam >= fg_ratio * max``) or ``'top_fraction'`` (the
            ``fg_ratio`` highest pixels).
        bg_cam: Background where ``max_k cam_k < bg_cam`` (no saliency).
        saliency: Optional ``(H, W)`` saliency in ``[0, 1]``; then background is
            ``saliency < bg_saliency`` instead.
        bg_saliency: Saliency threshold of the background cue.
        ignore_index: Value of pixels without cue.

    Returns:
        ``(H, W)`` uint8 cue map.
    """
    c = np.asarray(cams, dtype=np.float32)
    keys_arr = np.asarray(keys, dtype=np.int64).reshape(-1)
    if c.ndim != 3 or c.shape[0] != keys_arr.size:
        raise ValueError(f'cams must be (K, H, W) with K = {keys_arr.size}, got {c.shape}')
    if not 0.0 < fg_ratio < 1.0:
        raise ValueError(f'fg_ratio must be in (0, 1), got {fg_ratio}')
    if fg_rule not in ('max_ratio', 'top_fraction'):
        raise ValueError(f"fg_rule must be 'max_ratio' or 'top_fraction', got {fg_rule!r}")
    out = np.full(c.shape[1:], ignore_index, dtype=np.uint8)
    if saliency is not None:
        sal = np.asarray(saliency, dtype=np.float32)
        if sal.shape != c.shape[1:]:
            raise ValueError(f'saliency {sal.shape} must have the CAM size {c.shape[1:]}')
        out[sal < bg_saliency] = 0
    else:
        out[c.max(axis=0, initial=0.0) < bg_cam] = 0
    masks = []
    for k in range(c.shape[0]):
        m = c[k]
        peak = float(m.max(initial=0.0))
        if peak <= 0:
            masks.append(np.zeros(m.shape, bool))
            continue
        if fg_rule == 'max_ratio':
            masks.append(m >= fg_ratio * peak)
        else:
            thr = np.quantile(m, 1.0 - fg_ratio)
            masks.append((m >= thr) & (m > 0))
    for k in sorted(range(len(masks)), key=lambda i: -int(masks[i].sum())):
        out[masks[k]] = keys_arr[k] + 1
    return out


def seed_loss(log_probs: Tensor, cues: Tensor, *, ignore_index: int = 255) -> Tensor:
    """Mean negative log-probability of the cue class over the cue pixels, per image.

    Args:
        log_probs: ``(B, C, h, w)`` log-softmax of the prediction (channel 0 background).
        cues: ``(B, h, w)`` cue labels (``ignore_index`` = no cue).
        ignore_index: No-cue value.

    Returns:
        Scalar: mean over the images that have cues (0 when none has).
    """
    if cues.shape != (log_probs.shape[0],) + log_probs.shape[2:]:
        raise ValueError(f'cues {tuple(cues.shape)} must be (B, h, w) of log_probs '
                         f'{tuple(log_probs.shape)}')
    valid = cues != ignore_index
    target = torch.where(valid, cues.long(), torch.zeros_like(cues, dtype=torch.long))
    if (target >= log_probs.shape[1]).any():
        raise ValueError(f'cue labels {sorted(set(target.unique().tolist()))} exceed the '
                         f'{log_probs.shape[1]} channels')
    nll = -log_probs.gather(1, target[:, None])[:, 0] * valid
    count = valid.flatten(1).sum(1)
    per_image = nll.flatten(1).sum(1) / count.clamp_min(1)
    has = count > 0
    if not has.any():
        return log_probs.sum() * 0.0
    return per_image[has].mean()


def gwrp_weights(n: int, q: float, *, dtype: torch.dtype = torch.float32,
                 device: Optional[torch.device] = None) -> Tensor:
    """``(n,)`` GWRP weights ``q^0, q^1, ..., q^(n-1)`` (``0^0 = 1``)."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f'GWRP decay q must be in [0, 1], got {q}')
    return torch.pow(torch.tensor(float(q), dtype=dtype, device=device),
                     torch.arange(int(n), dtype=dtype, device=device))


def gwrp(scores: Tensor, q: float) -> Tensor:
    """Global weighted rank pooling of ``(..., h, w)`` maps.

    Args:
        scores: Maps (probabilities).
        q: Decay in ``[0, 1]``.

    Returns:
        ``(...)`` pooled scores.
    """
    flat = scores.flatten(-2)
    ranked = flat.sort(dim=-1, descending=True).values
    w = gwrp_weights(ranked.shape[-1], q, dtype=ranked.dtype, device=ranked.device)
    return (ranked * w).sum(-1) / w.sum()


def expand_loss(probs: Tensor, labels: Tensor, *, q_fg: float = Q_FG, q_bg: float = Q_BG,
                q_absent: float = 0.0, eps: float = _EPS) -> Tensor:
    """SEC expand loss (GWRP of the softmax probabilities).

    Args:
        probs: ``(B, 1 + K, h, w)`` softmax (channel 0 background).
        labels: ``(B, K)`` image-level labels (``> 0`` = present).
        q_fg: Decay of the present classes (0.996).
        q_bg: Decay of the background (0.999).
        q_absent: Decay of the absent classes (0 = max pooling).
        eps: Log clamp.

    Returns:
        Scalar batch mean.
    """
    if probs.dim() != 4 or labels.shape != (probs.shape[0], probs.shape[1] - 1):
        raise ValueError(f'labels {tuple(labels.shape)} must be (B, K) for probs '
                         f'{tuple(probs.shape)} = (B, 1 + K, h, w)')
    present = labels > 0
    g_fg = gwrp(probs[:, 1:], q_fg)
    g_abs = gwrp(probs[:, 1:], q_absent)
    g_bg = gwrp(probs[:, 0], q_bg)
    term_p = (-torch.log(g_fg.clamp_min(eps)) * present).sum(1) / present.sum(1).clamp_min(1)
    absent = ~present
    term_a = (-torch.log((1 - g_abs).clamp_min(eps)) * absent).sum(1) / absent.sum(1).clamp_min(1)
    term_bg = -torch.log(g_bg.clamp_min(eps))
    return (term_p + term_a + term_bg).mean()


def constrain_loss(probs: Tensor, target: Tensor, *, eps: float = _EPS) -> Tensor:
    """``KL(Q || f)`` per pixel, mean over pixels and images.

    Args:
        probs: ``(B, C, h, w)`` prediction ``f`` (softmax).
        target: ``(B, C, h, w)`` CRF posterior ``Q`` (no gradient flows into it).
        eps: Clamp of ``f`` inside the log.

    Returns:
        Scalar.
    """
    if probs.shape != target.shape:
        raise ValueError(f'probs {tuple(probs.shape)} and CRF target {tuple(target.shape)} differ')
    q = target.detach().to(probs.dtype)
    kl = torch.xlogy(q, q) - q * torch.log(probs.clamp_min(eps))
    return kl.sum(1).mean()


def sec_crf_posterior(probs: np.ndarray, image_u8: np.ndarray, *, scale: float = 1.0,
                      iters: int = 10) -> np.ndarray:
    """Dense-CRF posterior of a ``(C, h, w)`` prediction on the ``(h, w, 3)`` image.

    Kernels of SEC's public code: Gaussian ``sxy = 3 / scale``, compat 3; bilateral
    ``sxy = 80 / scale``, ``srgb = 13``, compat 10; ``scale`` = down-sampling factor of the
    map w.r.t. the network input.

    Args:
        probs: ``(C, h, w)`` probabilities.
        image_u8: ``(h, w, 3)`` uint8 image at the map size.
        scale: Down-sampling factor.
        iters: Mean-field iterations.

    Returns:
        ``(C, h, w)`` float32 posterior.
    """
    from ..postprocess.crf import dense_crf
    p = np.clip(np.asarray(probs, dtype=np.float32), _EPS, 1.0)
    unary = np.ascontiguousarray(-np.log(p).reshape(p.shape[0], -1))
    return dense_crf(unary, np.ascontiguousarray(image_u8, dtype=np.uint8), iters=int(iters),
                     pos_xy_std=3.0 / scale, pos_w=3.0, bi_xy_std=80.0 / scale,
                     bi_rgb_std=13.0, bi_w=10.0)
