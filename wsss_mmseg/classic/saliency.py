"""Saliency for WSSS: a built-in saliency map and the saliency + CAM label fusions (pure functions).

Spec (``classic_wsss.md``, "Saliency-guided" row: saliency + seeds fusion; AE-PSL row:
saliency for the background).

* :func:`spectral_residual_saliency` — Hou & Zhang (CVPR 2007), needs no weights: the grey
  image at ``size x size``, ``L = log|FFT|``, residual ``R = L - mean3x3(L)``,
  ``S = |IFFT(exp(R + i * phase))|^2``, Gaussian blur, min-max to ``[0, 1]``, resized back.
  It finds "what differs from its surroundings", not objects: see the measured numbers in
  ``configs/classic/README.md`` (``python -m wsss_mmseg.classic.saliency --voc DIR``).
* :func:`saliency_guided_labels` — Oh et al. (CVPR 2017), simplified: salient pixels
  (``>= fg_saliency``) take the class of the strongest CAM among the image's classes (a
  one-class image: the whole salient region is that class), non-salient pixels
  (``< bg_saliency``) are background, the rest is ignored.
* :func:`ae_psl_labels` — AE-PSL's offline label: the mined regions (``cam_k > threshold``)
  are their class (a pixel mined for two classes is ignored), low-saliency pixels
  (``< bg_saliency``) are background, the rest is ignored.
* :func:`saliency_auc` — ROC AUC of a saliency map as a foreground detector (evaluation).

Only numpy and OpenCV are imported here.
"""
from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

__all__ = ['spectral_residual_saliency', 'saliency_guided_labels', 'ae_psl_labels',
           'saliency_auc']


def spectral_residual_saliency(img_rgb: np.ndarray, *, size: int = 64,
                               blur_sigma: float = 2.5) -> np.ndarray:
    """Spectral-residual saliency of an RGB image.

    Args:
        img_rgb: ``(H, W, 3)`` uint8 (or float) RGB image.
        size: Working resolution ``size x size`` (the paper's 64).
        blur_sigma: Gaussian blur std in working pixels (0 = none).

    Returns:
        ``(H, W)`` float32 saliency in ``[0, 1]``.
    """
    img = np.asarray(img_rgb)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'expected an (H, W, 3) RGB image, got {img.shape}')
    h, w = img.shape[:2]
    grey = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    if (h, w) != (size, size):
        grey = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA)
    spec = np.fft.fft2(grey)
    log_amp = np.log(np.abs(spec) + 1e-8)
    residual = log_amp - cv2.blur(log_amp, (3, 3), borderType=cv2.BORDER_REFLECT_101)
    sal = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spec)))) ** 2
    if blur_sigma > 0:
        sal = cv2.GaussianBlur(sal, (0, 0), float(blur_sigma))
    lo, hi = sal.min(), sal.max()
    sal = (sal - lo) / (hi - lo) if hi > lo else np.zeros_like(sal)
    if (h, w) != (size, size):
        sal = cv2.resize(sal, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(sal, 0, 1).astype(np.float32)


def _check(cams: np.ndarray, keys: Sequence[int], saliency: np.ndarray):
    c = np.asarray(cams, dtype=np.float32)
    k = np.asarray(keys, dtype=np.int64).reshape(-1)
    s = np.asarray(saliency, dtype=np.float32)
    if c.ndim != 3 or c.shape[0] != k.size or s.shape != c.shape[1:]:
        raise ValueError(f'cams {c.shape} must be (K={k.size}, H, W) and saliency {s.shape} '
                         '(H, W)')
    return c, k, s


def saliency_guided_labels(cams: np.ndarray, keys: Sequence[int], saliency: np.ndarray, *,
                           fg_saliency: float = 0.5, bg_saliency: float = 0.1,
                           min_cam: float = 0.0, ignore_index: int = 255) -> np.ndarray:
    """Oh et al.-style fusion of saliency and CAM seeds.

    Args:
        cams: ``(K, H, W)`` maps in ``[0, 1]`` of the image's classes.
        keys: ``(K,)`` class indices (label ``key + 1``).
        saliency: ``(H, W)`` saliency in ``[0, 1]``.
        fg_saliency: Salient pixels (``>=``) are foreground.
        bg_saliency: Pixels below are background.
        min_cam: A salient pixel whose strongest CAM is below this is ignored.
        ignore_index: Value of undecided pixels.

    Returns:
        ``(H, W)`` uint8 labels.
    """
    c, k, s = _check(cams, keys, saliency)
    if not 0 <= bg_saliency <= fg_saliency <= 1:
        raise ValueError(f'need 0 <= bg_saliency <= fg_saliency <= 1, got {bg_saliency}, '
                         f'{fg_saliency}')
    out = np.full(s.shape, ignore_index, dtype=np.uint8)
    out[s < bg_saliency] = 0
    fg = (s >= fg_saliency) & (c.max(axis=0) >= min_cam)
    lut = (k + 1).astype(np.uint8)
    out[fg] = lut[c.argmax(axis=0)][fg]
    return out


def ae_psl_labels(cams: np.ndarray, keys: Sequence[int], saliency: np.ndarray, *,
                  threshold: float = 0.5, bg_saliency: float = 0.1,
                  ignore_index: int = 255) -> np.ndarray:
    """AE-PSL offline label: mined regions + saliency background.

    Args:
        cams: ``(K, H, W)`` (merged over the erasing rounds) maps in ``[0, 1]``.
        keys: ``(K,)`` class indices.
        saliency: ``(H, W)`` saliency in ``[0, 1]``.
        threshold: Mined region ``cam_k > threshold`` (the erasing threshold).
        bg_saliency: Background ``saliency < bg_saliency`` (outside every mined region).
        ignore_index: Value of undecided pixels.

    Returns:
        ``(H, W)`` uint8 labels.
    """
    c, k, s = _check(cams, keys, saliency)
    mined = c > threshold
    count = mined.sum(axis=0)
    out = np.full(s.shape, ignore_index, dtype=np.uint8)
    out[(s < bg_saliency) & (count == 0)] = 0
    one = count == 1
    out[one] = (k + 1).astype(np.uint8)[mined.argmax(axis=0)][one]
    return out


def saliency_auc(saliency: np.ndarray, foreground: np.ndarray,
                 valid: Optional[np.ndarray] = None) -> float:
    """ROC AUC of ``saliency`` as a detector of ``foreground`` pixels (ties count 1/2).

    Args:
        saliency: ``(H, W)`` scores.
        foreground: ``(H, W)`` bool ground truth.
        valid: Optional ``(H, W)`` bool mask of the pixels to use.

    Returns:
        AUC in ``[0, 1]`` (NaN when one of the two sets is empty).
    """
    s = np.asarray(saliency, dtype=np.float64).ravel()
    fg = np.asarray(foreground, dtype=bool).ravel()
    if valid is not None:
        keep = np.asarray(valid, dtype=bool).ravel()
        s, fg = s[keep], fg[keep]
    n_pos, n_neg = int(fg.sum()), int((~fg).sum())
    if n_pos == 0 or n_neg == 0:
        return float('nan')
    order = np.argsort(s, kind='mergesort')
    ranks = np.empty(s.size, dtype=np.float64)
    sorted_s = s[order]
    # average ranks of ties (1-based)
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[fg].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _main(argv: Optional[Sequence[str]] = None) -> None:
    """Measure the built-in saliency on a VOC-layout folder (mean AUC, MAE)."""
    import argparse
    import os.path as osp

    from PIL import Image
    p = argparse.ArgumentParser(description=_main.__doc__)
    p.add_argument('--voc', required=True, help='folder with JPEGImages/, SegmentationClass/, '
                   'ImageSets/Segmentation/val.txt')
    p.add_argument('--size', type=int, default=64)
    p.add_argument('--blur-sigma', type=float, default=2.5)
    a = p.parse_args(argv)
    ids = open(osp.join(a.voc, 'ImageSets', 'Segmentation', 'val.txt')).read().split()
    aucs, maes = [], []
    for i in ids:
        img = np.asarray(Image.open(osp.join(a.voc, 'JPEGImages', f'{i}.jpg')).convert('RGB'))
        gt = np.asarray(Image.open(osp.join(a.voc, 'SegmentationClass', f'{i}.png')))
        sal = spectral_residual_saliency(img, size=a.size, blur_sigma=a.blur_sigma)
        valid = gt != 255
        fg = (gt > 0) & valid
        aucs.append(saliency_auc(sal, fg, valid))
        maes.append(float(np.abs(sal[valid] - fg[valid]).mean()))
    print(f'{len(ids)} images: mean AUC {np.nanmean(aucs):.3f}, mean MAE {np.mean(maes):.3f} '
          f'(size {a.size}, blur sigma {a.blur_sigma})')


if __name__ == '__main__':
    _main()
