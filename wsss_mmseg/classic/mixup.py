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
