"""``CGLLoss``: the confidence-guided loss of CLIP-ES as an mmseg loss module.

Use it as the ``loss_decode`` of any standard mmseg decode or auxiliary head::

    decode_head=dict(type='ASPPHead', ...,
                     loss_decode=dict(type='CGLLoss', mu=0.95, loss_weight=1.0))

The head calls it like every mmseg loss,
``loss(seg_logits, seg_label, weight=seg_weight, ignore_index=head.ignore_index)``
with logits already resized to the label size and ``seg_label`` of shape
``(B, H, W)``. The per-pixel confidence is not part of that call: it is read from
:mod:`wsss_mmseg.models.batch_context`, where
:class:`~wsss_mmseg.models.data_preprocessor.PseudoLabelDataPreProcessor` put
the padded batch confidence ``(B, H, W)`` for the current training batch. Its
shape must equal the label's; the math is
:func:`wsss_mmseg.losses.cgl.cgl_cross_entropy` (pixels with confidence below
``mu`` are ignored exactly like ``ignore_index``; ``soft`` also weights kept
pixels by their confidence).

Without a published confidence (pipeline without ``LoadPseudoLabel`` /
``PackSegInputsWithConfidence``, or a data preprocessor other than
``PseudoLabelDataPreProcessor``) the loss raises, unless ``mu == 0`` and
``soft=False``: then it is plain cross-entropy on the masks.

``mu`` is a validated attribute: a hook may change it during training
(``runner.model.decode_head.loss_decode.mu = 0.9``), and
``--cfg-options model.decode_head.loss_decode.mu=0.9`` sets it from the command line.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch.nn as nn
from mmseg.registry import MODELS
from torch import Tensor

from ..losses.cgl import cgl_cross_entropy, check_mu
from . import batch_context

__all__ = ['CGLLoss']


@MODELS.register_module()
class CGLLoss(nn.Module):
    """Cross-entropy on pseudo masks that ignores pixels with confidence below ``mu``.

    Args:
        mu: Confidence threshold in ``[0, 1]`` (CLIP-ES: 0.95). 0 = plain CE.
        soft: Also weight the kept pixels by their confidence.
        ignore_index: Ignored label value; must equal the head's ``ignore_index``.
        avg_non_ignore: Average over kept pixels (True) or over all pixels (False),
            as mmseg's ``CrossEntropyLoss``.
        class_weight: Per-class weights: a list, or a ``.npy``/json/pkl file as
            accepted by mmseg's ``CrossEntropyLoss``; None for no weighting.
        loss_weight: Multiplier of the loss.
        loss_name: Key of the loss in the head's loss dict (must start with
            ``loss_`` to be back-propagated).
    """

    def __init__(self, *, mu: float = 0.95, soft: bool = False, ignore_index: int = 255,
                 avg_non_ignore: bool = True,
                 class_weight: Optional[Union[Sequence[float], str]] = None,
                 loss_weight: float = 1.0, loss_name: str = 'loss_cgl') -> None:
        super().__init__()
        from mmseg.models.losses.utils import get_class_weight
        self.mu = mu
        self.soft = bool(soft)
        self.ignore_index = int(ignore_index)
        self.avg_non_ignore = bool(avg_non_ignore)
        cw = get_class_weight(class_weight)
        self.class_weight = None if cw is None else [float(v) for v in list(cw)]
        self.loss_weight = float(loss_weight)
        self._loss_name = loss_name

    @property
    def mu(self) -> float:
        """Confidence threshold in ``[0, 1]`` (validated on assignment)."""
        return self._mu

    @mu.setter
    def mu(self, value: float) -> None:
        self._mu = check_mu(value)

    @property
    def loss_name(self) -> str:
        """Name of the loss item in the head's loss dict."""
        return self._loss_name

    def forward(self, cls_score: Tensor, label: Tensor, weight: Optional[Tensor] = None,
                ignore_index: Optional[int] = None, reduction_override: Optional[str] = None,
                avg_factor: Optional[float] = None, **kwargs: Any) -> Tensor:
        """Compute the loss for one head.

        Args:
            cls_score: Logits ``(B, C, H, W)`` at label resolution.
            label: Labels ``(B, H, W)``.
            weight: Optional per-pixel weights ``(B, H, W)`` (e.g. from OHEM).
            ignore_index: The head's ignore index; None = this loss's.
            reduction_override: ``'none'``, ``'mean'`` or ``'sum'`` instead of ``'mean'``.
            avg_factor: Not supported (must be None).
            **kwargs: Not supported (must be empty).

        Returns:
            The weighted loss (scalar, or ``(B, H, W)`` for ``reduction_override='none'``).

        Raises:
            ValueError: Mismatching ``ignore_index``; no or mis-shaped batch
                confidence; bad inputs (see ``cgl_cross_entropy``).
            TypeError: Unsupported keyword arguments.
        """
        if kwargs:
            raise TypeError(f'CGLLoss got unsupported keyword arguments {sorted(kwargs)}')
        if avg_factor is not None:
            raise ValueError('CGLLoss does not support avg_factor')
        if ignore_index is not None and int(ignore_index) != self.ignore_index:
            raise ValueError(f'the head passes ignore_index={ignore_index} but CGLLoss has '
                             f'ignore_index={self.ignore_index}; set both to the same value')
        confidence = batch_context.get_confidence()
        if confidence is None:
            if self.mu > 0 or self.soft:
                raise ValueError(
                    f'CGLLoss(mu={self.mu}, soft={self.soft}) found no batch confidence. Train '
                    'with LoadPseudoLabel + PackSegInputsWithConfidence in the pipeline and '
                    "data_preprocessor=dict(type='PseudoLabelDataPreProcessor', ...), or use "
                    'mu=0 and soft=False for plain cross-entropy')
        elif tuple(confidence.shape) != tuple(label.shape):
            raise ValueError(f'batch confidence shape {tuple(confidence.shape)} differs from the '
                             f'label shape {tuple(label.shape)} seen by the loss')
        loss = cgl_cross_entropy(
            cls_score, label, confidence, mu=self.mu, ignore_index=self.ignore_index,
            soft=self.soft, class_weight=self.class_weight, avg_non_ignore=self.avg_non_ignore,
            reduction=reduction_override or 'mean', pixel_weight=weight)
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        return (f'mu={self.mu}, soft={self.soft}, ignore_index={self.ignore_index}, '
                f'avg_non_ignore={self.avg_non_ignore}, loss_weight={self.loss_weight}, '
                f'loss_name={self.loss_name!r}')
