"""``MixupCAMClassifier`` (MODELS): Mixup-CAM (Chang et al., BMVC 2020) = a multi-label classifier
trained on Mixup batches with the entropy and concentration regularisers of its CAMs.

Mixup itself is the data preprocessor's (``MultiLabelDataPreProcessor(mixup=dict(alpha=...))``);
the regularisers (:func:`wsss_mmseg.classic.mixup.cam_entropy_loss`,
:func:`~wsss_mmseg.classic.mixup.cam_concentration_loss`) act on the raw CAMs of the classes
present in the (mixed) label vector. Mixup-CAM has no public code and the spec gives no weights
or formulas for the regularisers: the formulations and default weights here are ours (see the
functions), to be tuned on val.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

from mmseg.registry import MODELS
from torch import Tensor

from ..classic.mixup import cam_concentration_loss, cam_entropy_loss
from .classic import MultiLabelClassifier, _label_vectors

__all__ = ['MixupCAMClassifier']


@MODELS.register_module()
class MixupCAMClassifier(MultiLabelClassifier):
    """Multi-label classifier + Mixup-CAM's CAM regularisers.

    Args:
        entropy_weight: Weight of ``loss_ent`` (0 disables it).
        concentration_weight: Weight of ``loss_con`` (0 disables it).
        **kwargs: ``MultiLabelClassifier`` arguments (``equivariance`` is not supported).
    """

    def __init__(self, *, entropy_weight: float = 0.1, concentration_weight: float = 0.1,
                 **kwargs: Any) -> None:
        if kwargs.get('equivariance') is not None:
            raise ValueError('MixupCAMClassifier does not combine with equivariance (SEAM); use '
                             'MultiLabelClassifier for SEAM')
        super().__init__(**kwargs)
        if entropy_weight < 0 or concentration_weight < 0:
            raise ValueError(f'regulariser weights must be >= 0, got entropy_weight='
                             f'{entropy_weight}, concentration_weight={concentration_weight}')
        if getattr(self.cls_head, 'uses_labels', False):
            raise ValueError(f'{type(self.cls_head).__name__} needs the labels for its maps; '
                             'use MultiLabelClsHead or MDCHead with MixupCAMClassifier')
        self.entropy_weight = float(entropy_weight)
        self.concentration_weight = float(concentration_weight)

    def loss(self, inputs: Tensor, data_samples: Sequence[Any]) -> Dict[str, Tensor]:
        """BCE (+ ``loss_ent``, ``loss_con`` on the CAMs of the present classes)."""
        targets = _label_vectors(data_samples).to(inputs.device)
        feats = self.extract_feat(inputs)
        losses = self.cls_head.loss(feats, targets)
        cams = self.cls_head.class_maps(feats)
        if self.entropy_weight > 0:
            losses['loss_ent'] = self.entropy_weight * cam_entropy_loss(cams, targets)
        if self.concentration_weight > 0:
            losses['loss_con'] = self.concentration_weight * cam_concentration_loss(cams, targets)
        return losses
