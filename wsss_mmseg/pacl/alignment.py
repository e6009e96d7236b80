"""Patch-level alignment metrics (spec maskclip_pacl.md §3.5 "Table 1" probes): pure torch.

* :func:`patch_labels_from_mask` -- one class per patch from a GT mask (majority, purity threshold).
* :func:`patch_zero_shot_accuracy` -- argmax of patch-text cosine vs the patch label.
* :func:`coherence_auc` -- semantic coherence: ROC-AUC of the cosine similarity of two patch
  embeddings for same-class pairs (positives) vs different-class pairs (negatives).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = ['patch_labels_from_mask', 'patch_zero_shot_accuracy', 'roc_auc', 'coherence_auc']


def patch_labels_from_mask(mask: torch.Tensor, grid: Tuple[int, int], *, ignore_index: int = 255,
                           min_purity: float = 0.5) -> torch.Tensor:
    """Majority label of every patch of a label mask; ``-1`` where the patch is not pure enough.

    Args:
        mask: ``(H, W)`` integer labels, ``H`` and ``W`` multiples of the grid.
        grid: ``(h, w)`` patch grid.
        ignore_index: Label that never counts (and reduces purity).
        min_purity: Minimum fraction of the patch's pixels carrying the majority label.

    Returns:
        ``(h * w,)`` int64 labels (row-major), ``-1`` for impure / all-ignored patches.
    """
    if mask.ndim != 2:
        raise ValueError(f'mask must be (H, W), got shape {tuple(mask.shape)}')
    h, w = int(grid[0]), int(grid[1])
    big_h, big_w = mask.shape
    if h < 1 or w < 1 or big_h % h or big_w % w:
        raise ValueError(f'mask of shape {tuple(mask.shape)} is not divisible into a {h}x{w} grid')
    ph, pw = big_h // h, big_w // w
    m = mask.long().reshape(h, ph, w, pw).permute(0, 2, 1, 3).reshape(h * w, ph * pw)
    m = torch.where(m == ignore_index, torch.full_like(m, -1), m)
    if (m >= 0).any():
        n_cls = int(m.max().item()) + 1
    else:
        return torch.full((h * w,), -1, dtype=torch.long)
    counts = F.one_hot(m.clamp(min=0), n_cls).mul_((m >= 0).unsqueeze(-1).long()).sum(1)   # (N, n_cls)
    best, label = counts.max(dim=1)
    purity = best.double() / float(ph * pw)
    label = torch.where((best > 0) & (purity >= min_purity), label, torch.full_like(label, -1))
    return label


def patch_zero_shot_accuracy(embeddings: torch.Tensor, labels: torch.Tensor, texts: torch.Tensor
                             ) -> Tuple[int, int]:
    """Patches whose most similar text is their label.

    Args:
        embeddings: ``(N, D)`` patch embeddings.
        labels: ``(N,)`` text indices; negative = not evaluated.
        texts: ``(K, D)`` text embeddings.

    Returns:
        ``(correct, total)`` counts over evaluated patches.
    """
    if embeddings.ndim != 2 or texts.ndim != 2 or embeddings.shape[1] != texts.shape[1]:
        raise ValueError(f'embedding dims differ: patches {tuple(embeddings.shape)}, texts {tuple(texts.shape)}')
    keep = labels >= 0
    if not keep.any():
        return 0, 0
    if labels[keep].max() >= texts.shape[0]:
        raise ValueError(f'patch label {int(labels[keep].max())} has no text (K={texts.shape[0]})')
    sim = F.normalize(embeddings[keep].float(), dim=-1) @ F.normalize(texts.float(), dim=-1).t()
    pred = sim.argmax(dim=1)
    return int((pred == labels[keep]).sum().item()), int(keep.sum().item())


def roc_auc(positives: torch.Tensor, negatives: torch.Tensor) -> float:
    """ROC-AUC = P(score_pos > score_neg) + ½ P(equal) (Mann-Whitney U with average ranks).

    Args:
        positives: 1-D scores of positive pairs.
        negatives: 1-D scores of negative pairs.

    Returns:
        AUC in ``[0, 1]``.

    Raises:
        ValueError: One of the sets is empty.
    """
    if positives.numel() == 0 or negatives.numel() == 0:
        raise ValueError(f'ROC-AUC needs positives and negatives, got {positives.numel()} and {negatives.numel()}')
    scores = torch.cat([positives.flatten(), negatives.flatten()]).double()
    order = torch.argsort(scores, stable=True)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, scores.numel() + 1, dtype=torch.float64)
    # average ranks over ties
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    avg = ends - (counts.double() - 1) / 2
    ranks[order] = avg[inverse]
    n_pos, n_neg = positives.numel(), negatives.numel()
    u = ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def coherence_auc(embeddings: torch.Tensor, labels: torch.Tensor, *, max_patches: Optional[int] = 2000,
                  seed: int = 0) -> float:
    """ROC-AUC of pairwise patch cosine similarity: same-class vs different-class pairs.

    Args:
        embeddings: ``(N, D)`` patch embeddings.
        labels: ``(N,)`` class labels; negative = excluded.
        max_patches: Deterministic random subset size bounding the ``O(N^2)`` pair count.
        seed: Subset seed.

    Returns:
        AUC in ``[0, 1]``.
    """
    keep = torch.nonzero(labels >= 0).flatten()
    if max_patches is not None and keep.numel() > max_patches:
        gen = torch.Generator().manual_seed(int(seed))
        keep = keep[torch.randperm(keep.numel(), generator=gen)[:max_patches]].sort().values
    emb = F.normalize(embeddings[keep].float(), dim=-1)
    lab = labels[keep]
    sim = emb @ emb.t()
    iu = torch.triu_indices(lab.numel(), lab.numel(), offset=1)
    s = sim[iu[0], iu[1]]
    same = lab[iu[0]] == lab[iu[1]]
    return roc_auc(s[same], s[~same])
