"""Confidence-guided cross-entropy (CGL), pure math (torch only).

CLIP-ES trains the segmentation network on CRF-refined pseudo masks and
ignores every pixel whose pseudo label is unreliable: a pixel ``i`` takes part
in the loss only if the maximum CRF posterior ``max_c Q_i`` (the *confidence*)
is at least ``mu`` (0.95 in the paper). The official code realises this by
writing label 255 into the pseudo mask; here the confidence map is kept
separately and the same rule is applied inside the loss, so ``mu`` can be
changed without regenerating the masks:

    L = (1 / |K|) * sum_{i in K} CE(logits_i, y_i),
    K = {i : y_i != ignore_index and conf_i >= mu}.

Pixels with ``conf_i < mu`` are treated *exactly* like ``ignore_index`` pixels
(their label is replaced by ``ignore_index`` before ``F.cross_entropy``), so
they contribute neither to the loss nor to the gradient, and ``mu = 0`` is plain
cross-entropy on the pseudo masks.

Options (all keyword-only):

* ``soft=True`` additionally multiplies the loss of each kept pixel by its
  confidence; the normaliser is unchanged (number of kept pixels), i.e.
  ``L = (1/|K|) * sum_{i in K} conf_i * CE_i``.
* ``class_weight`` (C,) multiplies the loss of a pixel of class ``y`` by
  ``w_y``; with ``avg_non_ignore=True`` the mean divides by ``sum_{i in K} w_{y_i}``
  (the convention of ``torch.nn.CrossEntropyLoss(weight=...)``).
* ``avg_non_ignore`` follows mmseg's ``CrossEntropyLoss``: ``True`` averages over
  the kept pixels (torch's convention), ``False`` over all ``B*H*W`` pixels
  (ignored ones count in the denominator).
* ``pixel_weight`` (B, H, W) multiplies the per-pixel loss (numerator only), as
  mmseg does with the ``weight`` of a pixel sampler such as OHEM.
* ``reduction``: ``'mean'`` (above), ``'sum'`` (numerator only) or ``'none'``
  (per-pixel loss ``(B, H, W)``, zero on ignored pixels).

When no pixel is kept, the ``'mean'`` loss is 0 (and its gradient is zero),
not NaN.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['check_mu', 'confidence_keep_mask', 'cgl_cross_entropy']

_REDUCTIONS = ('mean', 'sum', 'none')


def check_mu(mu: float) -> float:
    """Validate the confidence threshold.

    Args:
        mu: Threshold in ``[0, 1]``.

    Returns:
        ``mu`` as a Python float.

    Raises:
        ValueError: ``mu`` is not a real number in ``[0, 1]`` (NaN and bools
            are rejected).
    """
    if isinstance(mu, Tensor):
        if mu.numel() != 1:
            raise ValueError('mu must be a scalar in [0, 1], got a tensor of shape '
                             f'{tuple(mu.shape)}')
        mu = mu.item()
    if isinstance(mu, bool) or not isinstance(mu, numbers.Real):
        raise ValueError(f'mu must be a real number in [0, 1], got {mu!r}')
    value = float(mu)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f'mu must be in [0, 1], got {mu!r}')
    return value


def _check_confidence(confidence: Tensor, labels: Tensor) -> Tensor:
    if not isinstance(confidence, Tensor):
        raise ValueError('confidence must be a torch.Tensor, got '
                         f'{type(confidence).__name__}')
    if not confidence.is_floating_point():
        raise ValueError('confidence must be a floating point tensor, got dtype '
                         f'{confidence.dtype}')
    if tuple(confidence.shape) != tuple(labels.shape):
        raise ValueError(f'confidence shape {tuple(confidence.shape)} differs from label shape '
                         f'{tuple(labels.shape)}; both must be (B, H, W)')
    # NaN fails both comparisons, so it is reported too.
    bad = ~((confidence >= 0) & (confidence <= 1))
    if bool(bad.any()):
        finite = confidence[torch.isfinite(confidence)]
        rng = (f'{finite.min().item():.6g}..{finite.max().item():.6g}'
               if finite.numel() else 'no finite values')
        raise ValueError(f'confidence values must lie in [0, 1]; got {int(bad.sum())} pixel(s) '
                         f'outside (finite range {rng}, NaN count '
                         f'{int(torch.isnan(confidence).sum())})')
    return confidence.to(device=labels.device)


def confidence_keep_mask(labels: Tensor, confidence: Optional[Tensor], *, mu: float,
                         ignore_index: int = 255) -> Tensor:
    """Pixels that take part in the CGL loss.

    Args:
        labels: Integer labels ``(B, H, W)``.
        confidence: Confidence ``(B, H, W)`` in ``[0, 1]``, or None (all
            non-ignored pixels are kept; only valid with ``mu == 0``).
        mu: Threshold in ``[0, 1]``; pixels with ``confidence < mu`` are dropped.
        ignore_index: Label value that is always dropped.

    Returns:
        Bool tensor ``(B, H, W)``: ``labels != ignore_index & confidence >= mu``.

    Raises:
        ValueError: Bad ``mu``, or bad/missing confidence (see
            :func:`cgl_cross_entropy`).
    """
    mu = check_mu(mu)
    keep = labels != ignore_index
    if confidence is None:
        if mu > 0:
            raise ValueError(f'confidence is None but mu={mu} > 0: a confidence map is needed '
                             'to drop low-confidence pixels')
        return keep
    confidence = _check_confidence(confidence, labels)
    return keep & (confidence >= mu)


def cgl_cross_entropy(logits: Tensor, labels: Tensor, confidence: Optional[Tensor], *,
                      mu: float, ignore_index: int = 255, soft: bool = False,
                      class_weight: Optional[Union[Sequence[float], Tensor]] = None,
                      avg_non_ignore: bool = True, reduction: str = 'mean',
                      pixel_weight: Optional[Tensor] = None) -> Tensor:
    """Cross-entropy that ignores pixels whose confidence is below ``mu``.

    See the module docstring for the exact formula and the options.

    Args:
        logits: Class scores ``(B, C, H, W)``.
        labels: Integer labels ``(B, H, W)``; ``ignore_index`` marks ignored pixels.
        confidence: Pseudo-label confidence ``(B, H, W)`` in ``[0, 1]``, or None
            (allowed only for ``mu == 0`` and ``soft=False``: plain CE).
        mu: Confidence threshold in ``[0, 1]``; ``confidence < mu`` is ignored.
        ignore_index: Label value of ignored pixels.
        soft: Also weight the kept pixels by their confidence.
        class_weight: Per-class loss weights ``(C,)`` or None.
        avg_non_ignore: ``'mean'`` divides by the kept pixels (True) or by all
            ``B*H*W`` pixels (False).
        reduction: ``'mean'``, ``'sum'`` or ``'none'``.
        pixel_weight: Optional per-pixel weights ``(B, H, W)`` (numerator only).

    Returns:
        Scalar loss, or ``(B, H, W)`` per-pixel losses for ``reduction='none'``.

    Raises:
        ValueError: ``mu`` outside ``[0, 1]``; wrong shapes or dtypes; confidence
            outside ``[0, 1]``; confidence None with ``mu > 0`` or ``soft``; a kept
            label outside ``0..C-1``; unknown ``reduction``; bad ``class_weight``.
    """
    mu = check_mu(mu)
    if reduction not in _REDUCTIONS:
        raise ValueError(f'reduction must be one of {_REDUCTIONS}, got {reduction!r}')
    if not isinstance(logits, Tensor) or logits.ndim != 4 or not logits.is_floating_point():
        raise ValueError('logits must be a floating point tensor (B, C, H, W), got '
                         f'{getattr(logits, "shape", type(logits).__name__)}')
    if not isinstance(labels, Tensor) or labels.ndim != 3:
        raise ValueError('labels must be a tensor (B, H, W), got '
                         f'{getattr(labels, "shape", type(labels).__name__)}')
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f'labels must be an integer tensor, got dtype {labels.dtype}')
    b, c, h, w = logits.shape
    if tuple(labels.shape) != (b, h, w):
        raise ValueError(f'labels shape {tuple(labels.shape)} does not match logits shape '
                         f'{tuple(logits.shape)} (expected {(b, h, w)})')
    if confidence is None and soft:
        raise ValueError('soft=True needs a confidence map, got confidence=None')

    keep = confidence_keep_mask(labels, confidence, mu=mu, ignore_index=ignore_index)
    target = labels.long().masked_fill(~keep, ignore_index)

    kept_labels = target[keep]
    if kept_labels.numel() and bool(((kept_labels < 0) | (kept_labels >= c)).any()):
        raise ValueError(f'labels must lie in 0..{c - 1} (or be ignore_index={ignore_index}); '
                         f'got values {sorted(set(kept_labels.unique().tolist()) - set(range(c)))}')

    weight_t: Optional[Tensor] = None
    if class_weight is not None:
        weight_t = torch.as_tensor(class_weight, dtype=logits.dtype, device=logits.device)
        if weight_t.shape != (c,):
            raise ValueError(f'class_weight must have shape ({c},), got {tuple(weight_t.shape)}')

    loss = F.cross_entropy(logits, target, weight=weight_t, ignore_index=ignore_index,
                           reduction='none')
    if soft:
        loss = loss * confidence.to(device=loss.device, dtype=loss.dtype)
    if pixel_weight is not None:
        if tuple(pixel_weight.shape) != (b, h, w):
            raise ValueError(f'pixel_weight shape {tuple(pixel_weight.shape)} differs from label '
                             f'shape {(b, h, w)}')
        loss = loss * pixel_weight.to(device=loss.device, dtype=loss.dtype)

    if reduction == 'none':
        return loss
    # Accumulate in at least float32: pixel counts overflow float16.
    total = loss.sum(dtype=torch.promote_types(loss.dtype, torch.float32))
    if reduction == 'sum':
        return total
    if avg_non_ignore:
        if weight_t is None:
            denom = keep.sum().to(total.dtype)
        else:
            denom = weight_t[kept_labels].sum().to(total.dtype)
    else:
        denom = torch.tensor(float(labels.numel()), dtype=total.dtype, device=total.device)
    # No kept pixel: total is 0 with a zero gradient; return it instead of 0/0.
    denom = torch.where(denom > 0, denom, torch.ones_like(denom))
    return total / denom
