"""Background rules for class-wise maps without a background class (spec maskclip_pacl.md §1.7 b/c,
§5.1, §6.4): a probability threshold and an area threshold. Pure torch.

* :func:`prob_background` -- SCLIP/ClearCLIP/NACLIP's ``prob_thd``: a pixel whose largest class
  probability is below ``thresh`` is background. Returns ``(B, 1 + K, h, w)`` scores whose arg-max
  is exactly that rule: channel 0 is 1 where ``max_k P_k < thresh`` and 0 elsewhere (``thresh > 0``),
  the foreground channels are the probabilities.
* :func:`area_background` -- SCLIP's ``area_thd`` on maps whose channel 0 is background: a
  foreground class whose arg-max pixels cover less than ``thresh`` of the image's predicted
  foreground is suppressed (its scores set to ``fill``), so its pixels go to the next best class.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ['prob_background', 'area_background']


def prob_background(probs: Tensor, *, thresh: float) -> Tensor:
    """Prepend a background channel by the probability threshold.

    Args:
        probs: ``(B, K, h, w)`` class probabilities (e.g. ``softmax_c(scale * cos)``).
        thresh: ``prob_thd`` in ``(0, 1]``.

    Returns:
        ``(B, 1 + K, h, w)``: ``[1{max_k P_k < thresh}, P]``.

    Raises:
        ValueError: Bad shape or threshold.
    """
    if probs.dim() != 4:
        raise ValueError(f'probs must be (B, K, h, w), got shape {tuple(probs.shape)}')
    if not 0.0 < float(thresh) <= 1.0:
        raise ValueError(f'ProbBackground thresh must be in (0, 1], got {thresh}')
    bg = (probs.amax(dim=1, keepdim=True) < float(thresh)).to(probs.dtype)
    return torch.cat([bg, probs], dim=1)


def area_background(scores: Tensor, *, thresh: float, fill: float = 0.0) -> Tensor:
    """Suppress foreground classes that win less than ``thresh`` of the predicted foreground.

    Args:
        scores: ``(B, 1 + K, h, w)`` scores, channel 0 = background.
        thresh: Minimum share of the predicted foreground pixels, in ``[0, 1)``.
        fill: Score written into every pixel of a suppressed class (0 for probabilities).

    Returns:
        Scores of the same shape (suppressed classes filled). An image without predicted
        foreground is returned unchanged.

    Raises:
        ValueError: Bad shape or threshold.
    """
    if scores.dim() != 4 or scores.shape[1] < 2:
        raise ValueError(f'scores must be (B, 1 + K, h, w) with K >= 1, got shape {tuple(scores.shape)}')
    if not 0.0 <= float(thresh) < 1.0:
        raise ValueError(f'AreaBackground thresh must be in [0, 1), got {thresh}')
    pred = scores.argmax(dim=1)                                          # (B, h, w)
    onehot = torch.nn.functional.one_hot(pred, scores.shape[1]).flatten(1, 2).sum(1).to(scores.dtype)  # (B, C)
    fg_total = onehot[:, 1:].sum(dim=1, keepdim=True)
    share = onehot / fg_total.clamp_min(1.0)
    small = (share < float(thresh)) & (onehot > 0) & (fg_total > 0)
    small[:, 0] = False
    return torch.where(small[:, :, None, None], torch.full_like(scores, float(fill)), scores)
