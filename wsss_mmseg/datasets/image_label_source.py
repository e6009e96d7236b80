"""Base class of the image-level label sources of the pseudo-label job.

The record format, the path rules and the label file formats shared by all sources are
described in :mod:`wsss_mmseg.datasets.image_labels`; the sources are
:mod:`~wsss_mmseg.datasets.voc_image_labels`, :mod:`~wsss_mmseg.datasets.coco_image_labels`
and :mod:`~wsss_mmseg.datasets.folder_image_labels`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np

from .label_files import labels_from_mask

PathLike = Union[str, os.PathLike]
Record = Dict[str, Any]

__all__ = ['ImageLabelSource']


def _read_gt_labels(gt_path: Optional[Path], image_id: str) -> List[int]:
    from PIL import Image
    if gt_path is None or not gt_path.is_file():
        raise FileNotFoundError(
            f'no labels file was given and the GT mask of {image_id!r} to derive '
            f'labels from does not exist: {gt_path}')
    with Image.open(gt_path) as img:
        if img.mode not in ('P', 'L'):
            raise ValueError(f'GT mask {gt_path} has mode {img.mode!r}; expected '
                             'a palette or 8-bit grayscale PNG')
        return labels_from_mask(np.asarray(img))


def _table_class_names(class_table: Optional[str],
                       classes: Optional[Sequence[str]]) -> Optional[List[str]]:
    if classes is not None:
        names = [str(c) for c in classes]
        if not names:
            raise ValueError('classes must not be empty')
        return names
    if class_table is None:
        return None
    from wsss_mmseg.text.vocab import class_names
    return class_names(class_table)


class ImageLabelSource:
    """Base class of the image-level label sources (see :mod:`wsss_mmseg.datasets.image_labels`).

    Subclasses fill ``self._entries`` (list of dicts with ``id``,
    ``img_path``, ``gt_path`` (or None) and either ``label_ids`` or
    ``labels_from``, a mask to derive them from lazily) and
    ``self.class_names``.
    """

    #: Where the labels come from, for messages ("<file>" or "GT masks in <dir>").
    label_source: str = ''

    def __init__(self) -> None:
        self._entries: List[Dict[str, Any]] = []
        self.class_names: Optional[List[str]] = None
        #: List/label files the records were read from (the job fingerprints
        #: their content so that a resumed run notices edited labels).
        self.source_files: List[Path] = []

    @property
    def num_classes(self) -> Optional[int]:
        """Number of classes of :attr:`class_names` (None if unknown)."""
        return None if self.class_names is None else len(self.class_names)

    @property
    def ids(self) -> List[str]:
        """Image ids in source order."""
        return [e['id'] for e in self._entries]

    def __len__(self) -> int:
        return len(self._entries)

    def gt_items(self) -> List[Dict[str, Optional[str]]]:
        """``dict(id, gt_path)`` of every image, without reading any labels."""
        return [dict(id=e['id'],
                     gt_path=None if e.get('gt_path') is None else str(e['gt_path']))
                for e in self._entries]

    def __getitem__(self, index: int) -> Record:
        entry = self._entries[index]
        gt = entry.get('gt_path')
        if 'label_ids' in entry:
            labels = list(entry['label_ids'])
        else:
            labels = _read_gt_labels(entry.get('labels_from'), entry['id'])
        return dict(id=entry['id'], img_path=str(entry['img_path']),
                    label_ids=labels, gt_path=None if gt is None else str(gt))

    def __iter__(self) -> Iterator[Record]:
        for i in range(len(self)):
            yield self[i]

    def _add(self, entry: Dict[str, Any], *, where: str,
             seen: Dict[str, str]) -> None:
        image_id = entry['id']
        if image_id in seen:
            raise ValueError(f'duplicate image id {image_id!r}: {seen[image_id]} '
                             f'and {where}')
        seen[image_id] = where
        self._entries.append(entry)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}({len(self)} images, labels from '
                f'{self.label_source}, {self.num_classes} classes)')
