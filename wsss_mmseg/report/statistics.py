"""Streaming statistics of a pseudo-label folder (pure numpy, no mmseg).

:class:`ReportStatistics` takes one image at a time (pseudo mask, confidence
map, optional GT mask) and keeps only fixed-size accumulators, so a report over
100k images needs the memory of one image plus::

    joint[b, gt, pred]   pixel counts per confidence bin b, GT class, pseudo class
    conf_hist[pred, b]   pixel counts per pseudo class and confidence bin
    conf_sum[pred]       sum of the confidences per pseudo class
    labelled[b]          pseudo-labelled pixels (label != 255) per confidence bin

Label convention (that of :mod:`wsss_mmseg.pseudo.io`): ``N = C + 1`` classes,
0 = background, ``c + 1`` = class ``c``, 255 = ignore.

Confidence bins and the μ sweep. A confidence map holds ``q / 65535`` for an
integer ``q`` (16-bit PNG). With ``B`` bins, the pixel goes to bin
``b = floor(q * B / 65535)`` (integer arithmetic, so ``b == B`` only for
``q == 65535``). A pixel survives the threshold ``μ_j = j / B`` ("confidence
below μ is ignored", the CGL rule of the CLIP-ES spec §8 and of
:mod:`wsss_mmseg.evaluation`) exactly when ``q / 65535 >= j / B``,
i.e. ``q * B >= j * 65535``, i.e. ``b >= j``. Hence the confusion matrix of
the variant ``conf >= μ_j`` is ``joint[j:].sum(0)`` — exact, with no per-μ pass
over the images — and the labelled-pixel coverage at ``μ_j`` is
``labelled[j:].sum() / total_pixels``.

Scores follow :func:`wsss_mmseg.evaluation.scores_from_confusion`
(the official CLIP-ES convention: IoU per class, mIoU over the classes present
in the GT, pixels that the pseudo mask marks 255 left out of the matrix).

Per image (for the gallery) :func:`image_record` gives the mIoU over the classes
present in that image's GT (None without GT), the mean confidence of its
labelled pixels, the labelled fraction and the classes it contains.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from wsss_mmseg.evaluation import scores_from_confusion

__all__ = ['CONF_LEVELS', 'ReportStatistics', 'confidence_bins', 'image_record',
           'sweep_from_joint']

#: Number of levels of the 16-bit confidence PNGs (value q stands for q / 65535).
CONF_LEVELS = 65535
IGNORE_INDEX = 255


def confidence_bins(confidence: np.ndarray, num_bins: int) -> np.ndarray:
    """Bin index ``floor(q * B / 65535)`` of every pixel (see the module docstring).

    Args:
        confidence: Float array in ``[0, 1]`` holding ``q / 65535`` (as
            returned by :func:`wsss_mmseg.pseudo.io.read_confidence_png`).
        num_bins: ``B``; thresholds are ``j / B``.

    Returns:
        ``int64`` array of the same shape with values ``0..B``.
    """
    q = np.rint(np.clip(np.asarray(confidence, np.float64), 0.0, 1.0) * CONF_LEVELS)
    return (q.astype(np.int64) * int(num_bins)) // CONF_LEVELS


def _miou_of(hist: np.ndarray) -> Optional[float]:
    s = scores_from_confusion(hist)
    return None if np.isnan(s['miou']) else float(s['miou'])


def sweep_from_joint(joint: np.ndarray, labelled: np.ndarray,
                     total_pixels: int) -> Dict[str, List[Optional[float]]]:
    """mIoU and labelled-pixel coverage for every threshold ``μ_j = j / B``.

    Args:
        joint: ``(B + 1, N, N)`` counts per confidence bin, GT, pseudo label.
        labelled: ``(B + 1,)`` pseudo-labelled pixels per confidence bin
            (all images, with or without GT).
        total_pixels: All pixels of all masks (the coverage denominator).

    Returns:
        ``dict(mu=[j / B], miou=[...], coverage=[...])``, ``j = 0..B``; mIoU is
        None where no GT pixel survives, coverage None without pixels.
    """
    num_bins = joint.shape[0] - 1
    tail = np.cumsum(joint[::-1], axis=0)[::-1]          # tail[j] = joint[j:].sum(0)
    tail_labelled = np.cumsum(labelled[::-1])[::-1]
    mius = [j / num_bins for j in range(num_bins + 1)]
    miou = [_miou_of(tail[j]) for j in range(num_bins + 1)]
    cov = [float(tail_labelled[j]) / total_pixels if total_pixels else None
           for j in range(num_bins + 1)]
    return dict(mu=mius, miou=miou, coverage=cov)


def image_record(mask: np.ndarray, confidence: np.ndarray, gt: Optional[np.ndarray], *,
                 num_classes: int) -> Dict[str, Any]:
    """Per-image figures used to sort and filter the gallery.

    Args:
        mask: Pseudo mask ``(H, W)``.
        confidence: Confidence ``(H, W)`` in ``[0, 1]``.
        gt: GT mask ``(H, W)`` or None.
        num_classes: ``N`` (background included).

    Returns:
        ``dict(miou, mean_confidence, labelled_fraction, foreground_fraction,
        pred_classes, gt_classes)``: ``miou`` over the classes present in this
        image's GT (None without GT or without valid GT pixels);
        ``mean_confidence`` over pixels with a label (None if there are none);
        class lists hold label values ``0..N-1``.
    """
    labelled = mask != IGNORE_INDEX
    n_lab = int(labelled.sum())
    mean_conf = float(confidence[labelled].astype(np.float64).mean()) if n_lab else None
    pred_classes = sorted(int(v) for v in np.unique(mask[labelled]))
    miou = None
    gt_classes: List[int] = []
    if gt is not None:
        valid_gt = gt != IGNORE_INDEX
        gt_classes = sorted(int(v) for v in np.unique(gt[valid_gt]))
        keep = labelled & valid_gt
        hist = np.bincount(num_classes * gt[keep].astype(np.int64) + mask[keep],
                           minlength=num_classes ** 2).reshape(num_classes, num_classes)
        miou = _miou_of(hist)
    return dict(miou=miou, mean_confidence=mean_conf,
                labelled_fraction=n_lab / mask.size if mask.size else 0.0,
                foreground_fraction=float((labelled & (mask != 0)).sum()) / mask.size
                if mask.size else 0.0,
                pred_classes=pred_classes, gt_classes=gt_classes)


class ReportStatistics:
    """Accumulators of the report's dataset-level figures (module docstring).

    Args:
        num_classes: ``N = C + 1`` (background included).
        num_bins: Confidence bins ``B`` (thresholds ``j / B``, ``j = 0..B``).
    """

    def __init__(self, *, num_classes: int, num_bins: int = 100) -> None:
        if num_classes < 2:
            raise ValueError(f'num_classes must be >= 2 (background + 1), got {num_classes}')
        if num_bins < 1:
            raise ValueError(f'num_bins must be >= 1, got {num_bins}')
        self.num_classes = int(num_classes)
        self.num_bins = int(num_bins)
        n, b = self.num_classes, self.num_bins + 1
        self.joint = np.zeros((b, n, n), np.int64)
        self.conf_hist = np.zeros((n, b), np.int64)
        self.labelled = np.zeros(b, np.int64)
        self.conf_sum = np.zeros(n, np.float64)
        self.total_pixels = 0
        self.num_images = 0
        self.num_images_with_gt = 0

    def _check(self, name: str, arr: np.ndarray, shape: Sequence[int]) -> np.ndarray:
        arr = np.asarray(arr)
        if arr.shape != tuple(shape):
            raise ValueError(f'{name} has shape {arr.shape}, the pseudo mask {tuple(shape)}')
        return arr

    def update(self, mask: np.ndarray, confidence: np.ndarray,
               gt: Optional[np.ndarray] = None) -> Dict[str, Any]:
        """Add one image and return its :func:`image_record`.

        Args:
            mask: Pseudo mask ``(H, W)`` (labels ``0..N-1`` or 255).
            confidence: ``(H, W)`` in ``[0, 1]``.
            gt: GT mask ``(H, W)`` or None.

        Returns:
            The image's record.

        Raises:
            ValueError: Shape mismatch or a label outside ``0..N-1`` / 255 (the
                accumulators are left unchanged).
        """
        mask = np.asarray(mask).astype(np.int64)
        confidence = self._check('confidence map', confidence, mask.shape)
        n = self.num_classes
        for name, arr in (('pseudo mask', mask), ('GT mask', gt)):
            if arr is None:
                continue
            arr = self._check(name, arr, mask.shape)
            bad = (arr != IGNORE_INDEX) & ((arr < 0) | (arr >= n))
            if bad.any():
                vals = np.unique(arr[bad])[:10].tolist()
                raise ValueError(f'{name} holds labels {vals} outside 0..{n - 1} and 255')
        if gt is not None:
            gt = np.asarray(gt).astype(np.int64)
        bins = confidence_bins(confidence, self.num_bins)
        labelled = mask != IGNORE_INDEX
        b = self.num_bins + 1
        lab_bins = bins[labelled]
        lab_pred = mask[labelled]
        conf_hist = np.bincount(lab_pred * b + lab_bins, minlength=n * b).reshape(n, b)
        lab_count = np.bincount(lab_bins, minlength=b)
        conf_sum = np.bincount(lab_pred, weights=confidence[labelled].astype(np.float64),
                               minlength=n)
        joint = None
        if gt is not None:
            keep = labelled & (gt != IGNORE_INDEX)
            flat = (bins[keep] * n + gt[keep]) * n + mask[keep]
            joint = np.bincount(flat, minlength=b * n * n).reshape(b, n, n)
        record = image_record(mask, confidence, gt, num_classes=n)
        # commit only after everything succeeded
        self.conf_hist += conf_hist
        self.labelled += lab_count
        self.conf_sum += conf_sum
        if joint is not None:
            self.joint += joint
            self.num_images_with_gt += 1
        self.total_pixels += int(mask.size)
        self.num_images += 1
        return record

    def mean_confidence(self) -> np.ndarray:
        """Mean confidence of the pixels of each pseudo class (NaN without pixels)."""
        totals = self.conf_hist.sum(1)
        with np.errstate(divide='ignore', invalid='ignore'):
            return np.where(totals > 0, self.conf_sum / np.maximum(totals, 1), np.nan)

    def confusion(self, mu: float = 0.0) -> np.ndarray:
        """Confusion matrix ``hist[gt, pred]`` of the pixels with confidence >= μ.

        Args:
            mu: A threshold on the grid ``j / B``.

        Returns:
            ``int64`` ``(N, N)``.

        Raises:
            ValueError: ``mu`` is not a grid threshold.
        """
        j = round(mu * self.num_bins)
        if not 0 <= j <= self.num_bins or abs(j / self.num_bins - mu) > 1e-9:
            raise ValueError(f'mu={mu} is not one of the thresholds j/{self.num_bins}')
        return self.joint[j:].sum(0)

    def scores(self) -> Dict[str, Any]:
        """Per-class IoU / precision / recall of all labelled pixels (μ = 0).

        Returns:
            :func:`scores_from_confusion` of :meth:`confusion`.
        """
        return scores_from_confusion(self.confusion(0.0))

    def sweep(self) -> Dict[str, List[Optional[float]]]:
        """The μ sweep (see :func:`sweep_from_joint`)."""
        return sweep_from_joint(self.joint, self.labelled, self.total_pixels)
