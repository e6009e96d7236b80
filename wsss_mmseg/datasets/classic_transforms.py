"""Data side of the classic WSSS baselines (registered in mmseg's DATASETS / TRANSFORMS).

* ``ImageLevelLabelDataset`` (DATASETS): a training/validation dataset for the
  multi-label classifier built from any image-level label source
  (``VOCImageLabels``, ``COCOImageLabels``, ``FolderImageLabels``); each data info
  has ``img_path``, ``img_id``, ``label_ids`` and ``num_classes``.
* ``PackMultiLabelInputs`` (TRANSFORMS): packs the image like ``PackSegInputs``
  and attaches the multi-hot label vector as ``data_sample.gt_multilabel``.
* ``HideAndSeek`` (TRANSFORMS): hides random grid cells (dataset-mean fill).
* ``EraseRegions`` (TRANSFORMS): adversarial erasing of stored regions
  (``<erase_dir>/<img_id>.png``, non-zero = erased) with the mean fill.

Mixup is a batch augmentation: ``MultiLabelDataPreProcessor(mixup=dict(alpha=1.0))``
in :mod:`wsss_mmseg.models.classic` mixes the normalised images and the
``gt_multilabel`` vectors of a batch.

Fill values are given in the channel order of the image at that point of the
pipeline: BGR after ``LoadImageFromFile`` (default: the ImageNet mean in BGR).
"""
from __future__ import annotations

import copy
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.dataset import BaseDataset
from mmseg.registry import DATASETS, TRANSFORMS
from mmseg.structures import SegDataSample

from ..classic.erasing import erase_with_fill
from ..classic.hide_and_seek import apply_hidden_cells, draw_hidden_cells
from ..classic.mixup import multi_hot

__all__ = ['ImageLevelLabelDataset', 'PackMultiLabelInputs', 'HideAndSeek', 'EraseRegions',
           'IMAGENET_MEAN_BGR']

#: ImageNet mean pixel (0-255) in BGR order, the default fill.
IMAGENET_MEAN_BGR = (103.53, 116.28, 123.675)


@DATASETS.register_module()
class ImageLevelLabelDataset(BaseDataset):
    """Images with image-level labels from a label source, for classifier training.

    Config example::

        dict(type='ImageLevelLabelDataset',
             source=dict(type='VOCImageLabels', data_root='data/VOCdevkit/VOC2012',
                         split='ImageSets/Segmentation/train_aug.txt',
                         labels='cls_labels.json', gt_dir=None),
             pipeline=[dict(type='LoadImageFromFile'), ..., dict(type='PackMultiLabelInputs')])

    Args:
        source: Config of a registered label source (``DATASETS``).
        pipeline: Transform configs.
        skip_unlabelled: Drop images without any label (else a ``ValueError``
            names the first one).
        **kwargs: Other ``BaseDataset`` arguments (``serialize_data``,
            ``test_mode``, ``indices`` ...).
    """

    def __init__(self, source: Dict[str, Any], pipeline: Sequence[Any] = (),
                 skip_unlabelled: bool = False, **kwargs: Any) -> None:
        if not isinstance(source, dict) or 'type' not in source:
            raise ValueError(f'source must be a label-source config dict with a type, got '
                             f'{source!r}')
        self.source_cfg = copy.deepcopy(dict(source))
        self.skip_unlabelled = bool(skip_unlabelled)
        self._source = DATASETS.build(copy.deepcopy(self.source_cfg))
        names = self._source.class_names
        if not names:
            raise ValueError(f'{type(self._source).__name__} has no class names; pass '
                             'class_table or classes to the source')
        metainfo = dict(kwargs.pop('metainfo', None) or {})
        metainfo.setdefault('classes', tuple(names))
        super().__init__(pipeline=list(pipeline), metainfo=metainfo, **kwargs)

    def load_data_list(self) -> List[dict]:
        """One info per record: ``img_path``, ``img_id``, ``label_ids``, ``num_classes``."""
        num = len(self._source.class_names)
        out = []
        for record in self._source:
            labels = [int(c) for c in record['label_ids']]
            if not labels:
                if self.skip_unlabelled:
                    continue
                raise ValueError(f'image {record["id"]} ({record["img_path"]}) has no '
                                 'image-level label (skip_unlabelled=True drops such images)')
            bad = [c for c in labels if not 0 <= c < num]
            if bad:
                raise ValueError(f'image {record["id"]}: label ids {bad} out of range for '
                                 f'{num} classes')
            out.append(dict(img_path=record['img_path'], img_id=record['id'],
                            label_ids=labels, num_classes=num, seg_fields=[],
                            reduce_zero_label=False))
        return out


@TRANSFORMS.register_module()
class PackMultiLabelInputs(BaseTransform):
    """Pack the image and the multi-hot label vector (``data_sample.gt_multilabel``).

    Required keys: ``img``, ``label_ids``, ``num_classes``.

    Args:
        meta_keys: Keys copied to the sample's metainfo when present.
    """

    def __init__(self, meta_keys: Sequence[str] = (
            'img_path', 'img_id', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor',
            'flip', 'flip_direction', 'label_ids')) -> None:
        self.meta_keys = tuple(meta_keys)

    def transform(self, results: dict) -> dict:
        """``dict(inputs=(C, H, W) tensor, data_samples=SegDataSample)``."""
        for key in ('img', 'label_ids', 'num_classes'):
            if key not in results:
                raise KeyError(f'PackMultiLabelInputs needs {key!r} in the results '
                               '(use ImageLevelLabelDataset)')
        img = results['img']
        if img.ndim == 2:
            img = img[..., None]
        inputs = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        sample = SegDataSample()
        sample.gt_multilabel = multi_hot(results['label_ids'], int(results['num_classes']))
        sample.set_metainfo({k: results[k] for k in self.meta_keys if k in results})
        return dict(inputs=inputs, data_samples=sample)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(meta_keys={self.meta_keys})'


def _check_fill(fill: Union[float, Sequence[float]]) -> List[float]:
    values = [float(v) for v in np.asarray(fill, dtype=np.float64).reshape(-1)]
    if not values:
        raise ValueError('fill must have at least one value')
    return values


@TRANSFORMS.register_module()
class HideAndSeek(BaseTransform):
    """Hide-and-Seek: hide every grid cell with probability ``prob`` (training only).

    Per image a cell side is drawn from ``grid_sizes``, then each cell of the
    grid is hidden independently; hidden pixels take ``fill``. The drawn grid
    size and the bool cell grid are recorded in ``results['hide_grid_size']``
    and ``results['hidden_cells']``.

    Args:
        grid_sizes: Candidate cell sides in pixels (paper: 16, 32, 44, 56).
        prob: Per-cell hiding probability (paper: 0.5).
        fill: Fill value(s) in the image channel order (default ImageNet mean, BGR).
        seed: Seed of a private generator (reproducible sequence); None draws
            from numpy's global RNG (seeded by mmengine's ``randomness``).
    """

    def __init__(self, grid_sizes: Sequence[int] = (16, 32, 44, 56), prob: float = 0.5,
                 fill: Union[float, Sequence[float]] = IMAGENET_MEAN_BGR,
                 seed: Optional[int] = None) -> None:
        self.grid_sizes = tuple(int(g) for g in grid_sizes)
        if not self.grid_sizes or any(g < 1 for g in self.grid_sizes):
            raise ValueError(f'grid_sizes must be positive, got {list(grid_sizes)}')
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f'prob must be in [0, 1], got {prob}')
        self.prob = float(prob)
        self.fill = _check_fill(fill)
        self.seed = seed
        self._rng = np.random.default_rng(seed) if seed is not None else None

    def transform(self, results: dict) -> dict:
        """Hide cells of ``results['img']``."""
        rng = self._rng if self._rng is not None else \
            np.random.default_rng(np.random.randint(0, 2 ** 31 - 1))
        img = results['img']
        g = self.grid_sizes[int(rng.integers(len(self.grid_sizes)))]
        cells = draw_hidden_cells(img.shape[0], img.shape[1], grid_size=g, prob=self.prob,
                                  rng=rng)
        results['img'] = apply_hidden_cells(img, cells, grid_size=g, fill=self.fill)
        results['hide_grid_size'] = g
        results['hidden_cells'] = cells
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(grid_sizes={self.grid_sizes}, prob={self.prob}, '
                f'fill={self.fill}, seed={self.seed})')


@TRANSFORMS.register_module()
class EraseRegions(BaseTransform):
    """Erase stored regions (adversarial erasing) with the mean pixel.

    Reads ``<erase_dir>/<img_id><suffix>`` (a PNG at the original image size,
    non-zero = erased) and fills those pixels. Put it directly after
    ``LoadImageFromFile`` (before any geometric transform). ``erase_dir=None``
    is a no-op (round 0). ``tools/adversarial_erasing.py`` sets ``erase_dir``.

    Args:
        erase_dir: Folder of the region masks, or None.
        suffix: Mask file suffix.
        fill: Fill value(s) in the image channel order (default ImageNet mean, BGR).
    """

    def __init__(self, erase_dir: Optional[str] = None, suffix: str = '.png',
                 fill: Union[float, Sequence[float]] = IMAGENET_MEAN_BGR) -> None:
        self.erase_dir = erase_dir
        self.suffix = suffix
        self.fill = _check_fill(fill)

    def transform(self, results: dict) -> dict:
        """Erase the regions of ``results['img_id']``."""
        if self.erase_dir is None:
            return results
        if 'img_id' not in results:
            raise KeyError('EraseRegions needs results["img_id"] (use ImageLevelLabelDataset)')
        path = osp.join(self.erase_dir, f'{results["img_id"]}{self.suffix}')
        if not osp.isfile(path):
            raise FileNotFoundError(f'erase mask not found: {path}')
        from PIL import Image
        with Image.open(path) as im:
            mask = np.asarray(im) != 0
        if mask.shape != results['img'].shape[:2]:
            raise ValueError(f'erase mask {path} has shape {mask.shape}, the image '
                             f'{results["img"].shape[:2]}')
        results['img'] = erase_with_fill(results['img'], mask, fill=self.fill)
        results['erased_fraction'] = float(mask.mean())
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(erase_dir={self.erase_dir!r}, fill={self.fill})'

