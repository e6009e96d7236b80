"""PACL losses (spec maskclip_pacl.md §3.2 and §3.8): pure tensor math.

* :func:`symmetric_info_nce` -- CLIP's symmetric InfoNCE on the ``B x B`` compatibility
  matrix ``phi[i, j] = phi_hat(x_i, y_j)`` (caption mode).
* :func:`multilabel_sigmoid_loss` -- weakly supervised PACL (§3.8 a): SigLIP-style BCE of
  ``sigma(phi_c * scale + bias)`` against the image-level label set; absent classes and the
  optional background prompts are negatives.
* :func:`dense_prior_loss` -- §3.8 c: cross-entropy of the dense class scores against a label
  map from another generator, restricted per image to ``Y ∪ {bg}``.
* :func:`negative_suppression_loss` -- §3.8 d: mean top-k patch similarity of absent classes.

Importable with torch only.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ['clamped_scale', 'clamp_log_scale_', 'symmetric_info_nce', 'multilabel_sigmoid_loss', 'dense_prior_loss',
           'negative_suppression_loss', 'multi_positive_contrastive_loss']


def clamped_scale(log_scale: torch.Tensor, *, max_scale: Optional[float] = 100.0) -> torch.Tensor:
    """Value of ``exp(log_scale)`` capped at ``max_scale``, for reporting only.

    Do not train through this: where the cap is active its gradient is exactly zero. Training
    uses ``log_scale.exp()`` and :func:`clamp_log_scale_` on the parameter (as CLIP/open_clip).

    Args:
        log_scale: Scalar tensor (log of the scale).
        max_scale: Upper bound, or None.

    Returns:
        Scalar tensor.
    """
    if max_scale is None:
        return log_scale.exp()
    return log_scale.clamp(max=math.log(float(max_scale))).exp()


@torch.no_grad()
def clamp_log_scale_(log_scale: torch.Tensor, *, max_scale: Optional[float] = 100.0) -> torch.Tensor:
    """Clamp a learnable log logit scale **in place** to ``log(max_scale)`` (CLIP's rule).

    CLIP and open_clip clamp the parameter after the optimiser step instead of clamping inside
    the forward pass, so the scale keeps a non-zero gradient when it sits on the bound (a scale
    initialised at 100 with the bound 100 can still move down). Calling this before each use is
    the same as calling it after each step.

    Args:
        log_scale: Scalar parameter/tensor, modified in place.
        max_scale: Upper bound of ``exp(log_scale)``, or None (no-op).

    Returns:
        ``log_scale`` itself.
    """
    if max_scale is not None:
        log_scale.clamp_(max=math.log(float(max_scale)))
    return log_scale


def symmetric_info_nce(phi: torch.Tensor, *, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """``½ [CE_rows(scale·phi, diag) + CE_cols(scale·phi, diag)]``.

    Args:
        phi: ``(B, B)`` compatibilities, row i = image i, column j = text j; positives on the
            diagonal.
        logit_scale: Multiplier ``1 / tau`` (scalar tensor or float).

    Returns:
        Scalar loss.

    Raises:
        ValueError: ``phi`` is not a non-empty square matrix.
    """
    if phi.ndim != 2 or phi.shape[0] != phi.shape[1] or phi.shape[0] == 0:
        raise ValueError(f'InfoNCE needs a non-empty square (B, B) matrix, got shape {tuple(phi.shape)}')
    logits = phi * logit_scale
    target = torch.arange(phi.shape[0], device=phi.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def multilabel_sigmoid_loss(phi: torch.Tensor, targets: torch.Tensor, *, scale: torch.Tensor | float,
                            bias: torch.Tensor | float, phi_background: Optional[torch.Tensor] = None,
                            background_weight: float = 1.0) -> torch.Tensor:
    """Multi-label sigmoid loss ``mean_b sum_c BCE(sigma(phi_bc·scale + bias), y_bc)``.

    Args:
        phi: ``(B, C)`` compatibilities of each image with each class prompt.
        targets: ``(B, C)`` multi-hot labels (1 present, 0 absent = true negative). An all-zero
            row is a background-only image: every class is a negative.
        scale: Logit scale (learnable scalar tensor or float).
        bias: Logit bias.
        phi_background: Optional ``(B, M)`` compatibilities with background prompts, always
            negatives.
        background_weight: Weight of the background-prompt terms.

    Returns:
        Scalar loss (sum over classes, mean over images).

    Raises:
        ValueError: Shape mismatch or targets outside ``[0, 1]``.
    """
    if phi.ndim != 2 or targets.shape != phi.shape:
        raise ValueError(f'phi {tuple(phi.shape)} and targets {tuple(targets.shape)} must both be (B, C)')
    targets = targets.to(phi.dtype)
    if targets.numel() and (targets.min() < 0 or targets.max() > 1):
        raise ValueError('multi-label targets must lie in [0, 1]')
    logits = phi * scale + bias
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction='none').sum(dim=1)
    if phi_background is not None and phi_background.numel():
        if phi_background.ndim != 2 or phi_background.shape[0] != phi.shape[0]:
            raise ValueError(f'phi_background must be (B={phi.shape[0]}, M), got {tuple(phi_background.shape)}')
        bg_logits = phi_background * scale + bias
        loss = loss + float(background_weight) * F.binary_cross_entropy_with_logits(
            bg_logits, torch.zeros_like(bg_logits), reduction='none').sum(dim=1)
    return loss.mean()


def dense_prior_loss(logits: torch.Tensor, target: torch.Tensor, *, allowed: Optional[torch.Tensor] = None,
                     ignore_index: int = 255) -> torch.Tensor:
    """Cross-entropy between dense class scores and a pseudo label map, per-image restricted.

    Args:
        logits: ``(B, K, h, w)`` class scores (already scaled, e.g. ``cos / tau_s``).
        target: ``(B, h, w)`` int labels in ``[0, K)`` or ``ignore_index``.
        allowed: Optional ``(B, K)`` bool: classes allowed per image (``Y ∪ {bg}``); other
            classes get ``-inf`` scores and target pixels of a disallowed class are ignored.
        ignore_index: Label of ignored pixels.

    Returns:
        Scalar loss (mean over valid pixels; 0 with a gradient path when none is valid).
    """
    if logits.ndim != 4 or target.shape != (logits.shape[0],) + tuple(logits.shape[2:]):
        raise ValueError(f'logits (B, K, h, w) {tuple(logits.shape)} and target (B, h, w) '
                         f'{tuple(target.shape)} do not match')
    target = target.long().clone()
    k = logits.shape[1]
    valid = (target != ignore_index)
    if valid.any() and (target[valid].min() < 0 or target[valid].max() >= k):
        raise ValueError(f'target labels must be in [0, {k}) or {ignore_index}')
    if allowed is not None:
        if allowed.shape != logits.shape[:2]:
            raise ValueError(f'allowed must be (B, K)={tuple(logits.shape[:2])}, got {tuple(allowed.shape)}')
        allowed = allowed.bool()
        logits = logits.masked_fill(~allowed[:, :, None, None], float('-inf'))
        safe = target.clamp(0, k - 1)
        ok = torch.gather(allowed, 1, safe.flatten(1)).view_as(target)
        valid = valid & ok
    if not valid.any():
        return logits.nan_to_num(0.0, posinf=0.0, neginf=0.0).sum() * 0.0
    target = target.masked_fill(~valid, ignore_index)
    return F.cross_entropy(logits, target, ignore_index=ignore_index)


def negative_suppression_loss(similarity: torch.Tensor, targets: torch.Tensor, *, top_k: int = 1) -> torch.Tensor:
    """Mean over absent classes of the top-k mean patch similarity (spec §3.8 d).

    Args:
        similarity: ``(B, C, T)`` patch-class cosines.
        targets: ``(B, C)`` multi-hot labels.
        top_k: Number of best patches averaged per absent class.

    Returns:
        Scalar loss (0 when no class is absent).
    """
    if similarity.ndim != 3 or targets.shape != similarity.shape[:2]:
        raise ValueError(f'similarity (B, C, T) {tuple(similarity.shape)} and targets (B, C) '
                         f'{tuple(targets.shape)} do not match')
    k = max(1, min(int(top_k), similarity.shape[-1]))
    top = similarity.topk(k, dim=-1).values.mean(-1)                   # (B, C)
    neg = (targets <= 0).to(top.dtype)
    return (top * neg).sum() / neg.sum().clamp(min=1.0)


def multi_positive_contrastive_loss(phi: torch.Tensor, targets: torch.Tensor, *, scale: torch.Tensor | float,
                                    phi_background: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Contrastive label-PACL (spec §3.8 b): image->class softmax with multiple positives and
    class->image SupCon over the batch, averaged.

    * image -> class: for every image with at least one label,
      ``-mean_{c in Y_b} log softmax_{c'}(scale * phi_b)_c`` over the classes (and background
      prompts, always negatives);
    * class -> image: for every class present in at least one image of the batch,
      ``-mean_{b: y_bc = 1} log softmax_{b'}(scale * phi_{:, c})_b``.

    Each direction is averaged over the images / classes it is defined for; the loss is half their
    sum (0 with a gradient path when the batch has no label).

    Args:
        phi: ``(B, C)`` compatibilities.
        targets: ``(B, C)`` multi-hot labels.
        scale: Logit scale.
        phi_background: Optional ``(B, M)`` compatibilities with background prompts.

    Returns:
        Scalar loss.
    """
    if phi.ndim != 2 or targets.shape != phi.shape:
        raise ValueError(f'phi {tuple(phi.shape)} and targets {tuple(targets.shape)} must both be (B, C)')
    pos = targets > 0
    logits = phi * scale
    row_logits = logits
    if phi_background is not None and phi_background.numel():
        if phi_background.ndim != 2 or phi_background.shape[0] != phi.shape[0]:
            raise ValueError(f'phi_background must be (B={phi.shape[0]}, M), got {tuple(phi_background.shape)}')
        row_logits = torch.cat([logits, phi_background * scale], dim=1)
    zero = logits.sum() * 0.0
    terms = []
    rows = pos.any(dim=1)
    if rows.any():
        logp = F.log_softmax(row_logits, dim=1)[:, :phi.shape[1]]
        per_image = -(logp * pos).sum(1)[rows] / pos.sum(1)[rows]
        terms.append(per_image.mean())
    cols = pos.any(dim=0)
    if cols.any():
        logp = F.log_softmax(logits, dim=0)
        per_class = -(logp * pos).sum(0)[cols] / pos.sum(0)[cols]
        terms.append(per_class.mean())
    if not terms:
        return zero
    return 0.5 * sum(terms) + zero
