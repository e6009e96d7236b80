"""``LoadSECCues`` (TRANSFORMS): SEC localisation cues from saved CAMs (+ optional saliency).

Reads ``<cam_dir>/<img_id>.npy`` (``tools/generate_pseudo.py --save-cams`` with ANY generator:
a classic classifier's CAMs or CLIP-ES's, so SEC can run on CLIP cues), computes the cue map
(:func:`wsss_mmseg.classic.sec.sec_cues`) and stores it as ``gt_seg_map`` in ``seg_fields``.
With ``LoadSaliencyMap`` earlier in the pipeline (``results['saliency']``), the background cue
is the low-saliency region instead of the low-CAM region.
"""
from __future__ import annotations

from typing import Optional

from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from ..classic.sec import sec_cues
from .affinity_labels import load_image_cams

__all__ = ['LoadSECCues']


@TRANSFORMS.register_module()
class LoadSECCues(BaseTransform):
    """SEC cue map (0 background, class + 1, 255 no cue) as ``gt_seg_map``.

    Required keys: ``img`` (before any resize), ``img_id``; optional ``saliency``.

    Args:
        cam_dir: Folder of ``<img_id>.npy`` CAM files.
        use_refined: Use ``cam_refined`` when the file has it.
        fg_ratio: Foreground threshold (0.2).
        fg_rule: ``'max_ratio'`` (``cam >= 0.2 * max``) or ``'top_fraction'``.
        bg_cam: Background cue ``max_k cam_k < bg_cam`` (without saliency).
        bg_saliency: Background cue ``saliency < bg_saliency`` (with saliency).
        ignore_index: Value of pixels without cue.
    """

    def __init__(self, cam_dir: str, use_refined: bool = False, fg_ratio: float = 0.2,
                 fg_rule: str = 'max_ratio', bg_cam: float = 0.1, bg_saliency: float = 0.1,
                 ignore_index: int = 255) -> None:
        if not cam_dir:
            raise ValueError('LoadSECCues needs cam_dir (the cams/ folder of '
                             'tools/generate_pseudo.py --save-cams)')
        if fg_rule not in ('max_ratio', 'top_fraction'):
            raise ValueError(f"LoadSECCues fg_rule must be 'max_ratio' or 'top_fraction', got "
                             f'{fg_rule!r}')
        if not 0.0 < fg_ratio < 1.0:
            raise ValueError(f'LoadSECCues fg_ratio must be in (0, 1), got {fg_ratio}')
        self.cam_dir = str(cam_dir)
        self.use_refined = bool(use_refined)
        self.kw = dict(fg_ratio=float(fg_ratio), fg_rule=fg_rule, bg_cam=float(bg_cam),
                       bg_saliency=float(bg_saliency), ignore_index=int(ignore_index))

    def transform(self, results: dict) -> Optional[dict]:
        """Add ``gt_seg_map`` (uint8 ``(H, W)``)."""
        for key in ('img', 'img_id'):
            if key not in results:
                raise KeyError(f'LoadSECCues needs {key!r} (use LoadImageFromFile on an '
                               'ImageLevelLabelDataset)')
        keys, cams = load_image_cams(self.cam_dir, results, use_refined=self.use_refined,
                                     transform='LoadSECCues')
        results['gt_seg_map'] = sec_cues(cams, keys, saliency=results.get('saliency'),
                                         **self.kw)
        results.setdefault('seg_fields', [])
        if 'gt_seg_map' not in results['seg_fields']:
            results['seg_fields'].append('gt_seg_map')
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(cam_dir={self.cam_dir!r}, {self.kw})'
