"""Multi-label classification scores: average precision, mAP, F1 (numpy only)."""
from __future__ import annotations

from typing import Dict

import numpy as np

__all__ = ['average_precision', 'multilabel_scores']


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """Non-interpolated AP of one class: mean precision at the ranks of the positives.

    Args:
        scores: ``(N,)`` scores (ties ranked in input order).
        positives: ``(N,)`` bool ground truth.

    Returns:
        AP in ``[0, 1]``; NaN when there is no positive.
    """
    scores = np.asarray(scores, np.float64).reshape(-1)
    positives = np.asarray(positives, bool).reshape(-1)
    if scores.shape != positives.shape:
        raise ValueError(f'scores {scores.shape} and labels {positives.shape} differ')
    if not positives.any():
        return float('nan')
    order = np.argsort(-scores, kind='stable')
    hits = positives[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def multilabel_scores(scores: np.ndarray, labels: np.ndarray, *,
                      thr: float = 0.5) -> Dict[str, float]:
    """mAP, macro/micro F1, micro precision and recall (percent).

    Args:
        scores: ``(N, K)`` predicted scores.
        labels: ``(N, K)`` bool ground truth.
        thr: Decision threshold (``score >= thr`` is predicted present).

    Returns:
        ``dict(mAP, F1, F1_micro, precision, recall)``; classes without a
        positive are left out of ``mAP`` and of the macro ``F1``.
    """
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, bool)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(f'scores {scores.shape} and labels {labels.shape} must be equal (N, K)')
    pred = scores >= thr
    present = labels.any(axis=0)
    aps = [average_precision(scores[:, k], labels[:, k]) for k in np.flatnonzero(present)]
    tp = (pred & labels).sum(axis=0).astype(np.float64)
    fp = (pred & ~labels).sum(axis=0).astype(np.float64)
    fn = (~pred & labels).sum(axis=0).astype(np.float64)
    f1_k = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    tps, fps, fns = tp.sum(), fp.sum(), fn.sum()
    return dict(
        mAP=100.0 * float(np.mean(aps)) if aps else float('nan'),
        F1=100.0 * float(f1_k[present].mean()) if present.any() else float('nan'),
        F1_micro=100.0 * float(2 * tps / max(2 * tps + fps + fns, 1)),
        precision=100.0 * float(tps / max(tps + fps, 1)),
        recall=100.0 * float(tps / max(tps + fns, 1)))
