"""Registered SEAM parts (Wang et al., CVPR 2020; spec classic_wsss.md, SEAM row): the Siamese
loss ``SEAMLoss`` and the pixel correlation module ``SEAMPCM``. Thin wrappers over
:mod:`wsss_mmseg.classic.seam_pcm` (pure math).

``MultiLabelClassifier(equivariance=dict(type='SEAMLoss', ...))`` trains SEAM:

* both views (``I`` and ``T(I)``, bilinear down-scaling by ``scale``) are classified; the two BCE
  terms are **averaged** (``loss_cls`` and ``loss_cls_scaled`` carry half each, mmengine sums them);
* ER: ``mean | T(N(A(I))) * y - N(A(T(I))) * y |`` on the foreground CAMs, ``N`` = SEAM's
  min-max normalisation, ``y`` the image labels (absent classes zeroed), compared on the grid of
  the scaled view;
* with ``pcm=dict(...)``: PCM refines each view's CAM with the feature affinity, and ECR ties each
  view's PCM map to the other view's CAM (top 20 % hardest differences, both directions), plus
  the official code's min-pooling term on the PCM maps (``min_pool_weight``).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor, nn

from ..classic.seam import rescale_maps
from ..classic.seam_pcm import (ecr_loss, er_loss, max_norm, min_pool_loss, pcm_propagate, pcm_seed,
                                with_background)

__all__ = ['SEAMPCM', 'SEAMLoss']


@MODELS.register_module()
class SEAMPCM(nn.Module):
    """Pixel correlation module: features of two backbone stages (detached) through 1x1 conv + ReLU,
    concatenated with the image resized to the CAM grid, a last 1x1 conv, then
    :func:`~wsss_mmseg.classic.seam_pcm.pcm_propagate` of :func:`~wsss_mmseg.classic.seam_pcm.pcm_seed`.

    Args:
        in_index: Backbone outputs used (SEAM: the two stages before the CAM stage).
        in_channels: Their channels.
        mid_channels: Width of each stage after its 1x1 conv (SEAM: 64, 128).
        out_channels: Width of the affinity embedding (SEAM: 192).
    """

    def __init__(self, in_index: Sequence[int] = (-3, -2), in_channels: Sequence[int] = (512, 1024),
                 mid_channels: Sequence[int] = (64, 128), out_channels: int = 192) -> None:
        super().__init__()
        if not (len(in_index) == len(in_channels) == len(mid_channels)) or not in_index:
            raise ValueError(f'SEAMPCM: in_index {tuple(in_index)}, in_channels {tuple(in_channels)} and '
                             f'mid_channels {tuple(mid_channels)} must have the same non-zero length')
        self.in_index = tuple(int(i) for i in in_index)
        self.in_channels = tuple(int(c) for c in in_channels)
        self.reduce = nn.ModuleList(nn.Conv2d(c, m, 1, bias=False) for c, m in zip(in_channels, mid_channels))
        self.embed = nn.Conv2d(3 + sum(int(m) for m in mid_channels), int(out_channels), 1, bias=False)
        for conv in self.reduce:
            nn.init.kaiming_normal_(conv.weight)
        nn.init.xavier_uniform_(self.embed.weight, gain=4)

    def features(self, feats: Sequence[Tensor], images: Tensor, grid: Sequence[int]) -> Tensor:
        """``(B, out_channels, h, w)`` affinity embedding on the CAM grid ``(h, w)``."""
        parts = [F.interpolate(images, size=tuple(grid), mode='bilinear', align_corners=True)]
        for idx, c, conv in zip(self.in_index, self.in_channels, self.reduce):
            try:
                x = feats[idx]
            except IndexError:
                raise IndexError(f'SEAMPCM in_index {idx} is not a backbone output ({len(feats)} outputs); set the '
                                 'backbone out_indices to include the PCM stages') from None
            if x.shape[1] != c:
                raise ValueError(f'SEAMPCM: backbone output {idx} has {x.shape[1]} channels, in_channels says {c}')
            x = F.relu(conv(x.detach()))
            if tuple(x.shape[2:]) != tuple(grid):
                x = F.interpolate(x, size=tuple(grid), mode='bilinear', align_corners=True)
            parts.append(x)
        return self.embed(torch.cat(parts, dim=1))

    def forward(self, cam_fg: Tensor, feats: Sequence[Tensor], images: Tensor) -> Tensor:
        """Raw PCM maps ``(B, 1 + K, h, w)`` of raw CAMs ``(B, K, h, w)``."""
        grid = cam_fg.shape[2:]
        return pcm_propagate(pcm_seed(cam_fg), self.features(feats, images, grid))


@MODELS.register_module()
class SEAMLoss(nn.Module):
    """SEAM's Siamese losses (see the module docstring).

    Args:
        scale: Down-scaling factor of the second view (SEAM: 0.3).
        loss_weight: Weight of ER.
        normalize: Normalise the CAMs with SEAM's min-max ``N`` before ER (else raw maps).
        pcm: Optional :class:`SEAMPCM` config: adds ECR (``loss_ecr``) and the min-pooling term.
        ecr_weight: Weight of ECR.
        ecr_top_ratio: Fraction of hardest differences averaged by ECR (SEAM: 0.2).
        min_pool_weight: Weight of the official min-pooling term on the PCM maps (``loss_rvmin``,
            averaged over the two views); 0 disables it.
    """

    def __init__(self, scale: float = 0.3, loss_weight: float = 1.0, normalize: bool = True,
                 pcm: Optional[Dict[str, Any]] = None, ecr_weight: float = 1.0, ecr_top_ratio: float = 0.2,
                 min_pool_weight: float = 1.0) -> None:
        super().__init__()
        if not 0 < scale < 1:
            raise ValueError(f'SEAMLoss scale must be in (0, 1), got {scale}')
        if not 0 < ecr_top_ratio <= 1:
            raise ValueError(f'SEAMLoss ecr_top_ratio must be in (0, 1], got {ecr_top_ratio}')
        self.scale = float(scale)
        self.loss_weight = float(loss_weight)
        self.normalize = bool(normalize)
        self.pcm = None
        if pcm is not None:
            cfg = dict(pcm)
            cfg.setdefault('type', 'SEAMPCM')
            self.pcm = MODELS.build(cfg)
        self.ecr_weight = float(ecr_weight)
        self.ecr_top_ratio = float(ecr_top_ratio)
        self.min_pool_weight = float(min_pool_weight)

    def transform(self, images: Tensor) -> Tensor:
        """``T``: down-scale a ``(B, C, H, W)`` batch by :attr:`scale`."""
        h, w = images.shape[2:]
        size = (max(1, int(round(h * self.scale))), max(1, int(round(w * self.scale))))
        return rescale_maps(images, size=size)

    def _norm(self, cams: Tensor) -> Tensor:
        return max_norm(cams) if self.normalize else cams

    def forward(self, cam_original: Tensor, cam_transformed: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """ER between ``A(I)`` ``(B, K, h, w)`` and ``A(T(I))`` ``(B, K, h', w')``.

        Args:
            cam_original: Raw CAMs of the original view.
            cam_transformed: Raw CAMs of the scaled view.
            labels: Optional ``(B, K)`` image labels; absent classes are zeroed in both views.

        Returns:
            ``loss_weight * mean |T(N(A(I))) y - N(A(T(I))) y|``.
        """
        cam_o = rescale_maps(self._norm(cam_original), size=cam_transformed.shape[2:])
        cam_t = self._norm(cam_transformed)
        if labels is not None:
            mask = labels.to(cam_o.dtype)[:, :, None, None]
            cam_o, cam_t = cam_o * mask, cam_t * mask
        return self.loss_weight * er_loss(cam_o, cam_t)

    def siamese_losses(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> Dict[str, Tensor]:
        """All SEAM losses of a batch for a ``MultiLabelClassifier``.

        Args:
            model: The classifier (``extract_feat``, ``cls_head.loss``, ``cls_head.class_maps``).
            inputs: ``(B, 3, H, W)`` normalised batch.
            targets: ``(B, K)`` image labels.

        Returns:
            ``loss_cls``/``loss_cls_scaled`` (half of each view's BCE), ``loss_er`` and, with a PCM,
            ``loss_ecr`` and ``loss_rvmin``.
        """
        scaled = self.transform(inputs)
        feats_o, feats_t = model.extract_feat(inputs), model.extract_feat(scaled)
        losses = {'loss_cls': 0.5 * model.cls_head.loss(feats_o, targets)['loss_cls'],
                  'loss_cls_scaled': 0.5 * model.cls_head.loss(feats_t, targets)['loss_cls']}
        raw_o, raw_t = model.cls_head.class_maps(feats_o), model.cls_head.class_maps(feats_t)
        losses['loss_er'] = self(raw_o, raw_t, targets)
        if self.pcm is None:
            return losses
        grid = raw_t.shape[2:]
        y_full = torch.cat([torch.ones_like(targets[:, :1]), targets], dim=1).to(raw_o.dtype)[:, :, None, None]
        y_fg = y_full[:, 1:]
        cam_o = with_background(rescale_maps(max_norm(raw_o), size=grid) * y_fg)
        cam_t = with_background(max_norm(raw_t) * y_fg)
        rv_o = self.pcm(raw_o, feats_o, inputs)
        rv_t = self.pcm(raw_t, feats_t, scaled)
        pcm_o = rescale_maps(max_norm(rv_o), size=grid) * y_full
        pcm_t = max_norm(rv_t) * y_full
        losses['loss_ecr'] = self.ecr_weight * (
            ecr_loss(cam_t.detach(), pcm_o, top_ratio=self.ecr_top_ratio)
            + ecr_loss(cam_o.detach(), pcm_t, top_ratio=self.ecr_top_ratio))
        if self.min_pool_weight:
            losses['loss_rvmin'] = self.min_pool_weight * 0.5 * (
                min_pool_loss((rv_o * y_full)[:, 1:]) + min_pool_loss((rv_t * y_full)[:, 1:]))
        return losses
