"""Registered dense post-processors of spec maskclip_pacl.md §6.4: MaskCLIP's ``KeySmoothing``
and ``PromptDenoising`` (§1.5, §1.6), ``ProbBackground``, ``AreaBackground``, ``PAMR``. Thin wrappers
over :mod:`wsss_mmseg.postprocess` (pure math); they take any class-wise maps (MaskCLIP logits /
probabilities, CLIP-ES or PACL CAMs), batched ``(B, K, h, w)`` or single ``(K, h, w)``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch
from mmseg.registry import MODELS
from torch import Tensor

from ..postprocess.background import area_background, prob_background
from ..postprocess.key_smoothing import key_smoothing
from ..postprocess.pamr import pamr
from ..postprocess.prompt_denoising import class_confidence, prompt_denoising

__all__ = ['KeySmoothing', 'PromptDenoising', 'ProbBackground', 'AreaBackground', 'PAMR']


def _batched(maps: Union[Tensor, np.ndarray]):
    maps = torch.as_tensor(maps)
    single = maps.dim() == 3
    return (maps[None] if single else maps), single


@MODELS.register_module()
class KeySmoothing:
    """MaskCLIP key smoothing (spec §1.6) of any class-wise maps given last-layer keys.

    ``out_i = sum_j W_ij P_j`` with ``P = softmax_c(scale * maps)`` (or ``P = maps`` with
    ``apply_softmax=False``, e.g. for CAMs) and ``W`` the key cosine matrix (``key_norm='token'``)
    or the official per-channel normalisation (``'legacy_dim1'``); only locations whose max class
    probability is ``< thresh`` are replaced.

    Args:
        thresh: ``ks_thresh`` (1.0).
        scale: Softmax inverse temperature (100).
        key_norm: ``'token'`` or ``'legacy_dim1'``.
        row_norm: ``None``, ``'l1'`` or ``'softmax'`` row normalisation of ``W``.
        apply_softmax: Softmax over classes first (MaskCLIP) or smooth the maps as they are.
    """

    def __init__(self, thresh: float = 1.0, scale: float = 100.0, key_norm: str = 'token',
                 row_norm: Optional[str] = None, apply_softmax: bool = True) -> None:
        self.thresh = float(thresh)
        self.scale = float(scale)
        self.key_norm = key_norm
        self.row_norm = row_norm
        self.apply_softmax = bool(apply_softmax)
        key_smoothing(torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1), key_norm=key_norm, row_norm=row_norm)

    def __call__(self, maps: Union[Tensor, np.ndarray], *, keys: Union[Tensor, np.ndarray]) -> Tensor:
        """Smooth ``(K, h, w)`` or ``(B, K, h, w)`` maps.

        Args:
            maps: Class-wise maps on the key grid.
            keys: ``(C, h, w)`` / ``(h*w, C)`` for unbatched maps, ``(B, C, h, w)`` / ``(B, h*w, C)``
                for batched maps.

        Returns:
            Float32 tensor of the shape of ``maps``.
        """
        maps = torch.as_tensor(maps)
        keys = torch.as_tensor(keys)
        single = maps.dim() == 3
        if single:
            maps, keys = maps[None], keys[None]
        out = key_smoothing(maps, keys, thresh=self.thresh, scale=self.scale, key_norm=self.key_norm,
                            row_norm=self.row_norm, apply_softmax=self.apply_softmax)
        return out[0] if single else out


@MODELS.register_module()
class PromptDenoising:
    """MaskCLIP prompt denoising (spec §1.5): classes whose max-over-locations probability
    (softmax over classes with ``scale``) is below ``thresh`` get ``fill`` logits everywhere.

    Args:
        thresh: ``pd_thresh`` (0.5).
        scale: Softmax inverse temperature (100).
        fill: Logit of removed classes (-100).
    """

    def __init__(self, thresh: float = 0.5, scale: float = 100.0, fill: float = -100.0) -> None:
        if not 0.0 <= thresh <= 1.0:
            raise ValueError(f'PromptDenoising thresh must be in [0, 1], got {thresh}.')
        self.thresh = float(thresh)
        self.scale = float(scale)
        self.fill = float(fill)

    def keep(self, logits: Tensor) -> Tensor:
        """``(B, K)`` bool: the classes kept for each image of ``(B, K, h, w)`` logits."""
        return class_confidence(logits, scale=self.scale) >= self.thresh

    def __call__(self, logits: Tensor) -> Tensor:
        """Denoised ``(B, K, h, w)`` (or ``(K, h, w)``) logits, float32."""
        logits = torch.as_tensor(logits)
        single = logits.dim() == 3
        out, _ = prompt_denoising(logits[None] if single else logits, thresh=self.thresh, scale=self.scale,
                                  fill=self.fill)
        return out[0] if single else out


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
