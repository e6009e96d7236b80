"""``MarkUnlabeled``: mark GT pixels of chosen classes for MaskCLIP+ pseudo labels (spec §2.2, §6 item 7)."""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

__all__ = ['mark_unlabeled', 'MarkUnlabeled']


def mark_unlabeled(seg: np.ndarray, *, classes: Union[str, Sequence[int]], unlabeled_index: int = 254,
                   ignore_index: int = 255) -> np.ndarray:
    """Copy of ``seg`` with the pixels of ``classes`` set to ``unlabeled_index``.

    Args:
        seg: ``(H, W)`` integer label map (after the dataset's label mapping).
        classes: Class ids to mark, or ``'all'`` (every pixel that is not ``ignore_index``).
        unlabeled_index: The marker (254: survives uint8 maps and nearest resizing).
        ignore_index: Ignored pixels (VOC borders, void); never marked.

    Returns:
        The marked map, same dtype as ``seg``.
    """
    seg = np.asarray(seg)
    if isinstance(classes, str):
        if classes != 'all':
            raise ValueError(f"MarkUnlabeled classes must be a list of class ids or 'all', got {classes!r}")
        mark = seg != ignore_index
    else:
        ids = [int(c) for c in classes]
        if any(c in (ignore_index, unlabeled_index) or c < 0 for c in ids):
            raise ValueError(f'MarkUnlabeled classes {ids} must be class ids (not {ignore_index}/{unlabeled_index})')
        mark = np.isin(seg, ids)
    present = set(np.unique(seg).tolist()) - {ignore_index}
    if unlabeled_index in present:
        raise ValueError(f'the label map already contains unlabeled_index={unlabeled_index}; it cannot be a class id')
    out = seg.copy()
    out[mark] = unlabeled_index
    return out


@TRANSFORMS.register_module()
class MarkUnlabeled(BaseTransform):
    """Mark the GT pixels of ``classes`` as ``unlabeled_index`` (254) for MaskCLIP+.

    Put it right after ``LoadAnnotations`` (labels are then already mapped by the dataset, e.g.
    VOC-20 ids 0..19 with background 255). Zero-shot: the unseen class ids; annotation-free:
    ``'all'``. Pixels at ``ignore_index`` (255) stay ignored (the official GT void mask).

    Args:
        classes: Class ids or ``'all'``.
        unlabeled_index: Marker (254; must match the segmentor's ``unlabeled_index``).
        ignore_index: Ignore label (255).
    """

    def __init__(self, classes: Union[str, Sequence[int]], unlabeled_index: int = 254,
                 ignore_index: int = 255) -> None:
        if not 0 <= int(unlabeled_index) <= 255 or int(unlabeled_index) == int(ignore_index):
            raise ValueError(f'unlabeled_index={unlabeled_index} must be in [0, 255] and differ from ignore_index')
        mark_unlabeled(np.zeros((1, 1), np.uint8), classes=classes, unlabeled_index=unlabeled_index,
                       ignore_index=ignore_index)  # validates classes
        self.classes = classes if isinstance(classes, str) else [int(c) for c in classes]
        self.unlabeled_index = int(unlabeled_index)
        self.ignore_index = int(ignore_index)

    def transform(self, results: dict) -> dict:
        """Mark ``results['gt_seg_map']``."""
        if 'gt_seg_map' not in results:
            raise KeyError('MarkUnlabeled needs gt_seg_map: put it after LoadAnnotations')
        results['gt_seg_map'] = mark_unlabeled(results['gt_seg_map'], classes=self.classes,
                                               unlabeled_index=self.unlabeled_index, ignore_index=self.ignore_index)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(classes={self.classes!r}, unlabeled_index={self.unlabeled_index}, '
                f'ignore_index={self.ignore_index})')
