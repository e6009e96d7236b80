"""Registered multi-label classification heads of ``MultiLabelClassifier``.

* ``MultiLabelClsHead`` (MODELS): GAP + linear; its CAM is the linear layer applied at every
  position.
* ``MDCHead`` (MODELS): dilated 3x3 conv classifiers, CAM = H_0 + mean(H_3, H_6, H_9).

Both train under BCE on the image-level label vectors; the CAM math lives in
:mod:`wsss_mmseg.classic.cam`.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor

from ..classic.cam import class_activation_maps, mdc_fuse

__all__ = ['MultiLabelClsHead', 'MDCHead']


def _bce(logits: Tensor, targets: Tensor) -> Tensor:
    if logits.shape != targets.shape:
        raise ValueError(f'logits {tuple(logits.shape)} and label vectors '
                         f'{tuple(targets.shape)} differ in shape')
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))


@MODELS.register_module()
class MultiLabelClsHead(BaseModule):
    """GAP + linear multi-label classification head; its CAM is the linear layer per position.

    Args:
        in_channels: Channels of the selected feature map.
        num_classes: Number of foreground classes.
        in_index: Which backbone/neck output to use (default the last).
        dropout_ratio: Dropout before the linear layer (training only).
        loss_weight: Weight of the BCE loss.
        init_cfg: mmengine init config (default normal std 0.01 on the linear layer).
    """

    def __init__(self, in_channels: int, num_classes: int, *, in_index: int = -1,
                 dropout_ratio: float = 0.0, loss_weight: float = 1.0,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg or dict(type='Normal', std=0.01, layer='Linear'))
        if num_classes < 1:
            raise ValueError(f'num_classes must be >= 1, got {num_classes}')
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.in_index = int(in_index)
        self.loss_weight = float(loss_weight)
        self.dropout = nn.Dropout(dropout_ratio) if dropout_ratio > 0 else nn.Identity()
        self.fc = nn.Linear(self.in_channels, self.num_classes)

    def _select(self, feats: Sequence[Tensor]) -> Tensor:
        x = feats[self.in_index] if isinstance(feats, (list, tuple)) else feats
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'{type(self).__name__} expects a (B, {self.in_channels}, h, w) '
                             f'feature map at in_index {self.in_index}, got {tuple(x.shape)}')
        return x

    def forward(self, feats: Sequence[Tensor]) -> List[Tensor]:
        """Per-branch logits (one branch here): ``[ (B, K) ]``."""
        x = self._select(feats)
        return [self.fc(self.dropout(x.mean(dim=(2, 3))))]

    def logits(self, feats: Sequence[Tensor]) -> Tensor:
        """``(B, K)`` logits used for prediction (mean over branches)."""
        outs = self.forward(feats)
        return outs[0] if len(outs) == 1 else torch.stack(outs, 0).mean(0)

    def loss(self, feats: Sequence[Tensor], targets: Tensor) -> Dict[str, Tensor]:
        """BCE of every branch against the ``(B, K)`` label vectors (mean over branches)."""
        outs = self.forward(feats)
        loss = sum(_bce(o, targets) for o in outs) / len(outs)
        return dict(loss_cls=self.loss_weight * loss)

    def class_maps(self, feats: Sequence[Tensor]) -> Tensor:
        """``(B, K, h, w)`` raw CAMs (linear weights applied at every position, no bias)."""
        return class_activation_maps(self._select(feats), self.fc.weight)


@MODELS.register_module()
class MDCHead(MultiLabelClsHead):
    """Multi-dilated-convolution head (MDC): one 3x3 conv classifier per dilation rate.

    Branch ``d`` produces class maps ``H_d = conv_d(F)`` and logits ``GAP(H_d)``;
    training averages the BCE of all branches; the localisation map is
    ``H_{d0} + mean(H_d for the other rates)`` (spec: ``H_0 + mean(H_3, H_6, H_9)``),
    the first rate being the undilated one.

    Args:
        in_channels: Channels of the selected feature map.
        num_classes: Number of foreground classes.
        dilations: Dilation rates, the first is the base branch (default (1, 3, 6, 9)).
        in_index: Which backbone/neck output to use.
        dropout_ratio: Dropout on the feature map (training only).
        loss_weight: Weight of the BCE loss.
        init_cfg: mmengine init config (default normal std 0.01 on the convs).
    """

    def __init__(self, in_channels: int, num_classes: int, *,
                 dilations: Sequence[int] = (1, 3, 6, 9), in_index: int = -1,
                 dropout_ratio: float = 0.0, loss_weight: float = 1.0,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(in_channels, num_classes, in_index=in_index, dropout_ratio=0.0,
                         loss_weight=loss_weight,
                         init_cfg=init_cfg or dict(type='Normal', std=0.01, layer='Conv2d'))
        if len(dilations) == 0 or any(int(d) < 1 for d in dilations):
            raise ValueError(f'dilations must be >= 1, got {list(dilations)}')
        del self.fc
        self.dilations = tuple(int(d) for d in dilations)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else nn.Identity()
        self.branches = nn.ModuleList(
            nn.Conv2d(self.in_channels, self.num_classes, 3, padding=d, dilation=d)
            for d in self.dilations)

    def _branch_maps(self, feats: Sequence[Tensor], *, bias: bool) -> List[Tensor]:
        x = self.dropout(self._select(feats))
        maps = [conv(x) for conv in self.branches]
        if not bias:
            maps = [m - conv.bias.view(1, -1, 1, 1) for m, conv in zip(maps, self.branches)]
        return maps

    def forward(self, feats: Sequence[Tensor]) -> List[Tensor]:
        """Per-branch logits ``GAP(H_d)``, each ``(B, K)``."""
        return [m.mean(dim=(2, 3)) for m in self._branch_maps(feats, bias=True)]

    def class_maps(self, feats: Sequence[Tensor]) -> Tensor:
        """``(B, K, h, w)`` fused map ``H_first + mean(H_rest)`` (biases excluded)."""
        return mdc_fuse(self._branch_maps(feats, bias=False))
