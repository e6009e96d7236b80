"""Reading list and label files safely: paths, encodings, formats (no mmseg imports).

Path rules for entries read from a file: relative to their root folder; absolute paths and paths
whose ``..`` parts leave the root are refused with a ``ValueError`` naming the file and line
(:func:`safe_relative_path`). Duplicate ids are an error naming both occurrences.

Label file formats understood by :func:`load_label_file`:

* ``.json``: ``{"labels": {id: [idx, ...]}, ...}`` (the layout of ``cls_labels.json`` in the shared
  sample data; other top-level keys such as ``class_names`` are ignored) or a plain
  ``{id: [idx, ...]}``.
* ``.npy``: IRN-style ``cls_labels.npy``, a pickled dict ``id -> multi-hot vector`` (float, length C;
  entries > 0.5 are present), unpickled with an allow-list (numpy arrays and dicts only). IRN's
  integer keys (``2007000032`` for ``2007_000032``) are matched too.
* ``.txt`` (any other suffix): CLIP-ES / COCO style, one image per line, ``id idx idx ...``
  separated by whitespace; ``#`` starts a comment line.

All list and label files are read as UTF-8; a leading byte-order mark (as Windows editors write it)
is skipped. A file that is not UTF-8, JSON nested too deeply to parse, and a file that lists no image
at all are errors naming the file.
"""
from __future__ import annotations

import json
import os
import pickle
import posixpath
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

PathLike = Union[str, os.PathLike]

__all__ = ['IMAGE_EXTENSIONS', 'LabelTable', 'check_not_empty', 'join_root', 'labels_from_mask',
           'load_label_file', 'read_json', 'read_split', 'read_text', 'safe_relative_path',
           'strip_image_ext']

#: File extensions treated as images when a folder is scanned (lower case).
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp',
                    '.gif', '.ppm', '.pgm', '.pbm')
_IRN_ID = re.compile(r'^(\d{4})_(\d{6})$')


def join_root(root: Optional[Path], value: Optional[PathLike]) -> Optional[Path]:
    """Join a constructor path to ``root`` when it is relative."""
    if value is None:
        return None
    p = Path(os.path.expanduser(str(value)))
    if p.is_absolute() or root is None:
        return p
    return root / p


def safe_relative_path(entry: str, *, root: PathLike, where: str) -> str:
    """Check a path read from a list/label file and normalise it.

    Args:
        entry: Path as written in the file (``/`` or ``\\`` separators).
        root: The folder it is relative to (used in the message only).
        where: ``'<file>:<line>'`` or similar, for the message.

    Returns:
        The normalised POSIX relative path (no ``.`` parts).

    Raises:
        ValueError: Empty, absolute (``/x``, ``\\x``, ``C:x``) or escaping
            ``root`` through ``..``.
    """
    raw = entry.strip()
    norm = raw.replace('\\', '/')
    if not norm:
        raise ValueError(f'{where}: empty path')
    if norm.startswith('/') or re.match(r'^[A-Za-z]:', norm) or os.path.isabs(raw):
        raise ValueError(
            f'{where}: absolute path {entry!r} refused; paths in list files must '
            f'be relative to {root}')
    clean = posixpath.normpath(norm)
    if clean == '..' or clean.startswith('../'):
        raise ValueError(f'{where}: path {entry!r} leaves the root folder {root} '
                         '(".." escapes it)')
    if clean == '.':
        raise ValueError(f'{where}: path {entry!r} names the root folder itself')
    return clean


def strip_image_ext(rel: str) -> str:
    stem, ext = posixpath.splitext(rel)
    return stem if ext.lower() in IMAGE_EXTENSIONS else rel


def _looks_like_path(token: str) -> bool:
    return '/' in token or '\\' in token or \
        posixpath.splitext(token)[1].lower() in IMAGE_EXTENSIONS


def _dedupe(values: Sequence[int]) -> List[int]:
    out: List[int] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def _as_index_list(value: Any, *, where: str) -> List[int]:
    """Validate a list of integer class indices from a labels file."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise ValueError(f'{where}: labels must be a list of class indices, got '
                         f'{type(value).__name__}')
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f'{where}: label {v!r} is not an integer class index')
        out.append(int(v))
    return _dedupe(out)


def _json_no_duplicates(path: Path):
    def hook(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
        seen: Dict[str, Any] = {}
        for k, v in pairs:
            if k in seen:
                raise ValueError(f'{path}: duplicate key {k!r} in JSON object')
            seen[k] = v
        return seen
    return hook


def read_text(path: Path) -> str:
    """The text of a list/label file: UTF-8, a leading byte-order mark dropped.

    Raises:
        ValueError: The file is not UTF-8 (the message names the file and the byte offset).
    """
    try:
        with open(path, encoding='utf-8-sig', newline='') as f:
            return f.read()
    except UnicodeDecodeError as exc:
        raise ValueError(f'{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save it as '
                         'UTF-8') from None


def _text_lines(path: Path) -> List[str]:
    """Lines of a list/label file (see :func:`_read_text`), without line ends."""
    return read_text(path).splitlines()


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f'labels file not found: {path}')
    text = read_text(path)
    try:
        return json.loads(text, object_pairs_hook=_json_no_duplicates(path))
    except json.JSONDecodeError as exc:
        raise ValueError(f'{path}: invalid JSON ({exc})') from exc
    except RecursionError:
        raise ValueError(f'{path}: JSON nested too deeply to read (a labels file is an '
                         'object of lists)') from None


def check_not_empty(count: int, path: Path, what: str) -> None:
    """An empty list/label file is an error: a job over it would do nothing and report success."""
    if count == 0:
        raise ValueError(f'{path}: {what} lists no image (an empty or comment-only file); '
                         'nothing to label')


class LabelTable:
    """id -> label indices, with IRN integer-key fallback for ``.npy`` files."""

    def __init__(self, path: Path, table: Dict[Any, List[int]]) -> None:
        self.path = path
        self.table = table

    def __contains__(self, image_id: str) -> bool:
        return self._key(image_id) is not None

    def _key(self, image_id: str) -> Any:
        if image_id in self.table:
            return image_id
        m = _IRN_ID.match(image_id)
        if m is not None:
            as_int = int(m.group(1) + m.group(2))
            for k in (as_int, str(as_int)):
                if k in self.table:
                    return k
        return None

    def get(self, image_id: str) -> List[int]:
        key = self._key(image_id)
        if key is None:
            raise KeyError(f'image {image_id!r} has no entry in labels file {self.path}')
        return list(self.table[key])

    def keys(self) -> List[str]:
        return [str(k) for k in self.table]


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts of numpy arrays and scalars only: nothing else can be called."""

    _ALLOWED = {(m, n) for m in ('numpy.core.multiarray', 'numpy._core.multiarray')
                for n in ('_reconstruct', 'scalar')} | {
        ('numpy', 'ndarray'), ('numpy', 'dtype'), ('collections', 'OrderedDict')}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f'refusing to load {module}.{name}: a labels .npy may only hold a dict of '
            'numpy arrays (a pickle naming other callables can run arbitrary code)')


def _load_npy_restricted(path: Path) -> np.ndarray:
    """``np.load`` for ``.npy`` files whose object payload is unpickled restrictedly."""
    with open(path, 'rb') as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f'unsupported .npy version {version}')
        if not dtype.hasobject:
            f.seek(0)
            return np.load(f, allow_pickle=False)
        obj = _NumpyOnlyUnpickler(f).load()
    if not isinstance(obj, np.ndarray):
        raise ValueError(f'the object payload is a {type(obj).__name__}, not an array')
    return obj


def load_label_file(path: PathLike) -> Dict[Any, List[int]]:
    """Read an image-level label file (formats in the module docstring).

    Args:
        path: ``.json``, ``.npy`` or text file.

    Returns:
        Mapping id -> list of 0-based class indices (file order, duplicates
        removed). ``.npy`` files may have integer keys (IRN).

    Raises:
        FileNotFoundError: Missing file.
        ValueError: Malformed content, not UTF-8, no entry at all, or duplicate ids
            (message names the file, and the line for text files). A UTF-8 byte-order mark
            is skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'labels file not found: {path}')
    suffix = path.suffix.lower()
    table: Dict[Any, List[int]] = {}
    if suffix == '.json':
        data = read_json(path)
        if isinstance(data, dict) and isinstance(data.get('labels'), dict):
            data = data['labels']
        if not isinstance(data, dict):
            raise ValueError(f'{path}: expected an object {{id: [indices]}} or '
                             f'{{"labels": {{id: [indices]}}}}')
        for k, v in data.items():
            table[str(k)] = _as_index_list(v, where=f'{path}: entry {k!r}')
    elif suffix == '.npy':
        try:
            obj = _load_npy_restricted(path)
        except (ValueError, OSError, EOFError, RecursionError, pickle.UnpicklingError) as exc:
            raise ValueError(f'{path}: cannot read .npy labels ({exc})') from exc
        if obj.dtype != object or obj.shape != () or not isinstance(obj.item(), dict):
            raise ValueError(f'{path}: expected a pickled dict id -> multi-hot vector '
                             '(IRN cls_labels.npy)')
        for k, v in obj.item().items():
            where = f'{path}: entry {k!r}'
            arr = np.asarray(v)
            if arr.ndim == 1 and np.issubdtype(arr.dtype, np.floating):
                table[k] = np.flatnonzero(arr > 0.5).tolist()
            elif arr.ndim == 1 and arr.dtype == bool:
                table[k] = np.flatnonzero(arr).tolist()
            else:
                table[k] = _as_index_list(v, where=where)
    else:
        lines: Dict[str, int] = {}
        for lineno, line in enumerate(_text_lines(path), 1):
            tokens = line.split()
            if not tokens or tokens[0].startswith('#'):
                continue
            image_id = tokens[0]
            if image_id in lines:
                raise ValueError(f'{path}: duplicate id {image_id!r} on lines '
                                 f'{lines[image_id]} and {lineno}')
            lines[image_id] = lineno
            try:
                idx = [int(t) for t in tokens[1:]]
            except ValueError:
                raise ValueError(f'{path}:{lineno}: expected "id idx idx ...", got '
                                 f'{line.strip()!r}') from None
            table[image_id] = _dedupe(idx)
    check_not_empty(len(table), path, 'labels file')
    return table


def labels_from_mask(mask: np.ndarray, *, ignore_index: int = 255) -> List[int]:
    """Image-level labels of a semantic mask (values minus 0 and ignore, minus 1).

    Args:
        mask: Integer mask, 0 = background, ``c + 1`` = class ``c``.
        ignore_index: Value to drop besides 0.

    Returns:
        Sorted 0-based class indices.
    """
    values = np.unique(np.asarray(mask))
    return [int(v) - 1 for v in values if v != 0 and v != ignore_index]


def read_split(split: Path, *, data_root: Path) -> List[Tuple[str, Optional[str], str]]:
    """Parse a split list: returns (id, relative image path or None, where)."""
    if not split.is_file():
        raise FileNotFoundError(f'split file not found: {split}')
    out = []
    for lineno, line in enumerate(_text_lines(split), 1):
        tokens = line.split()
        if not tokens or tokens[0].startswith('#'):
            continue
        token = tokens[0]
        where = f'{split}:{lineno}'
        if _looks_like_path(token):
            rel = safe_relative_path(token, root=data_root, where=where)
            image_id = posixpath.basename(strip_image_ext(rel))
            out.append((image_id, rel, where))
        else:
            rel_id = safe_relative_path(token, root=data_root, where=where)
            out.append((rel_id, None, where))
    check_not_empty(len(out), split, 'split list')
    return out
