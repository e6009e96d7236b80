"""Image-level label sources for the pseudo-label job.

These are *not* mmseg training datasets: they need no pipeline and load no
pixels. Each one is an ordered, indexable collection of records::

    dict(id='2007_000032',                  # output name (may contain '/')
         img_path='/data/VOC2012/JPEGImages/2007_000032.jpg',
         label_ids=[0, 14],                 # 0-based class indices, no background
         gt_path='/data/.../2007_000032.png' or None)

``len(ds)``, ``ds[i]`` and ``iter(ds)`` work; ``ds.ids`` lists the ids (unique,
in source order); ``ds.class_names`` is the class table the indices refer to
(or None); ``ds.num_classes`` its length. ``ds[i]`` may raise for a single
broken entry (e.g. a missing GT mask when labels are derived from masks); the
job records that as a failure of that image and goes on.

Path rules (all three sources):

* Paths given as constructor arguments (``split``, ``img_dir``, ``labels``,
  ``gt_dir``, ``ann_file``) are joined to ``data_root`` when relative (the mmseg
  convention); absolute ones are used as they are.
* Paths *inside* list/label files are relative to the data root (or image
  folder). Absolute paths and paths whose ``..`` parts leave that root are
  refused with a ``ValueError`` naming the file and line.
* Duplicate ids are an error naming the file and both occurrences.

Label file formats, encodings and the reading rules (BOM skipped; not UTF-8, an empty file, JSON
nested too deeply are errors naming the file; malformed CSV too) live in
:mod:`wsss_mmseg.datasets.label_files` (:func:`load_label_file`: ``.json``, IRN ``.npy``,
``id idx idx ...`` text).

Indices are 0-based class indices (background excluded); their range is
checked by the job against the generator's class table.
"""
from __future__ import annotations

import csv
import io
import os
import posixpath
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from mmseg.registry import DATASETS

from wsss_mmseg.text.vocab import close_class_names, find_class_index, normalise_class_name

from .label_files import (IMAGE_EXTENSIONS, LabelTable, check_not_empty, join_root,
                          labels_from_mask, load_label_file, read_json, read_split, read_text,
                          safe_relative_path, strip_image_ext)

PathLike = Union[str, os.PathLike]
Record = Dict[str, Any]

__all__ = [
    'ImageLabelSource', 'VOCImageLabels', 'COCOImageLabels', 'FolderImageLabels',
    'UnknownClassError', 'load_label_file', 'safe_relative_path',
    'labels_from_mask', 'IMAGE_EXTENSIONS', 'describe_formats',
]

_LABEL_SEPARATORS = re.compile(r'[;|]')


class UnknownClassError(KeyError):
    """A class name in a labels file is not in the class table.

    A ``KeyError`` whose message prints without the quotes ``KeyError`` adds.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ''


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


# -------------------------------------------------------------- base class
class ImageLabelSource:
    """Base class of the image-level label sources (see module docstring).

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


# --------------------------------------------------------------------- VOC
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


# -------------------------------------------------------------------- COCO
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


# ------------------------------------------------------------------ folder
def _split_names(value: Any, *, where: str) -> List[str]:
    if isinstance(value, str):
        parts = _LABEL_SEPARATORS.split(value)
    elif isinstance(value, (list, tuple)):
        parts = []
        for v in value:
            if not isinstance(v, str):
                raise ValueError(f'{where}: class names must be strings, got {v!r}')
            parts.append(v)
    else:
        raise ValueError(f'{where}: expected a list of class names or a '
                         f'";"/"|"-separated string, got {type(value).__name__}')
    return [p.strip() for p in parts if p.strip()]


@DATASETS.register_module()
class FolderImageLabels(ImageLabelSource):
    """A folder of images with class *names* per image.

    Labels file formats:

    * JSON object ``{"<file or id>": ["dog", "cat"], ...}``; a value may also
      be one string with ``;`` or ``|`` between names (``"dog;cat"``).
    * CSV with header ``image,labels`` and one row per image, names separated
      by ``;`` or ``|`` (``cat|dog``); quote fields with commas in names.

    Keys are paths relative to ``img_dir`` (``a.jpg``, ``sub/b.png``) or ids
    without extension (``sub/b``), which must match exactly one image file in
    the folder. The id (output name) is the relative path without extension.
    Only images listed in the labels file are used. Names are matched exactly,
    then case/whitespace/Unicode-normalisation (NFC) insensitively, then through
    the other spelling of a class (COCO's ``couch``, ``tv``, ``motorcycle`` find
    ``sofa``, ``tvmonitor``, ``motorbike`` and the other way round; see
    :func:`wsss_mmseg.text.vocab.find_class_index`); an unknown name raises
    :class:`UnknownClassError` naming the labels file, the image, the name and
    close matches. An image with an empty label list is kept (the job records
    it as a failure: no image-level labels).

    Args:
        img_dir: Image folder (relative to ``data_root`` if given).
        labels: JSON or CSV labels file (relative to ``data_root`` if given).
        class_table: Class table name (``'voc20'``, ``'coco80'``, ...; see
            ``wsss_mmseg.text.vocab``).
        classes: Explicit class names (index order) instead of a table.
        gt_dir: Optional folder of GT masks ``<id>.png``.
        data_root: Optional root joined to the relative paths above.
    """

    def __init__(self,
                 img_dir: PathLike,
                 labels: PathLike,
                 class_table: Optional[str] = None,
                 classes: Optional[Sequence[str]] = None,
                 gt_dir: Optional[PathLike] = None,
                 data_root: Optional[PathLike] = None) -> None:
        super().__init__()
        if img_dir is None or labels is None:
            raise ValueError('FolderImageLabels needs img_dir and labels (set them '
                             'with --cfg-options pseudo_dataset.img_dir=... '
                             'pseudo_dataset.labels=...)')
        if class_table is None and classes is None:
            raise ValueError('FolderImageLabels needs class_table (e.g. "voc20") or '
                             'classes=[...] to map class names to indices')
        if class_table is not None and classes is not None:
            raise ValueError('give either class_table or classes, not both')
        root = None if data_root is None else Path(os.path.expanduser(str(data_root)))
        image_dir = join_root(root, img_dir)
        label_path = join_root(root, labels)
        if not image_dir.is_dir():
            raise FileNotFoundError(f'image folder not found: {image_dir}')
        if not label_path.is_file():
            raise FileNotFoundError(f'labels file not found: {label_path}')
        gt_path_dir = join_root(root, gt_dir)
        self.img_dir = image_dir
        self.label_source = str(label_path)
        self.source_files.append(label_path)
        self.class_table = class_table
        self.class_names = _table_class_names(class_table, classes)
        if classes is not None:
            norm = [normalise_class_name(n) for n in self.class_names]
            if len(set(norm)) != len(norm):
                raise ValueError(f'classes contain duplicates: {self.class_names}')
        rows = self._read_rows(label_path)
        stems: Optional[Dict[str, List[str]]] = None
        seen: Dict[str, str] = {}
        for key, names, where in rows:
            rel = safe_relative_path(key, root=image_dir, where=where)
            if posixpath.splitext(rel)[1].lower() in IMAGE_EXTENSIONS:
                image_id, img_path = strip_image_ext(rel), image_dir / rel
            else:
                if stems is None:
                    stems = self._scan(image_dir)
                found = stems.get(rel, [])
                if len(found) > 1:
                    raise ValueError(f'{where}: id {rel!r} matches several images in '
                                     f'{image_dir}: {found}; use the file name as key')
                image_id = rel
                img_path = image_dir / (found[0] if found else rel)
            label_ids = self._resolve(names, label_path=label_path, image=key)
            entry: Dict[str, Any] = dict(id=image_id, img_path=img_path,
                                         label_ids=label_ids)
            if gt_path_dir is not None:
                gt_file = gt_path_dir / f'{image_id}.png'
                entry['gt_path'] = gt_file if gt_file.is_file() else None
            self._add(entry, where=where, seen=seen)

    @staticmethod
    def _scan(image_dir: Path) -> Dict[str, List[str]]:
        """Map relative path without extension -> image files with that stem."""
        out: Dict[str, List[str]] = {}
        for dirpath, _, files in os.walk(image_dir):
            for name in sorted(files):
                if posixpath.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                    continue
                rel = Path(dirpath, name).relative_to(image_dir).as_posix()
                out.setdefault(strip_image_ext(rel), []).append(rel)
        return out

    @staticmethod
    def _read_rows(path: Path) -> List[Tuple[str, List[str], str]]:
        suffix = path.suffix.lower()
        rows: List[Tuple[str, List[str], str]] = []
        if suffix == '.json':
            data = read_json(path)
            if not isinstance(data, dict):
                raise ValueError(f'{path}: expected a JSON object '
                                 '{"image file or id": ["class", ...]}')
            for key, value in data.items():
                where = f'{path}: entry {key!r}'
                rows.append((key, _split_names(value, where=where), where))
        elif suffix == '.csv':
            reader = csv.reader(io.StringIO(read_text(path), newline=''))
            try:
                header = next(reader, None)
                if header is None or [h.strip().lower() for h in header[:2]] != \
                        ['image', 'labels']:
                    raise ValueError(f'{path}: CSV must start with the header '
                                     f'"image,labels", got {header!r}')
                for row in reader:
                    lineno = reader.line_num
                    if not row or not any(c.strip() for c in row):
                        continue
                    where = f'{path}:{lineno}'
                    if len(row) != 2:
                        raise ValueError(f'{where}: expected 2 columns (image,labels), '
                                         f'got {len(row)}: {row!r} (quote names '
                                         'containing commas)')
                    rows.append((row[0].strip(), _split_names(row[1], where=where),
                                 where))
            except csv.Error as exc:
                raise ValueError(f'{path}:{reader.line_num}: malformed CSV ({exc})') from None
        else:
            raise ValueError(f'labels file {path} must be .json or .csv '
                             f'(got {suffix or "no suffix"!r})')
        check_not_empty(len(rows), path, 'labels file')
        return rows

    def _resolve(self, names: List[str], *, label_path: Path, image: str) -> List[int]:
        assert self.class_names is not None
        out: List[int] = []
        for name in names:
            idx = find_class_index(name, self.class_names)
            if idx is None:
                close = close_class_names(name, self.class_names)
                hint = ('; close matches: ' + ', '.join(repr(c) for c in close)) if close else ''
                table = (f'class table {self.class_table!r}' if self.class_table
                         else 'the given classes')
                raise UnknownClassError(
                    f'labels file {label_path}, image {image!r}: unknown class name '
                    f'{name!r} (not in {table}, {len(self.class_names)} classes)'
                    f'{hint}')
            if idx not in out:
                out.append(idx)
        return out


def describe_formats() -> str:
    """One-paragraph description of the label formats, for ``--help``."""
    return (
        'Label sources (cfg.pseudo_dataset): VOCImageLabels(data_root, split, img_dir, '
        'labels=.json {"labels": {id: [idx..]}} | IRN .npy {id: multi-hot} | .txt "id idx idx", '
        'or None to derive labels from GT masks); COCOImageLabels(data_root, ann_file=instances '
        'JSON or labels file, img_dir); FolderImageLabels(img_dir, labels=.json '
        '{"a.jpg": ["dog", "cat"]} or .csv with header "image,labels" and names separated by '
        '";" or "|", class_table="voc20" or classes=[...]). Indices are 0-based, background '
        'excluded; paths inside label/list files are relative and may not leave their root.')


