"""``AEPSLSegmentor`` (MODELS): AE-PSL's segmentation stage with the online PSL branch.

Math in :mod:`wsss_mmseg.classic.psl`. An ``EncoderDecoder`` plus a classification head
(``MultiLabelClsHead``) on the same backbone features. Training:

* ``loss_cls``: BCE of the classification head on the image-level labels (``label_ids`` meta
  key: ``PackSegInputs(meta_keys=(..., 'label_ids'))``);
* ``loss_seg``: cross-entropy of the decode head (at the input size) against the offline label
  (``gt_sem_seg``: mined regions + saliency background, ``SaliencyGuidedLabels(method='ae_psl')``)
  where it is decided, and against the online PSL label elsewhere (segmentation probabilities
  weighted by the classification confidences, absent classes prohibited).

Prediction / ``mim test``: plain ``EncoderDecoder``; ``SegmenterGenerator`` makes pseudo labels.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from mmseg.models.segmentors import EncoderDecoder
from torch import Tensor

from ..classic.psl import merge_offline_online, psl_online_labels

__all__ = ['AEPSLSegmentor']


@MODELS.register_module()
class AEPSLSegmentor(EncoderDecoder):
    """Segmentation with AE-PSL's offline + online (PSL) supervision.

    Args:
        cls_head: ``MultiLabelClsHead`` config on the backbone features (``K`` classes).
        cls_loss_weight: Weight of ``loss_cls``.
        ignore_index: Undecided value of the offline label.
        **kwargs: ``EncoderDecoder`` arguments (decode head with ``1 + K`` classes).
    """

    def __init__(self, *, cls_head: Dict[str, Any], cls_loss_weight: float = 1.0,
                 ignore_index: int = 255, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cls_head = MODELS.build(cls_head)
        if self.cls_head.num_classes + 1 != self.decode_head.num_classes:
            raise ValueError(f'cls_head has {self.cls_head.num_classes} classes but the decode '
                             f'head {self.decode_head.num_classes} (must be 1 + K)')
        self.cls_loss_weight = float(cls_loss_weight)
        self.ignore_index = int(ignore_index)

    def loss(self, inputs: Tensor, data_samples: Sequence[Any]) -> Dict[str, Tensor]:
        """``loss_cls`` + ``loss_seg`` (offline label, online PSL label where undecided)."""
        k = self.cls_head.num_classes
        labels = torch.zeros(len(data_samples), k, device=inputs.device)
        offline = []
        for i, s in enumerate(data_samples):
            if 'gt_sem_seg' not in s or 'label_ids' not in s.metainfo:
                raise KeyError(f'data sample {i} ({s.metainfo.get("img_path")}) needs gt_sem_seg '
                               "and the 'label_ids' meta key (SaliencyGuidedLabels + "
                               "PackSegInputs(meta_keys=(..., 'label_ids')))")
            ids = [int(c) for c in s.metainfo['label_ids']]
            if any(not 0 <= c < k for c in ids):
                raise ValueError(f'label ids {ids} out of range for {k} classes')
            labels[i, ids] = 1.0
            offline.append(s.gt_sem_seg.data.reshape(s.gt_sem_seg.data.shape[-2:]))
        feats = self.extract_feat(inputs)
        cls_logits = self.cls_head.logits(feats)
        loss_cls = F.binary_cross_entropy_with_logits(cls_logits, labels)
        logits = F.interpolate(self.decode_head.forward(feats), size=inputs.shape[2:],
                               mode='bilinear', align_corners=self.decode_head.align_corners)
        online = psl_online_labels(torch.softmax(logits.float(), dim=1),
                                   torch.sigmoid(cls_logits.float()), labels)
        target = merge_offline_online(torch.stack(offline).to(online.device), online,
                                      ignore_index=self.ignore_index)
        loss_seg = F.cross_entropy(logits, target, ignore_index=self.ignore_index)
        return dict(loss_cls=self.cls_loss_weight * loss_cls, loss_seg=loss_seg)
