"""``FolderImageLabels`` (DATASETS): a folder of images with class *names* per image.

The labels file (JSON object or CSV ``image,labels``) names the classes of each image; names
are matched to the class table (:func:`wsss_mmseg.text.vocab.find_class_index`), an unknown one
raises :class:`UnknownClassError`. See :mod:`wsss_mmseg.datasets.image_labels` for the record
format and the path rules.
"""
from __future__ import annotations

import csv
import io
import os
import posixpath
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mmseg.registry import DATASETS

from wsss_mmseg.text.vocab import close_class_names, find_class_index, normalise_class_name

from .image_label_source import ImageLabelSource, PathLike, _table_class_names
from .label_files import (IMAGE_EXTENSIONS, check_not_empty, join_root, read_json, read_text,
                          safe_relative_path, strip_image_ext)

__all__ = ['FolderImageLabels', 'UnknownClassError']

_LABEL_SEPARATORS = re.compile(r'[;|]')


class UnknownClassError(KeyError):
    """A class name in a labels file is not in the class table.

    A ``KeyError`` whose message prints without the quotes ``KeyError`` adds.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ''


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
