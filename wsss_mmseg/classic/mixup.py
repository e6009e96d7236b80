"""Mixup (Zhang et al. 2018) for multi-label classification: images and multi-hot labels.

``x = lam * x_i + (1 - lam) * x_perm(i)`` and the same convex combination of the
label vectors ``y``; ``lam ~ Beta(alpha, alpha)`` once per batch.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = ['multi_hot', 'sample_mixup_lambda', 'mixup']


def multi_hot(label_ids: Sequence[int], num_classes: int) -> Tensor:
    """Multi-hot float vector of image-level labels.

    Args:
        label_ids: 0-based class indices present in the image.
        num_classes: Vector length.

    Returns:
        ``(num_classes,)`` float32 tensor, 1 at the labels, 0 elsewhere.

    Raises:
        ValueError: An index outside ``[0, num_classes)``.
    """
    vec = torch.zeros(int(num_classes), dtype=torch.float32)
    for c in label_ids:
        if isinstance(c, bool) or not 0 <= int(c) < num_classes:
            raise ValueError(f'label index {c!r} out of range for {num_classes} classes')
        vec[int(c)] = 1.0
    return vec


def sample_mixup_lambda(alpha: float, *, rng: Optional[np.random.Generator] = None) -> float:
    """Draw ``lam ~ Beta(alpha, alpha)``.

    Args:
        alpha: Beta parameter (> 0; 1.0 = uniform).
        rng: numpy random generator (None = numpy's global state, which
            mmengine seeds with ``randomness=dict(seed=...)``).

    Returns:
        ``lam`` in ``[0, 1]``.

    Raises:
        ValueError: ``alpha <= 0``.
    """
    if not alpha > 0:
        raise ValueError(f'mixup alpha must be > 0, got {alpha}')
    draw = np.random.beta if rng is None else rng.beta
    return float(draw(float(alpha), float(alpha)))


def mixup(inputs: Tensor, targets: Tensor, *, lam: float,
          perm: Tensor) -> Tuple[Tensor, Tensor]:
    """Mix a batch with a permutation of itself.

    Args:
        inputs: ``(B, ...)`` images.
        targets: ``(B, K)`` label vectors (multi-hot or already soft).
        lam: Mixing weight in ``[0, 1]``.
        perm: ``(B,)`` permutation (partner of every sample).

    Returns:
        ``(lam * inputs + (1 - lam) * inputs[perm], lam * targets + (1 - lam) * targets[perm])``.

    Raises:
        ValueError: Batch sizes differ or ``lam`` outside ``[0, 1]``.
    """
    if inputs.shape[0] != targets.shape[0] or perm.shape != (inputs.shape[0],):
        raise ValueError(f'batch sizes differ: inputs {tuple(inputs.shape)}, targets '
                         f'{tuple(targets.shape)}, perm {tuple(perm.shape)}')
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f'lam must be in [0, 1], got {lam}')
    mixed_x = lam * inputs + (1.0 - lam) * inputs[perm]
    mixed_y = lam * targets + (1.0 - lam) * targets[perm]
    return mixed_x, mixed_y


# ----------------------------------------------------------------- Mixup-CAM regularisers
def _present_mask(cams: Tensor, targets: Tensor) -> Tensor:
    if cams.dim() != 4 or targets.shape != cams.shape[:2]:
        raise ValueError(f'cams {tuple(cams.shape)} must be (B, K, h, w) and targets '
                         f'{tuple(targets.shape)} (B, K)')
    return targets > 0


def cam_entropy_loss(cams: Tensor, targets: Tensor) -> Tensor:
    """Mixup-CAM entropy regulariser (our formulation; the spec only names it).

    ``p_u = softmax_{c in T}(cam_c(u))`` over the image's classes ``T`` (mixed labels: every
    class with a non-zero weight), ``L = mean_{images, u} -sum_c p_{u,c} log p_{u,c}``:
    each pixel is pushed to one class. Images with one class give 0.

    Args:
        cams: ``(B, K, h, w)`` raw class maps.
        targets: ``(B, K)`` label vectors.

    Returns:
        Scalar.
    """
    present = _present_mask(cams, targets)
    # a finite "minus infinity": absent classes get p = 0 and 0 * log p = 0 with finite gradients
    logits = cams.masked_fill(~present[..., None, None], torch.finfo(cams.dtype).min / 4)
    logp = torch.log_softmax(logits, dim=1)
    ent = -(logp.exp() * logp * present[..., None, None]).sum(1)  # (B, h, w)
    has = present.any(dim=1)
    if not has.any():
        return cams.sum() * 0.0
    return ent[has].mean()


def cam_concentration_loss(cams: Tensor, targets: Tensor, *, eps: float = 1e-6) -> Tensor:
    """Mixup-CAM concentration regulariser (SCOPS-style spatial variance; our formulation).

    For each present class, ``R = ReLU(cam) / sum ReLU(cam)`` is a spatial distribution with
    centroid ``mu = sum_u R(u) u``; ``L = mean_{present (image, class)} sum_u R(u) ||u - mu||^2``
    with pixel coordinates divided by ``max(h, w)`` (size-independent).

    Args:
        cams: ``(B, K, h, w)`` raw class maps.
        targets: ``(B, K)`` label vectors.
        eps: Mass epsilon (an all-zero map contributes 0).

    Returns:
        Scalar (0 when no class is present).
    """
    present = _present_mask(cams, targets)
    h, w = cams.shape[2:]
    scale = float(max(h, w))
    ys = torch.arange(h, dtype=cams.dtype, device=cams.device)[:, None].expand(h, w) / scale
    xs = torch.arange(w, dtype=cams.dtype, device=cams.device)[None, :].expand(h, w) / scale
    m = cams.clamp_min(0)
    r = m / (m.sum(dim=(2, 3), keepdim=True) + eps)
    my = (r * ys).sum(dim=(2, 3), keepdim=True)
    mx = (r * xs).sum(dim=(2, 3), keepdim=True)
    var = (r * ((ys - my) ** 2 + (xs - mx) ** 2)).sum(dim=(2, 3))
    if not present.any():
        return cams.sum() * 0.0
    return var[present].mean()


__all__ += ['cam_entropy_loss', 'cam_concentration_loss']
