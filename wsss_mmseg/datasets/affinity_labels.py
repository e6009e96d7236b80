"""``LoadConfidentRegions`` (TRANSFORMS): AffinityNet training targets from saved CAMs.

Reads ``<cam_dir>/<img_id>.npy`` (written by ``tools/generate_pseudo.py --save-cams`` with any
generator), splits it into confident foreground / confident background / uncertain
(:func:`wsss_mmseg.classic.affinity.crf_region_labels`, ``la = 4``, ``ha = 24``, dense CRF on
the CPU data workers) and stores the result as ``gt_seg_map`` (registered in ``seg_fields``),
so mmseg's geometric transforms move it with the image and ``PackSegInputs`` packs it.
"""
from __future__ import annotations

import os.path as osp
from typing import Optional, Tuple

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from ..classic.affinity import HA_CRF, LA_CRF, crf_region_labels

__all__ = ['LoadConfidentRegions', 'load_image_cams']


def load_image_cams(cam_dir: str, results: dict, *, use_refined: bool = False,
                    transform: str = 'transform') -> Tuple[np.ndarray, np.ndarray]:
    """``(keys, cams)`` of ``results['img_id']`` from ``<cam_dir>/<img_id>.npy``.

    Args:
        cam_dir: Folder of the CAM files of ``tools/generate_pseudo.py --save-cams``.
        results: Pipeline results with ``img_id`` and the loaded ``img``.
        use_refined: Prefer ``cam_refined`` when present.
        transform: Name used in error messages.

    Returns:
        ``(keys (K,) int64, cams (K, H, W) float32)`` at the image size.
    """
    from ..pseudo.io import load_cam_npy
    path = osp.join(cam_dir, f'{results["img_id"]}.npy')
    if not osp.isfile(path):
        raise FileNotFoundError(f'{transform}: no CAM file for image {results["img_id"]!r} in '
                                f'{cam_dir} ({path}); run tools/generate_pseudo.py '
                                '--save-cams first')
    record = load_cam_npy(path)
    cams = record.get('cam_refined') if use_refined else None
    if cams is None:
        cams = record.get('cam', record['attn_highres'])
    cams = np.asarray(cams, dtype=np.float32)
    img = results['img']
    if cams.shape[1:] != img.shape[:2]:
        raise ValueError(f'{transform}: CAM file {path} has maps of size {cams.shape[1:]} but '
                         f'the image is {img.shape[:2]}; put {transform} right after '
                         'LoadImageFromFile')
    return np.asarray(record['keys'], dtype=np.int64).reshape(-1), cams


@TRANSFORMS.register_module()
class LoadConfidentRegions(BaseTransform):
    """Confident-region label map (0 bg, class + 1, 255 uncertain) from a saved CAM file.

    Required keys: ``img`` (BGR uint8 from ``LoadImageFromFile``, before any resize),
    ``img_id``. Added: ``gt_seg_map``, ``seg_fields``.

    Args:
        cam_dir: Folder of ``<img_id>.npy`` CAM files (``dict(keys, cam[, cam_refined])``).
        use_refined: Use ``cam_refined`` when the file has it (else ``cam``).
        la: Low background exponent (confident foreground), SEAM's ``la_crf`` 4.0.
        ha: High background exponent (confident background), SEAM's ``ha_crf`` 24.0.
        crf: Refine both label maps with the dense CRF (pydensecrf2) as AffinityNet does;
            False uses the plain argmax (fast, for tests).
        ignore_index: Value of the uncertain pixels.
        cache: Keep every computed map in memory (per data worker; the map depends only on
            the CAM file and the image, so later epochs skip the CRF). About
            ``H * W`` bytes per image: for small datasets or many epochs.
    """

    def __init__(self, cam_dir: str, use_refined: bool = False, la: float = LA_CRF,
                 ha: float = HA_CRF, crf: bool = True, ignore_index: int = 255,
                 cache: bool = False) -> None:
        if not cam_dir:
            raise ValueError('LoadConfidentRegions needs cam_dir (the cams/ folder of '
                             'tools/generate_pseudo.py --save-cams)')
        if not 0 < la < ha:
            raise ValueError(f'LoadConfidentRegions needs 0 < la < ha, got la={la}, ha={ha}')
        self.cam_dir = str(cam_dir)
        self.use_refined = bool(use_refined)
        self.la, self.ha = float(la), float(ha)
        self.crf = bool(crf)
        self.ignore_index = int(ignore_index)
        self.cache = bool(cache)
        self._maps: dict = {}

    def _label(self, results: dict) -> np.ndarray:
        key = str(results['img_id'])
        if self.cache and key in self._maps:
            return self._maps[key].copy()
        label = self._compute(results)
        if self.cache:
            self._maps[key] = label.copy()
        return label

    def transform(self, results: dict) -> Optional[dict]:
        """Add ``gt_seg_map`` (uint8 ``(H, W)``)."""
        for key in ('img', 'img_id'):
            if key not in results:
                raise KeyError(f'LoadConfidentRegions needs {key!r} (use LoadImageFromFile on '
                               'an ImageLevelLabelDataset)')
        results['gt_seg_map'] = self._label(results)
        results.setdefault('seg_fields', [])
        if 'gt_seg_map' not in results['seg_fields']:
            results['seg_fields'].append('gt_seg_map')
        return results

    def _compute(self, results: dict) -> np.ndarray:
        keys, cams = load_image_cams(self.cam_dir, results, use_refined=self.use_refined,
                                     transform=type(self).__name__)
        img_bgr = results['img']
        crf = None
        img_rgb = None
        if self.crf:
            from ..postprocess.crf import crf_refine

            def crf(c: np.ndarray, img: np.ndarray, bg_power: float) -> np.ndarray:
                return crf_refine(c, img, bg_power=bg_power, fidelity=False)

            img_rgb = np.ascontiguousarray(img_bgr[..., ::-1]).astype(np.uint8)
        return crf_region_labels(cams, keys, img_rgb, la=self.la, ha=self.ha,
                                 crf=crf, ignore_index=self.ignore_index)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(cam_dir={self.cam_dir!r}, la={self.la}, ha={self.ha}, '
                f'crf={self.crf})')
