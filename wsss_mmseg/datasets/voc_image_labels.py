"""``VOCImageLabels`` (DATASETS): PASCAL VOC(-style) split list with image-level labels.

Labels come from a labels file (:func:`wsss_mmseg.datasets.label_files.load_label_file`) or
from the GT masks; see :mod:`wsss_mmseg.datasets.image_labels` for the record format and the
path rules.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from mmseg.registry import DATASETS

from .image_label_source import ImageLabelSource, PathLike, _table_class_names
from .label_files import LabelTable, join_root, load_label_file, read_split

__all__ = ['VOCImageLabels']


@DATASETS.register_module()
class VOCImageLabels(ImageLabelSource):
    """PASCAL VOC(-style) image list with image-level labels.

    Records come from the split file (one id per line; or a path relative to
    ``data_root`` as first token, e.g. ``JPEGImages/x.jpg``); labels from a
    labels file (``.json``/``.npy``/``.txt``, see :func:`load_label_file`) or,
    when ``labels`` is None, from the GT masks (unique values minus 0 and 255,
    minus 1; read lazily per image).

    Args:
        data_root: Dataset root (e.g. ``data/VOCdevkit/VOC2012``).
        split: Split list, relative to ``data_root``.
        img_dir: Image folder, relative to ``data_root``.
        labels: Labels file relative to ``data_root`` (or absolute), or None to
            derive labels from GT masks.
        gt_dir: GT mask folder relative to ``data_root``; when it does not exist
            records get ``gt_path=None`` (no evaluation).
        img_suffix: Image file suffix.
        gt_suffix: GT mask file suffix.
        class_table: Class table of the indices (``wsss_mmseg.text.vocab``).
        classes: Explicit class names instead of ``class_table``.
    """

    def __init__(self,
                 data_root: PathLike,
                 split: PathLike = 'ImageSets/Segmentation/train_aug.txt',
                 img_dir: PathLike = 'JPEGImages',
                 labels: Optional[PathLike] = None,
                 gt_dir: Optional[PathLike] = 'SegmentationClassAug',
                 img_suffix: str = '.jpg',
                 gt_suffix: str = '.png',
                 class_table: Optional[str] = 'voc20',
                 classes: Optional[Sequence[str]] = None) -> None:
        super().__init__()
        root = Path(os.path.expanduser(str(data_root)))
        if not root.is_dir():
            raise FileNotFoundError(f'VOC data_root not found: {root}')
        self.data_root = root
        split_path = join_root(root, split)
        image_dir = join_root(root, img_dir)
        gt_path_dir = join_root(root, gt_dir)
        has_gt = gt_path_dir is not None and gt_path_dir.is_dir()
        self.class_names = _table_class_names(class_table, classes)
        table: Optional[LabelTable] = None
        if labels is not None:
            label_path = join_root(root, labels)
            table = LabelTable(label_path, load_label_file(label_path))
            self.label_source = str(label_path)
            self.source_files.append(label_path)
        else:
            if not has_gt:
                raise FileNotFoundError(
                    f'VOCImageLabels: no labels file given and the GT folder '
                    f'{gt_path_dir} to derive labels from does not exist')
            self.label_source = f'GT masks in {gt_path_dir}'
        self.source_files.append(split_path)
        seen: Dict[str, str] = {}
        for image_id, rel, where in read_split(split_path, data_root=root):
            img_path = root / rel if rel is not None else image_dir / f'{image_id}{img_suffix}'
            entry: Dict[str, Any] = dict(id=image_id, img_path=img_path)
            gt_file = gt_path_dir / f'{image_id}{gt_suffix}' if has_gt else None
            entry['gt_path'] = gt_file if gt_file is not None and gt_file.is_file() else None
            if table is not None:
                if image_id not in table:
                    raise KeyError(f'{where}: image {image_id!r} has no entry in '
                                   f'labels file {table.path}')
                entry['label_ids'] = table.get(image_id)
            else:
                entry['labels_from'] = gt_file  # read lazily; may be missing
            self._add(entry, where=where, seen=seen)
