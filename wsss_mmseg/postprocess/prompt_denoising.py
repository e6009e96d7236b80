"""MaskCLIP prompt denoising (PD, spec ``maskclip_pacl.md`` §1.5).

Per image: ``P = softmax_c(scale * logits)`` at every location, ``conf_c = max over locations
of P[c]``; every class with ``conf_c < thresh`` is judged absent and its logits are set to
``fill`` (-100) at every location. If every class is removed, all logits are ``fill`` (argmax
then returns class 0, as the official code). Pure torch.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

__all__ = ['class_confidence', 'prompt_denoising']


def class_confidence(logits: Tensor, *, scale: float = 100.0) -> Tensor:
    """Max over locations of the per-location class softmax.

    Args:
        logits: ``(B, K, h, w)`` class scores.
        scale: Inverse temperature of the softmax over classes.

    Returns:
        ``(B, K)`` float32 confidences in ``[0, 1]``.
    """
    if logits.dim() != 4:
        raise ValueError(f'logits must be (B, K, h, w), got shape {tuple(logits.shape)}.')
    prob = (float(scale) * logits.float()).softmax(dim=1)
    return prob.flatten(2).amax(dim=-1)


def prompt_denoising(logits: Tensor, *, thresh: float = 0.5, scale: float = 100.0,
                     fill: float = -100.0) -> Tuple[Tensor, Tensor]:
    """Remove the classes whose confidence is below ``thresh`` from each image.

    Args:
        logits: ``(B, K, h, w)`` class scores.
        thresh: ``pd_thresh`` (0.5 in the paper).
        scale: Inverse temperature of the softmax over classes (100).
        fill: Logit written at every location of a removed class (-100).

    Returns:
        ``(logits_out (B, K, h, w) float32, keep (B, K) bool)``.
    """
    conf = class_confidence(logits, scale=scale)
    keep = conf >= float(thresh)
    out = torch.where(keep[:, :, None, None], logits.float(), torch.full_like(logits, fill, dtype=torch.float32))
    return out, keep
