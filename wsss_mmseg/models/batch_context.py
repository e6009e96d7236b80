"""Process-local hand-over of the batch confidence map from the data preprocessor to the loss.

mmseg's decode heads call their losses as ``loss(seg_logits, seg_label,
weight=..., ignore_index=...)``: there is no way to pass a per-pixel confidence
through a standard head. :class:`~wsss_mmseg.models.data_preprocessor.PseudoLabelDataPreProcessor`
therefore publishes the padded, stacked confidence ``(B, H, W)`` of the current
training batch here (``set_confidence``) right before the model's forward, and
:class:`~wsss_mmseg.models.cgl_loss.CGLLoss` reads it (``get_confidence``). In
evaluation mode, or for batches without confidence, the preprocessor calls
``clear()``.

The holder is thread-local: one model runs per process (mmengine's DDP uses one
process per device), and the preprocessor and the loss run in the same thread
within one ``train_step``.
"""
from __future__ import annotations

import threading
from typing import Optional

from torch import Tensor

__all__ = ['set_confidence', 'get_confidence', 'clear']

_STATE = threading.local()


def set_confidence(confidence: Tensor) -> None:
    """Publish the confidence of the current training batch.

    Args:
        confidence: Float tensor ``(B, H, W)``, aligned with the batch labels.

    Raises:
        ValueError: Not a 3-D floating point tensor.
    """
    if not isinstance(confidence, Tensor) or confidence.ndim != 3 \
            or not confidence.is_floating_point():
        raise ValueError('batch confidence must be a floating point tensor (B, H, W), got '
                         f'{getattr(confidence, "shape", type(confidence).__name__)} '
                         f'{getattr(confidence, "dtype", "")}')
    _STATE.confidence = confidence


def get_confidence() -> Optional[Tensor]:
    """The confidence published for the current batch, or None."""
    return getattr(_STATE, 'confidence', None)


def clear() -> None:
    """Forget the published confidence."""
    _STATE.confidence = None
