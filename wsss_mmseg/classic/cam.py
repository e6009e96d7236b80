"""CAM and Grad-CAM math for image classifiers (pure functions, torch only).

* CAM (Zhou et al. 2016): for a classifier ``logit_k = w_k . GAP(F) + b_k`` the
  class activation map is the classifier applied at every position,
  ``CAM_k(x, y) = sum_c w_kc F_c(x, y)`` (:func:`class_activation_maps`).
* Grad-CAM (Selvaraju et al. 2017): ``ReLU(sum_c alpha_kc A_c)`` with
  ``alpha_kc`` the spatial mean of ``d logit_k / d A_c`` at any target layer
  (:func:`grad_cam`). For a GAP + linear head and ``A = F`` the gradient is
  ``w_kc / (h w)`` everywhere, so Grad-CAM = ``ReLU(CAM) / (h w)``.
* MDC (Wei et al. 2018): ``H_0 + mean(H_3, H_6, H_9)`` (:func:`mdc_fuse`).
* Inference-time aggregation (IRN style): ReLU maps of several input scales and
  of the horizontally flipped image, resized to the output size and summed
  (:func:`multi_scale_flip_maps`), then divided by their maximum
  (:func:`normalize_maps`).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['class_activation_maps', 'grad_cam', 'mdc_fuse', 'normalize_maps', 'aggregate_maps',
           'multi_scale_flip_maps', 'feature_affinity']


def class_activation_maps(features: Tensor, weight: Tensor, *,
                          bias: Optional[Tensor] = None) -> Tensor:
    """Apply a linear classifier at every position of a feature map.

    Args:
        features: ``(B, C, h, w)`` feature map (the input of the GAP).
        weight: ``(K, C)`` classifier weights (a ``(K, C, 1, 1)`` conv weight is
            accepted too).
        bias: Optional ``(K,)`` bias added at every position (the CAM of the
            paper has none; ``GAP(CAM) + b`` equals the logits either way).

    Returns:
        ``(B, K, h, w)`` raw (signed) class activation maps.

    Raises:
        ValueError: Shapes do not match.
    """
    if features.dim() != 4:
        raise ValueError(f'features must be (B, C, h, w), got {tuple(features.shape)}')
    if weight.dim() == 4 and weight.shape[2:] == (1, 1):
        weight = weight[:, :, 0, 0]
    if weight.dim() != 2 or weight.shape[1] != features.shape[1]:
        raise ValueError(f'weight must be (K, {features.shape[1]}), got {tuple(weight.shape)}')
    cams = torch.einsum('kc,bchw->bkhw', weight.to(features.dtype), features)
    if bias is not None:
        cams = cams + bias.to(features.dtype).view(1, -1, 1, 1)
    return cams


def grad_cam(activations: Tensor, gradients: Tensor, *, relu: bool = True) -> Tensor:
    """Grad-CAM from the activations of a target layer and the gradients of one score.

    Args:
        activations: ``(B, C, h, w)`` target-layer output.
        gradients: ``(B, C, h, w)`` gradient of the class score w.r.t. it.
        relu: Apply the final ReLU (the paper's definition).

    Returns:
        ``(B, h, w)`` map ``sum_c mean_xy(grad_c) * A_c`` (ReLU'd).

    Raises:
        ValueError: Shapes differ or are not 4-D.
    """
    if activations.dim() != 4 or activations.shape != gradients.shape:
        raise ValueError(f'activations {tuple(activations.shape)} and gradients '
                         f'{tuple(gradients.shape)} must be equal (B, C, h, w) shapes')
    alpha = gradients.mean(dim=(2, 3), keepdim=True)
    cam = (alpha * activations).sum(dim=1)
    return cam.clamp_min(0) if relu else cam


def mdc_fuse(maps: Sequence[Tensor]) -> Tensor:
    """MDC localisation map: ``H_0 + mean(H_1..H_n)`` of the dilated branches.

    Args:
        maps: ``[H_0, H_d1, ..., H_dn]`` equal-shape maps; ``H_0`` is the
            undilated branch (dilation 1), the rest the dilated ones.

    Returns:
        The fused map (same shape). With a single map it is returned as is.

    Raises:
        ValueError: Empty list or shape mismatch.
    """
    if len(maps) == 0:
        raise ValueError('mdc_fuse needs at least one map')
    if any(m.shape != maps[0].shape for m in maps):
        raise ValueError(f'MDC maps differ in shape: {[tuple(m.shape) for m in maps]}')
    if len(maps) == 1:
        return maps[0]
    return maps[0] + torch.stack(list(maps[1:]), dim=0).mean(dim=0)


def normalize_maps(maps: Tensor, *, eps: float = 1e-5) -> Tensor:
    """ReLU, then divide every map by its maximum (values in ``[0, 1]``).

    Args:
        maps: ``(..., h, w)`` maps.
        eps: Added to the maximum (an all-zero map stays zero).

    Returns:
        Maps of the same shape in ``[0, 1)``.
    """
    maps = maps.clamp_min(0)
    peak = maps.flatten(-2).amax(dim=-1)[..., None, None]
    return maps / (peak + eps)


def aggregate_maps(maps: Sequence[Tensor], *, out_hw: Tuple[int, int],
                   flipped: Optional[Sequence[bool]] = None) -> Tensor:
    """Resize ReLU'd maps to one size (bilinear), unflip the flipped ones, sum.

    Args:
        maps: ``(K, h_i, w_i)`` maps of several views of one image.
        out_hw: Output size ``(H, W)``.
        flipped: Per map, whether it belongs to the horizontally flipped image.

    Returns:
        ``(K, H, W)`` sum.

    Raises:
        ValueError: No maps, or a different number of ``flipped`` flags.
    """
    if len(maps) == 0:
        raise ValueError('aggregate_maps needs at least one map')
    flipped = [False] * len(maps) if flipped is None else list(flipped)
    if len(flipped) != len(maps):
        raise ValueError(f'{len(maps)} maps but {len(flipped)} flip flags')
    total = None
    for m, flip in zip(maps, flipped):
        if m.dim() != 3:
            raise ValueError(f'maps must be (K, h, w), got {tuple(m.shape)}')
        r = F.interpolate(m[None].clamp_min(0), size=tuple(out_hw), mode='bilinear',
                          align_corners=False)[0]
        if flip:
            r = r.flip(-1)
        total = r if total is None else total + r
    return total


def multi_scale_flip_maps(map_fn: Callable[[Tensor], Tensor], image: Tensor, *,
                          scales: Sequence[float] = (1.0,), flip: bool = False,
                          out_hw: Optional[Tuple[int, int]] = None) -> Tensor:
    """Sum of the ReLU'd maps of an image at several scales (and flipped).

    Args:
        map_fn: ``(B, 3, h, w) -> (B, K, h', w')`` maps of a batch of images.
        image: ``(3, H, W)`` or ``(1, 3, H, W)`` normalised image.
        scales: Input scale factors (``round(H * s)`` x ``round(W * s)``,
            bilinear); 1.0 uses the image as it is.
        flip: Also run the horizontally flipped image (in the same batch).
        out_hw: Output size; default the image size.

    Returns:
        ``(K, H_out, W_out)`` summed maps (not normalised; see
        :func:`normalize_maps`).

    Raises:
        ValueError: Bad image shape or a non-positive scale.
    """
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise ValueError(f'one image at a time, got a batch of {image.shape[0]}')
        image = image[0]
    if image.dim() != 3:
        raise ValueError(f'image must be (3, H, W), got {tuple(image.shape)}')
    if len(scales) == 0 or any(not s > 0 for s in scales):
        raise ValueError(f'scales must be positive, got {list(scales)}')
    h, w = image.shape[1:]
    out_hw = (int(h), int(w)) if out_hw is None else (int(out_hw[0]), int(out_hw[1]))
    maps, flags = [], []
    for s in scales:
        if float(s) == 1.0:
            x = image[None]
        else:
            size = (max(1, int(round(h * s))), max(1, int(round(w * s))))
            x = F.interpolate(image[None], size=size, mode='bilinear', align_corners=False)
        if flip:
            x = torch.cat([x, x.flip(-1)], dim=0)
        out = map_fn(x)
        maps.append(out[0])
        flags.append(False)
        if flip:
            maps.append(out[1])
            flags.append(True)
    return aggregate_maps(maps, out_hw=out_hw, flipped=flags)


def feature_affinity(features: Tensor, *, temperature: float = 0.1) -> Tensor:
    """Row-stochastic affinity of feature positions, usable as CAA "attention".

    ``A_ij = softmax_j(cos(f_i, f_j) / temperature)``; a CNN has no attention
    maps, so this is the affinity given to :class:`wsss_mmseg.models.CAA`.

    Args:
        features: ``(C, h, w)`` feature map.
        temperature: Softmax temperature (> 0).

    Returns:
        ``(h*w, h*w)`` affinity, rows sum to 1 (row-major positions).

    Raises:
        ValueError: Bad shape or temperature.
    """
    if features.dim() != 3:
        raise ValueError(f'features must be (C, h, w), got {tuple(features.shape)}')
    if not temperature > 0:
        raise ValueError(f'temperature must be > 0, got {temperature}')
    f = F.normalize(features.flatten(1).t().float(), dim=1)
    return torch.softmax(f @ f.t() / temperature, dim=-1)
