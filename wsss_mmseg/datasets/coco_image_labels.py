"""``COCOImageLabels`` (DATASETS): COCO image list with COCO-80 image-level labels.

Labels come from a COCO instances JSON or from a labels file
(:func:`wsss_mmseg.datasets.label_files.load_label_file`); see
:mod:`wsss_mmseg.datasets.image_labels` for the record format and the path rules.
"""
from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Any, Dict, List, Optional

from mmseg.registry import DATASETS

from .image_label_source import ImageLabelSource, PathLike, _table_class_names
from .label_files import (IMAGE_EXTENSIONS, join_root, load_label_file, read_json, read_split,
                          safe_relative_path, strip_image_ext)

__all__ = ['COCOImageLabels']


def _is_coco_instances(data: Any) -> bool:
    return isinstance(data, dict) and all(
        isinstance(data.get(k), list) for k in ('images', 'annotations', 'categories'))


@DATASETS.register_module()
class COCOImageLabels(ImageLabelSource):
    """COCO image list with COCO-80 image-level labels.

    ``ann_file`` is either a COCO instances JSON (labels = categories of the
    image's annotations, mapped to contiguous indices 0..79 in category-id
    order, crowd annotations included unless ``include_crowd=False``; images
    without annotations are dropped unless ``drop_unlabeled=False``, like the
    official CLIP-ES ``coco14/train.txt``) or a labels file in any format of
    :func:`load_label_file` (e.g. CLIP-ES ``train.txt``: ``id idx idx ...``).

    Args:
        data_root: Dataset root.
        ann_file: Instances JSON or labels file, relative to ``data_root``.
        img_dir: Image folder, relative to ``data_root``.
        gt_dir: Semantic GT folder (0 bg, 1..80, 255 crowd) or None.
        split: Optional id list restricting (and ordering) the images.
        img_suffix: Image suffix for labels files (instances JSON gives file
            names itself).
        gt_suffix: GT mask suffix.
        include_crowd: Count ``iscrowd`` annotations as labels.
        drop_unlabeled: Skip images without any annotation (instances JSON).
        class_table: Class table for labels files; for instances JSON the
            category names of the file are used.
    """

    def __init__(self,
                 data_root: PathLike,
                 ann_file: PathLike = 'annotations/instances_train2014.json',
                 img_dir: PathLike = 'train2014',
                 gt_dir: Optional[PathLike] = None,
                 split: Optional[PathLike] = None,
                 img_suffix: str = '.jpg',
                 gt_suffix: str = '.png',
                 include_crowd: bool = True,
                 drop_unlabeled: bool = True,
                 class_table: Optional[str] = 'coco80') -> None:
        super().__init__()
        root = Path(os.path.expanduser(str(data_root)))
        if not root.is_dir():
            raise FileNotFoundError(f'COCO data_root not found: {root}')
        self.data_root = root
        ann_path = join_root(root, ann_file)
        image_dir = join_root(root, img_dir)
        gt_path_dir = join_root(root, gt_dir)
        self.label_source = str(ann_path)
        self.source_files.append(ann_path)
        self.num_dropped_unlabeled = 0
        candidates: List[Dict[str, Any]] = []
        data = read_json(ann_path) if ann_path.suffix.lower() == '.json' else None
        if _is_coco_instances(data):
            cats = sorted(data['categories'], key=lambda c: c['id'])
            cat_index = {c['id']: i for i, c in enumerate(cats)}
            self.class_names = [str(c['name']) for c in cats]
            per_image: Dict[Any, List[int]] = {}
            for ann in data['annotations']:
                if not include_crowd and ann.get('iscrowd', 0):
                    continue
                cid = ann['category_id']
                if cid not in cat_index:
                    raise ValueError(f'{ann_path}: annotation {ann.get("id")} has '
                                     f'unknown category_id {cid}')
                per_image.setdefault(ann['image_id'], []).append(cat_index[cid])
            for img in data['images']:
                where = f'{ann_path}: image id {img.get("id")}'
                rel = safe_relative_path(str(img['file_name']), root=image_dir,
                                         where=where)
                labels = sorted(set(per_image.get(img['id'], [])))
                if not labels and drop_unlabeled:
                    self.num_dropped_unlabeled += 1
                    continue
                candidates.append(dict(id=strip_image_ext(rel),
                                       img_path=image_dir / rel,
                                       label_ids=labels, where=where))
            if not candidates:
                raise ValueError(f'{ann_path}: no image with a labelled annotation '
                                 f'({len(data["images"])} images, {self.num_dropped_unlabeled} '
                                 'without annotations dropped); nothing to label')
        else:
            self.class_names = _table_class_names(class_table, None)
            table = load_label_file(ann_path)
            for key, labels in table.items():
                key = str(key)
                where = f'{ann_path}: entry {key!r}'
                rel = safe_relative_path(key, root=image_dir, where=where)
                if posixpath.splitext(rel)[1].lower() in IMAGE_EXTENSIONS:
                    image_id, img_path = strip_image_ext(rel), image_dir / rel
                else:
                    image_id, img_path = rel, image_dir / f'{rel}{img_suffix}'
                candidates.append(dict(id=image_id, img_path=img_path,
                                       label_ids=list(labels), where=where))
        if split is not None:
            split_path = join_root(root, split)
            self.source_files.append(split_path)
            by_id = {c['id']: c for c in candidates}
            ordered = []
            for image_id, _, where in read_split(split_path, data_root=root):
                if image_id not in by_id:
                    raise KeyError(f'{where}: image {image_id!r} is not in {ann_path}')
                ordered.append(dict(by_id[image_id], where=where))
            candidates = ordered
        seen: Dict[str, str] = {}
        for c in candidates:
            where = c.pop('where')
            if gt_path_dir is not None:
                gt_file = gt_path_dir / f'{c["id"]}{gt_suffix}'
                c['gt_path'] = gt_file if gt_file.is_file() else None
            self._add(c, where=where, seen=seen)
