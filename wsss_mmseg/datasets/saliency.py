"""Saliency in the mmseg pipeline (TRANSFORMS / TASK_UTILS).

* Saliency sources (``TASK_UTILS``): ``FolderSaliency`` (``<saliency_dir>/<img_id><suffix>``
  grey PNGs, e.g. DSS / PoolNet maps a user brings; 0-255 -> ``[0, 1]``) and
  ``SpectralResidualSaliency`` (built in, no weights;
  :func:`wsss_mmseg.classic.saliency.spectral_residual_saliency`).
* ``LoadSaliencyMap`` (TRANSFORMS): ``results['saliency']`` ``(H, W)`` float32 at the image
  size, right after ``LoadImageFromFile``. A missing file is an error naming the image and the
  folder; a map of another size is resized (bilinear) with ONE warning per transform; an
  unreadable / corrupt file is recorded (``failed``: path -> reason, logged once each) and the
  sample is dropped (``None``: mmengine's dataset takes another image) unless
  ``on_corrupt='raise'``.
* ``SaliencyGuidedLabels`` (TRANSFORMS): ``gt_seg_map`` from the saved CAMs of any generator
  and the saliency: ``method='oh'`` (Oh et al. 2017) or ``'ae_psl'`` (AE-PSL's mined regions +
  saliency background), see :mod:`wsss_mmseg.classic.saliency`.
"""
from __future__ import annotations

import os.path as osp
from typing import Any, Dict, Optional

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.logging import print_log
from mmseg.registry import TASK_UTILS, TRANSFORMS

from ..classic.saliency import ae_psl_labels, saliency_guided_labels, spectral_residual_saliency
from .affinity_labels import load_image_cams

__all__ = ['FolderSaliency', 'SpectralResidualSaliency', 'LoadSaliencyMap',
           'SaliencyGuidedLabels', 'CorruptSaliencyError']


class CorruptSaliencyError(ValueError):
    """A saliency file exists but cannot be decoded as an image."""


@TASK_UTILS.register_module()
class FolderSaliency:
    """Saliency maps stored as grey images ``<saliency_dir>/<img_id><suffix>``.

    Args:
        saliency_dir: Folder of the maps.
        suffix: File suffix (``.png``).
    """

    def __init__(self, saliency_dir: str, suffix: str = '.png') -> None:
        if not saliency_dir:
            raise ValueError('FolderSaliency needs saliency_dir')
        self.saliency_dir = str(saliency_dir)
        self.suffix = str(suffix)

    def path(self, img_id: str) -> str:
        """File of one image."""
        return osp.join(self.saliency_dir, f'{img_id}{self.suffix}')

    def __call__(self, img_id: str, img_rgb: np.ndarray) -> np.ndarray:
        """``(h, w)`` float32 in ``[0, 1]`` (the stored size)."""
        path = self.path(img_id)
        if not osp.isfile(path):
            raise FileNotFoundError(f'no saliency map for image {img_id!r} in '
                                    f'{self.saliency_dir} (expected {path})')
        raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise CorruptSaliencyError(f'saliency map {path} (image {img_id!r}) cannot be decoded')
        if raw.ndim == 3:
            raw = raw[..., :3].mean(axis=2)
        top = 65535.0 if raw.dtype == np.uint16 else 255.0
        return np.clip(raw.astype(np.float32) / top, 0, 1)


@TASK_UTILS.register_module()
class SpectralResidualSaliency:
    """Built-in spectral-residual saliency (Hou & Zhang 2007), no weights.

    Args:
        size: Working resolution.
        blur_sigma: Gaussian blur std at the working resolution.
    """

    def __init__(self, size: int = 64, blur_sigma: float = 2.5) -> None:
        self.size = int(size)
        self.blur_sigma = float(blur_sigma)

    def __call__(self, img_id: str, img_rgb: np.ndarray) -> np.ndarray:
        """``(H, W)`` float32 in ``[0, 1]``."""
        return spectral_residual_saliency(img_rgb, size=self.size, blur_sigma=self.blur_sigma)


@TRANSFORMS.register_module()
class LoadSaliencyMap(BaseTransform):
    """Add ``results['saliency']`` (float32 ``(H, W)`` in ``[0, 1]`` at the image size).

    Required keys: ``img`` (BGR, from ``LoadImageFromFile``), ``img_id``.

    Args:
        source: ``dict(type='FolderSaliency', saliency_dir=..., suffix='.png')`` or
            ``dict(type='SpectralResidualSaliency')``.
        on_corrupt: ``'skip'`` (record, drop the sample) or ``'raise'``.
    """

    def __init__(self, source: Dict[str, Any], on_corrupt: str = 'skip') -> None:
        if on_corrupt not in ('skip', 'raise'):
            raise ValueError(f"LoadSaliencyMap on_corrupt must be 'skip' or 'raise', got "
                             f'{on_corrupt!r}')
        if not isinstance(source, dict) or 'type' not in source:
            raise ValueError(f'LoadSaliencyMap source must be a config dict with a type, got '
                             f'{source!r}')
        self.source = TASK_UTILS.build(dict(source))
        self.on_corrupt = on_corrupt
        self.failed: Dict[str, str] = {}
        self._warned_size = False

    def transform(self, results: dict) -> Optional[dict]:
        """Load / compute the map; None when a corrupt file is skipped."""
        for key in ('img', 'img_id'):
            if key not in results:
                raise KeyError(f'LoadSaliencyMap needs {key!r} (use LoadImageFromFile on an '
                               'ImageLevelLabelDataset)')
        img = results['img']
        img_id = str(results['img_id'])
        try:
            sal = self.source(img_id, np.ascontiguousarray(img[..., ::-1]))
        except CorruptSaliencyError as exc:
            if self.on_corrupt == 'raise':
                raise
            if img_id not in self.failed:
                self.failed[img_id] = str(exc)
                print_log(f'LoadSaliencyMap: skipping image {img_id!r}: {exc}',
                          logger='current', level=30)
            return None
        if sal.shape != img.shape[:2]:
            if not self._warned_size:
                self._warned_size = True
                print_log(f'LoadSaliencyMap: saliency map of image {img_id!r} is '
                          f'{sal.shape[1]}x{sal.shape[0]} but the image is '
                          f'{img.shape[1]}x{img.shape[0]}; resizing (bilinear). Further size '
                          'mismatches are resized without a warning.',
                          logger='current', level=30)
            sal = cv2.resize(sal, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
        results['saliency'] = np.clip(sal, 0, 1).astype(np.float32)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(source={type(self.source).__name__})'


@TRANSFORMS.register_module()
class SaliencyGuidedLabels(BaseTransform):
    """``gt_seg_map`` from saved CAMs + ``results['saliency']`` (after ``LoadSaliencyMap``).

    Args:
        cam_dir: Folder of ``<img_id>.npy`` CAM files (``--save-cams``).
        method: ``'oh'`` (salient -> strongest labelled CAM's class) or ``'ae_psl'``
            (mined regions ``cam > threshold`` + low-saliency background).
        use_refined: Use ``cam_refined`` when present.
        fg_saliency: ``'oh'``: salient threshold.
        bg_saliency: Background threshold (both methods).
        min_cam: ``'oh'``: minimum CAM of a salient pixel's class.
        threshold: ``'ae_psl'``: mining threshold.
        ignore_index: Undecided pixels.
    """

    def __init__(self, cam_dir: str, method: str = 'oh', use_refined: bool = False,
                 fg_saliency: float = 0.5, bg_saliency: float = 0.1, min_cam: float = 0.0,
                 threshold: float = 0.5, ignore_index: int = 255) -> None:
        if method not in ('oh', 'ae_psl'):
            raise ValueError(f"SaliencyGuidedLabels method must be 'oh' or 'ae_psl', got "
                             f'{method!r}')
        if not cam_dir:
            raise ValueError('SaliencyGuidedLabels needs cam_dir')
        self.cam_dir = str(cam_dir)
        self.method = method
        self.use_refined = bool(use_refined)
        if method == 'oh':
            self.kw = dict(fg_saliency=float(fg_saliency), bg_saliency=float(bg_saliency),
                           min_cam=float(min_cam), ignore_index=int(ignore_index))
        else:
            self.kw = dict(threshold=float(threshold), bg_saliency=float(bg_saliency),
                           ignore_index=int(ignore_index))

    def transform(self, results: dict) -> Optional[dict]:
        """Add ``gt_seg_map``."""
        if 'saliency' not in results:
            raise KeyError('SaliencyGuidedLabels needs results["saliency"]: put LoadSaliencyMap '
                           'before it')
        keys, cams = load_image_cams(self.cam_dir, results, use_refined=self.use_refined,
                                     transform='SaliencyGuidedLabels')
        fuse = saliency_guided_labels if self.method == 'oh' else ae_psl_labels
        results['gt_seg_map'] = fuse(cams, keys, results['saliency'], **self.kw)
        results.setdefault('seg_fields', [])
        if 'gt_seg_map' not in results['seg_fields']:
            results['seg_fields'].append('gt_seg_map')
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(cam_dir={self.cam_dir!r}, method={self.method!r})'
