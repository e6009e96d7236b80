"""AE-PSL's online "prohibitive segmentation learning" labels (Wei et al., CVPR 2017).

Spec (``classic_wsss.md``, AE-PSL row: "3 erasing rounds ... PSL online seg; saliency for bg").
The segmentation branch is supervised by the offline label (mined regions + saliency
background, :func:`wsss_mmseg.classic.saliency.ae_psl_labels`) where it is decided, and by an
online label elsewhere: the segmentation probabilities of the image's classes weighted by the
classification branch's confidence, the classes absent from the image-level labels prohibited
(weight 0), the background weighted 1:

``online(u) = argmax_{c in {bg} + T} w_c p_{u,c}``, ``w_bg = 1``, ``w_c = sigmoid(s_c)``.

Only torch is imported here.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ['psl_online_labels', 'merge_offline_online']


def psl_online_labels(seg_probs: Tensor, cls_scores: Tensor, labels: Tensor) -> Tensor:
    """Online PSL labels.

    Args:
        seg_probs: ``(B, 1 + K, h, w)`` softmax of the segmentation branch.
        cls_scores: ``(B, K)`` classification probabilities (sigmoid).
        labels: ``(B, K)`` image-level labels (``> 0`` = present).

    Returns:
        ``(B, h, w)`` int64 labels (0 background, ``c + 1`` class ``c``).
    """
    b, c1 = seg_probs.shape[:2]
    if cls_scores.shape != (b, c1 - 1) or labels.shape != (b, c1 - 1):
        raise ValueError(f'cls_scores {tuple(cls_scores.shape)} and labels {tuple(labels.shape)} '
                         f'must be (B, K) for seg_probs {tuple(seg_probs.shape)}')
    w = torch.cat([torch.ones_like(cls_scores[:, :1]), cls_scores * (labels > 0)], dim=1)
    return (seg_probs.detach() * w.detach()[..., None, None]).argmax(dim=1)


def merge_offline_online(offline: Tensor, online: Tensor, *, ignore_index: int = 255) -> Tensor:
    """The offline label where it is decided, the online label elsewhere."""
    if offline.shape != online.shape:
        raise ValueError(f'offline {tuple(offline.shape)} and online {tuple(online.shape)} '
                         'labels differ in shape')
    return torch.where(offline == ignore_index, online, offline.long())
