"""Registered background / refinement post-processors of spec maskclip_pacl.md §6.4:
``ProbBackground``, ``AreaBackground``, ``PAMR``. Thin wrappers over
:mod:`wsss_mmseg.postprocess.background` and :mod:`wsss_mmseg.postprocess.pamr`; they take any
class-wise maps (MaskCLIP logits / probabilities, CLIP-ES or PACL CAMs), batched ``(B, K, h, w)``
or single ``(K, h, w)``.
"""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
from mmseg.registry import MODELS
from torch import Tensor

from ..postprocess.background import area_background, prob_background
from ..postprocess.pamr import pamr

__all__ = ['ProbBackground', 'AreaBackground', 'PAMR']


def _batched(maps: Union[Tensor, np.ndarray]):
    maps = torch.as_tensor(maps)
    single = maps.dim() == 3
    return (maps[None] if single else maps), single


@MODELS.register_module()
class ProbBackground:
    """Background where the best class probability is below ``thresh`` (spec §1.7 b, §5.1 ``prob_thd``).

    Args:
        thresh: Probability threshold in ``(0, 1]`` (SCLIP/NACLIP VOC-21: 0.1, ClearCLIP VOC-21: 0.5).
        scale: With ``apply_softmax``: ``P = softmax_c(scale * maps)`` (the logit scale, e.g. 40-100).
        apply_softmax: Softmax over classes first (cosine logits) or take the maps as probabilities.
    """

    def __init__(self, thresh: float = 0.1, scale: float = 100.0, apply_softmax: bool = True) -> None:
        prob_background(torch.zeros(1, 1, 1, 1), thresh=thresh)  # validates thresh
        self.thresh = float(thresh)
        self.scale = float(scale)
        self.apply_softmax = bool(apply_softmax)

    def __call__(self, maps: Union[Tensor, np.ndarray]) -> Tensor:
        """``(B, 1 + K, h, w)`` (or ``(1 + K, h, w)``): background indicator then probabilities."""
        x, single = _batched(maps)
        x = x.float()
        probs = (self.scale * x).softmax(dim=1) if self.apply_softmax else x
        out = prob_background(probs, thresh=self.thresh)
        return out[0] if single else out


@MODELS.register_module()
class AreaBackground:
    """Suppress foreground classes covering less than ``thresh`` of the predicted foreground
    (spec §1.7 c, §5.1 ``area_thd``); the maps' channel 0 is background (e.g. after ``ProbBackground``).

    Args:
        thresh: Minimum foreground share in ``[0, 1)`` (SCLIP VOC-21: 0.1).
        fill: Score of a suppressed class (0 for probabilities).
    """

    def __init__(self, thresh: float = 0.1, fill: float = 0.0) -> None:
        area_background(torch.zeros(1, 2, 1, 1), thresh=thresh)  # validates thresh
        self.thresh = float(thresh)
        self.fill = float(fill)

    def __call__(self, maps: Union[Tensor, np.ndarray]) -> Tensor:
        """Maps of the same shape with small foreground classes filled."""
        x, single = _batched(maps)
        out = area_background(x.float(), thresh=self.thresh, fill=self.fill)
        return out[0] if single else out


@MODELS.register_module()
class PAMR:
    """Pixel-adaptive mask refinement (spec §5.3/§6.4; NACLIP: 10 iterations, dilations (8, 16)).

    Args:
        iters: Propagation steps.
        dilations: Neighbourhood dilations in pixels.
    """

    def __init__(self, iters: int = 10, dilations: Sequence[int] = (8, 16)) -> None:
        if int(iters) < 0 or not dilations or min(int(d) for d in dilations) < 1:
            raise ValueError(f'PAMR needs iters >= 0 and dilations >= 1, got iters={iters}, dilations={dilations}')
        self.iters = int(iters)
        self.dilations = tuple(int(d) for d in dilations)

    def __call__(self, maps: Union[Tensor, np.ndarray], *, image: Union[Tensor, np.ndarray]) -> Tensor:
        """Refine maps with an image.

        Args:
            maps: ``(B, K, h, w)`` or ``(K, h, w)`` class maps.
            image: ``(B, 3, H, W)`` float tensor, or one ``(H, W, 3)`` uint8/float RGB array.

        Returns:
            Refined maps at the image size, batched like ``maps``.
        """
        x, single = _batched(maps)
        img = torch.as_tensor(np.asarray(image)) if isinstance(image, np.ndarray) else torch.as_tensor(image)
        if img.dim() == 3 and img.shape[-1] == 3:
            img = img.permute(2, 0, 1)[None]
        out = pamr(img.float().to(x.device), x, iters=self.iters, dilations=self.dilations)
        return out[0] if single else out
