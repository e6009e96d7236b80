"""AffinityNet (Ahn & Kwak 2018): a pixel-affinity embedding trained on confident CAM regions.

Thin registered wrappers over :mod:`wsss_mmseg.classic.affinity`:

* ``AffinityHead`` (MODELS): 1x1 conv of one or several feature maps (resized to the
  finest selected one), concatenated, then a 1x1 conv to the embedding ``f``.
* ``AffinityNet`` (MODELS, a segmentor for ``mim train``): any mmseg backbone +
  ``AffinityHead``; the training target is the confident-region map packed as
  ``gt_sem_seg`` (``LoadConfidentRegions`` + ``PackSegInputs``), reduced to the embedding
  grid by nearest neighbour; the loss is AffinityNet's ``L_bg/4 + L_fg/4 + L_neg/2`` on the
  pairs within ``radius``. Use the trained net through ``RandomWalk`` /
  ``RandomWalkGenerator`` (:mod:`wsss_mmseg.models.random_walk`).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.models.segmentors.base import BaseSegmentor
from mmseg.registry import MODELS
from torch import Tensor

from ..classic.affinity import (affinity_labels, affinity_loss, downscale_label, pair_affinity,
                                radius_offsets)

__all__ = ['AffinityHead', 'AffinityNet']


@MODELS.register_module()
class AffinityHead(BaseModule):
    """Affinity embedding from one or several backbone feature maps.

    Args:
        in_channels: Channels of each selected feature map.
        in_index: Indices of the selected feature maps (the first sets the
            embedding resolution).
        channels: Output channels of each per-level 1x1 conv.
        embed_dims: Embedding channels ``D``.
        init_cfg: mmengine init config.
    """

    def __init__(self, in_channels: Union[int, Sequence[int]],
                 in_index: Union[int, Sequence[int]] = -1, channels: int = 64,
                 embed_dims: int = 448, init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg or dict(type='Kaiming', layer='Conv2d'))
        ins = [int(in_channels)] if isinstance(in_channels, int) else [int(c) for c in in_channels]
        idx = [int(in_index)] if isinstance(in_index, int) else [int(i) for i in in_index]
        if len(ins) != len(idx) or not ins:
            raise ValueError(f'in_channels {ins} and in_index {idx} must have the same, '
                             'non-zero length')
        if int(channels) < 4 or int(channels) % 4:
            raise ValueError(f'AffinityHead channels must be a multiple of 4 (GroupNorm with 4 '
                             f'groups), got {channels}')
        self.in_channels, self.in_index = ins, idx
        self.embed_dims = int(embed_dims)
        self.reduce = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, channels, 1, bias=False), nn.GroupNorm(4, channels),
                          nn.ReLU(inplace=True)) for c in ins)
        self.embed = nn.Conv2d(channels * len(ins), self.embed_dims, 1)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        """``(B, D, h, w)`` embedding at the resolution of ``feats[in_index[0]]``."""
        xs = []
        for conv, i, c in zip(self.reduce, self.in_index, self.in_channels):
            x = feats[i]
            if x.dim() != 4 or x.shape[1] != c:
                raise ValueError(f'AffinityHead expects a (B, {c}, h, w) map at in_index {i}, '
                                 f'got {tuple(x.shape)}')
            x = conv(x)
            if xs and x.shape[2:] != xs[0].shape[2:]:
                x = F.interpolate(x, size=xs[0].shape[2:], mode='bilinear', align_corners=False)
            xs.append(x)
        return self.embed(torch.cat(xs, dim=1))


@MODELS.register_module()
class AffinityNet(BaseSegmentor):
    """Backbone + ``AffinityHead`` trained on confident CAM regions (``gt_sem_seg``).

    Args:
        backbone: Backbone config.
        aff_head: ``AffinityHead`` config.
        neck: Optional neck config.
        radius: Pairs within this distance on the embedding grid (IRN/PSA: 5).
        ignore_index: Uncertain pixels of the region map.
        data_preprocessor: ``SegDataPreProcessor`` config.
        train_cfg: Unused (mmseg signature).
        test_cfg: Unused (mmseg signature).
        pretrained: Backbone checkpoint.
        init_cfg: mmengine init config.
    """

    def __init__(self, backbone: dict, aff_head: dict, neck: Optional[dict] = None,
                 radius: int = 5, ignore_index: int = 255,
                 data_preprocessor: Optional[dict] = None, train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None, pretrained: Optional[str] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        backbone = dict(backbone)
        if pretrained is not None:
            backbone['init_cfg'] = dict(type='Pretrained', checkpoint=pretrained)
        self.backbone = MODELS.build(backbone)
        if neck is not None:
            self.neck = MODELS.build(neck)
        self.aff_head = MODELS.build(aff_head)
        self.radius = int(radius)
        self.offsets = radius_offsets(self.radius)
        self.ignore_index = int(ignore_index)
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg

    def extract_feat(self, inputs: Tensor) -> List[Tensor]:
        """Backbone (+ neck) feature maps."""
        x = self.backbone(inputs)
        if self.with_neck:
            x = self.neck(x)
        return list(x) if isinstance(x, (list, tuple)) else [x]

    def embed(self, inputs: Tensor) -> Tensor:
        """``(B, D, h, w)`` affinity embedding of a normalised batch."""
        return self.aff_head(self.extract_feat(inputs))

    def loss(self, inputs: Tensor, data_samples: Sequence[Any]) -> Dict[str, Tensor]:
        """AffinityNet loss on the pairs of confident pixels."""
        labels = []
        for i, s in enumerate(data_samples):
            if 'gt_sem_seg' not in s:
                raise KeyError(f'data sample {i} ({s.metainfo.get("img_path")}) has no '
                               'gt_sem_seg; load the targets with LoadConfidentRegions and '
                               'pack them with PackSegInputs')
            labels.append(s.gt_sem_seg.data.reshape(s.gt_sem_seg.data.shape[-2:]))
        emb = self.embed(inputs)
        target = downscale_label(torch.stack(labels, 0).to(emb.device), emb.shape[2:])
        pair_labels = affinity_labels(target, self.offsets, ignore_index=self.ignore_index)
        return affinity_loss(pair_affinity(emb, self.offsets), pair_labels)

    def _forward(self, inputs: Tensor, data_samples: Any = None) -> Tensor:
        """The embedding (``mode='tensor'``)."""
        return self.embed(inputs)

    def encode_decode(self, inputs: Tensor, batch_data_samples: Any = None) -> Tensor:
        """The embedding, bilinearly resized to the input size."""
        return F.interpolate(self.embed(inputs), size=inputs.shape[2:], mode='bilinear',
                             align_corners=False)

    def predict(self, inputs: Tensor, data_samples: Any = None) -> Any:
        """Not a segmenter: refuse with the way to evaluate it."""
        raise RuntimeError('AffinityNet predicts pixel affinities, not segmentation maps; '
                           'evaluate its random-walk pseudo labels with tools/generate_pseudo.py '
                           "(generator=dict(type='RandomWalkGenerator', ...), eval.json) instead "
                           'of a val/test loop')
