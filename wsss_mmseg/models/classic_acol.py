"""``ACoLHead`` (MODELS): ACoL's two complementary classifiers for ``MultiLabelClassifier``.

Math in :mod:`wsss_mmseg.classic.acol`. Branch A and branch B each are
``num_convs`` x (3x3 conv + ReLU) + a 1x1 conv to ``K`` class maps; logits = GAP of the
maps. Training: B sees the shared features with A's regions of the labelled classes
(min-max normalised map ``> delta``) set to 0; loss = mean of both branches' BCE.
Localisation map = ``max(N(A), N(B))``, B evaluated on the features erased by A's regions
of the classes being mapped (the labels given to the generator; without labels the
classes A predicts with probability > 0.5).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from mmseg.registry import MODELS
from torch import Tensor

from ..classic.acol import acol_erase_mask, acol_fuse, erase_features
from .classic_heads import MultiLabelClsHead, _bce

__all__ = ['ACoLHead']


def _branch(in_channels: int, channels: int, num_convs: int, num_classes: int) -> nn.Sequential:
    layers: List[nn.Module] = []
    c = in_channels
    for _ in range(num_convs):
        layers += [nn.Conv2d(c, channels, 3, padding=1), nn.ReLU(inplace=True)]
        c = channels
    layers.append(nn.Conv2d(c, num_classes, 1))
    return nn.Sequential(*layers)


@MODELS.register_module()
class ACoLHead(MultiLabelClsHead):
    """Adversarial complementary learning head (two classifiers, erasing between them).

    Args:
        in_channels: Channels of the selected feature map.
        num_classes: Number of foreground classes.
        delta: Erasing threshold on A's min-max normalised maps (spec: 0.6-0.9).
        channels: Width of the 3x3 convs of each branch.
        num_convs: 3x3 conv layers per branch before the 1x1 classifier (0 = linear).
        in_index: Which backbone/neck output to use.
        loss_weight: Weight of the BCE loss.
        init_cfg: mmengine init config.
    """

    uses_labels = True

    def __init__(self, in_channels: int, num_classes: int, *, delta: float = 0.6,
                 channels: int = 512, num_convs: int = 1, in_index: int = -1,
                 loss_weight: float = 1.0, init_cfg: Optional[dict] = None) -> None:
        super().__init__(in_channels, num_classes, in_index=in_index, dropout_ratio=0.0,
                         loss_weight=loss_weight,
                         init_cfg=init_cfg or dict(type='Normal', std=0.01, layer='Conv2d'))
        if not 0.0 < float(delta) < 1.0:
            raise ValueError(f'ACoLHead delta must be in (0, 1), got {delta}')
        if int(num_convs) < 0:
            raise ValueError(f'num_convs must be >= 0, got {num_convs}')
        del self.fc
        self.delta = float(delta)
        self.branch_a = _branch(self.in_channels, int(channels), int(num_convs), self.num_classes)
        self.branch_b = _branch(self.in_channels, int(channels), int(num_convs), self.num_classes)

    @staticmethod
    def _maps(branch: nn.Sequential, x: Tensor, *, bias: bool) -> Tensor:
        maps = branch(x)
        if not bias:
            maps = maps - branch[-1].bias.view(1, -1, 1, 1)
        return maps

    def _erased(self, x: Tensor, maps_a: Tensor, targets: Tensor) -> Tensor:
        return erase_features(x, acol_erase_mask(maps_a.detach(), targets, delta=self.delta))

    def forward(self, feats: Sequence[Tensor]) -> List[Tensor]:
        """Branch-A logits (prediction uses classifier A)."""
        return [self._maps(self.branch_a, self._select(feats), bias=True).mean(dim=(2, 3))]

    def loss(self, feats: Sequence[Tensor], targets: Tensor) -> Dict[str, Tensor]:
        """Mean BCE of A and of B on the features erased by A's labelled-class regions."""
        x = self._select(feats)
        maps_a = self._maps(self.branch_a, x, bias=True)
        maps_b = self._maps(self.branch_b, self._erased(x, maps_a, targets), bias=True)
        loss_a = _bce(maps_a.mean(dim=(2, 3)), targets)
        loss_b = _bce(maps_b.mean(dim=(2, 3)), targets)
        return dict(loss_cls=self.loss_weight * 0.5 * (loss_a + loss_b))

    def class_maps(self, feats: Sequence[Tensor],
                   classes: Optional[Sequence[int]] = None) -> Tensor:
        """``(B, K, h, w)`` fused maps ``max(N(A), N(B))`` (biases excluded).

        Args:
            feats: Backbone features.
            classes: Classes whose A regions are erased before B (the image's labels);
                None = the classes A predicts with probability > 0.5.
        """
        x = self._select(feats)
        maps_a = self._maps(self.branch_a, x, bias=False)
        if classes is None:
            logits = maps_a.mean(dim=(2, 3)) + self.branch_a[-1].bias.view(1, -1)
            targets = (torch.sigmoid(logits) > 0.5).to(x.dtype)
        else:
            targets = torch.zeros(x.shape[0], self.num_classes, device=x.device, dtype=x.dtype)
            targets[:, [int(c) for c in classes]] = 1.0
        maps_b = self._maps(self.branch_b, self._erased(x, maps_a, targets), bias=False)
        return acol_fuse(maps_a, maps_b)
