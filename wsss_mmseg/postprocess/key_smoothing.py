"""MaskCLIP key smoothing (KS, spec ``maskclip_pacl.md`` §1.6).

Every location's class probabilities are replaced by a key-similarity weighted sum over all
locations of the same image::

    P = softmax_c(scale * logits)                      (B, N, K)
    W = k~ k~^T                                        (B, N, N)
    out_i = sum_j W_ij P_j      where max_c P_i < thresh, else P_i (the probabilities)

As the official code (spec §1.6 steps 1, 4, 5) the output is class *probabilities* everywhere:
smoothed (unnormalised) where replaced, the softmax ``P_i`` itself where a location is kept. (An
earlier version of this plugin kept the raw cosine at kept locations, which mixed two scales and
let a later per-class normalisation rank confident pixels below smoothed ones.)

``k~`` are the last-layer keys normalised per token (``key_norm='token'``, true cosine, the
default) or -- to reproduce the official numbers -- per key *channel* over the locations
(``key_norm='legacy_dim1'``, the official ``F.normalize(k, p=2)`` on ``(B, N, C)``, whose
default ``dim=1`` is the location axis). Rows are not normalised unless ``row_norm`` asks for
``'l1'`` (divide by the sum of absolute weights) or ``'softmax'`` (row softmax of ``W``).

Works on any class-wise maps with keys on the same grid: MaskCLIP logits, or CLIP-ES CAMs
with the keys of the CLIP last block. Pure torch.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['KEY_NORMS', 'ROW_NORMS', 'key_affinity', 'key_smoothing']

KEY_NORMS = ('token', 'legacy_dim1')
ROW_NORMS = (None, 'l1', 'softmax')


def key_affinity(keys: Tensor, *, key_norm: str = 'token', row_norm: Optional[str] = None) -> Tensor:
    """Key-similarity weights ``W = k~ k~^T``.

    Args:
        keys: ``(B, N, C)`` keys of the ``N`` locations (row-major grid).
        key_norm: ``'token'`` (each key L2-normalised over its channels: ``W`` is the cosine
            matrix, unit diagonal) or ``'legacy_dim1'`` (each channel L2-normalised over the
            ``N`` locations, the official quirk).
        row_norm: ``None``, ``'l1'`` (rows divided by their absolute sum) or ``'softmax'``.

    Returns:
        ``(B, N, N)`` float32 weights.

    Raises:
        ValueError: Bad shape or option.
    """
    if keys.dim() != 3:
        raise ValueError(f'keys must be (B, N, C), got shape {tuple(keys.shape)}.')
    if key_norm not in KEY_NORMS:
        raise ValueError(f'key_norm must be one of {KEY_NORMS}, got {key_norm!r}.')
    if row_norm not in ROW_NORMS:
        raise ValueError(f'row_norm must be one of {ROW_NORMS}, got {row_norm!r}.')
    k = keys.float()
    k = F.normalize(k, p=2, dim=-1 if key_norm == 'token' else 1)
    w = k @ k.transpose(1, 2)
    if row_norm == 'l1':
        w = w / w.abs().sum(dim=-1, keepdim=True).clamp_min(1e-12)
    elif row_norm == 'softmax':
        w = w.softmax(dim=-1)
    return w


def key_smoothing(logits: Tensor, keys: Tensor, *, thresh: float = 1.0, scale: float = 100.0,
                  key_norm: str = 'token', row_norm: Optional[str] = None, apply_softmax: bool = True) -> Tensor:
    """MaskCLIP key smoothing of class-wise maps.

    Args:
        logits: ``(B, K, h, w)`` class scores (cosine logits, or any maps).
        keys: ``(B, C, h, w)`` keys on the same grid (or ``(B, h * w, C)``).
        thresh: ``ks_thresh``: only locations whose max class probability is ``< thresh`` are
            replaced (1.0 = essentially all).
        scale: Temperature inverse of the class softmax (100, CLIP's logit scale).
        key_norm: See :func:`key_affinity`.
        row_norm: See :func:`key_affinity`.
        apply_softmax: ``True`` (MaskCLIP): ``P = softmax_c(scale * logits)``; ``False``: the
            maps are already scores to smooth (e.g. CAMs in ``[0, 1]``), ``P = logits``.

    Returns:
        ``(B, K, h, w)`` float32: smoothed (unnormalised) probabilities at replaced locations,
        the probabilities ``P`` elsewhere (spec §1.6).

    Raises:
        ValueError: Shapes that do not match.
    """
    if logits.dim() != 4:
        raise ValueError(f'logits must be (B, K, h, w), got shape {tuple(logits.shape)}.')
    b, n_cls, h, w = logits.shape
    if keys.dim() == 4:
        if keys.shape[0] != b or tuple(keys.shape[-2:]) != (h, w):
            raise ValueError(f'keys {tuple(keys.shape)} are not on the grid of logits {tuple(logits.shape)}.')
        keys = keys.flatten(2).transpose(1, 2)
    elif keys.dim() != 3 or keys.shape[0] != b or keys.shape[1] != h * w:
        raise ValueError(f'keys must be (B, C, h, w) or (B, h*w, C) matching logits {tuple(logits.shape)}, '
                         f'got {tuple(keys.shape)}.')
    x = logits.float().flatten(2).transpose(1, 2)  # (B, N, K)
    prob = (float(scale) * x).softmax(dim=-1) if apply_softmax else x
    weights = key_affinity(keys.to(x.device), key_norm=key_norm, row_norm=row_norm)
    smoothed = weights @ prob
    replace = prob.amax(dim=-1, keepdim=True) < float(thresh)
    out = torch.where(replace, smoothed, prob)
    return out.transpose(1, 2).reshape(b, n_cls, h, w)
