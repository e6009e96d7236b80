"""Loaders for the text-side vocabulary shipped as JSON under ``wsss_mmseg/text/data``.

Four kinds of data live there (one JSON file each, keys starting with ``_`` are
comments or alias tables):

* ``class_names.json`` -- class-name tables in label-index order (``voc20``,
  ``voc21``, ``coco80``, ``context59``, ``coco_stuff171``, ``ade150``,
  ``cityscapes19`` and readable variants such as ``voc20_readable``).
* ``synonyms.json`` -- class-name replacements (CLIP-ES synonym fusion).
* ``background.json`` -- background word sets (CLIP-ES VOC/COCO, MaskCLIP demo).
* ``templates.json`` -- prompt template sets (``clip_es``, ``openai80``,
  ``scene5``, ``maskclip85``, ``single``, ``pacl7``).

Every loader returns a fresh copy, so callers may mutate the result freely.
This module only needs the standard library.
"""
from __future__ import annotations

import difflib
import json
import operator
import os
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

DATA_DIR: Path = Path(__file__).resolve().parent / 'data'

#: kind -> (file name, payload key holding the list/dict of each entry)
_KINDS: Dict[str, tuple] = {
    'class_names': ('class_names.json', 'names'),
    'synonyms': ('synonyms.json', 'replacements'),
    'background': ('background.json', 'words'),
    'templates': ('templates.json', 'templates'),
}

ClassRef = Union[str, int]


def normalise_class_name(name: str) -> str:
    """Lookup form of a class name: Unicode NFC, whitespace collapsed, case folded.

    NFC makes a name typed with a combining accent (``e`` + U+0301) equal to the precomposed one
    (U+00E9), as label files written on different systems spell them.

    Args:
        name: A class name.

    Returns:
        The normalised name.
    """
    folded = ' '.join(unicodedata.normalize('NFC', name).split()).casefold()
    return unicodedata.normalize('NFC', folded)


def _check_str_list(values: Any, *, where: str, allow_empty: bool = False) -> List[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError(f'{where}: expected a list of strings, got {type(values).__name__}')
    if not values and not allow_empty:
        raise ValueError(f'{where}: list is empty')
    return values


def check_template(template: str, *, where: str = 'template') -> str:
    """Validate one prompt template.

    Args:
        template: A template string such as ``'a photo of a {}.'``.
        where: Context used in the error message.

    Returns:
        The template unchanged.

    Raises:
        ValueError: If the template is not a string, does not contain exactly one
            ``{}`` placeholder or contains any other brace.
    """
    if not isinstance(template, str):
        raise ValueError(f'{where}: template must be a str, got {type(template).__name__}')
    if template.count('{}') != 1 or template.replace('{}', '').count('{') or \
            template.replace('{}', '').count('}'):
        raise ValueError(f'{where}: template {template!r} must contain exactly one "{{}}" '
                         'placeholder and no other braces')
    return template


def _validate(kind: str, path: Path, data: Any) -> Dict[str, Any]:
    """Check the structure of one data file; raise ValueError naming the file."""
    _, payload_key = _KINDS[kind]
    if not isinstance(data, dict):
        raise ValueError(f'{path}: top level must be a JSON object')
    for name, entry in data.items():
        if name.startswith('_'):
            continue
        where = f'{path}: entry {name!r}'
        if not isinstance(entry, dict) or payload_key not in entry:
            raise ValueError(f'{where}: must be an object with a {payload_key!r} field')
        payload = entry[payload_key]
        if kind == 'synonyms':
            if not isinstance(payload, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) and v.strip()
                    for k, v in payload.items()):
                raise ValueError(f'{where}: {payload_key!r} must map class names to '
                                 'non-empty strings')
        else:
            _check_str_list(payload, where=f'{where} field {payload_key!r}')
            if any(not v.strip() for v in payload):
                raise ValueError(f'{where}: contains an empty name')
            if kind == 'templates':
                for t in payload:
                    check_template(t, where=where)
            if kind == 'class_names':
                norm = [normalise_class_name(v) for v in payload]
                if len(set(norm)) != len(norm):
                    raise ValueError(f'{where}: class names are not unique')
    aliases = data.get('_aliases', {})
    if not isinstance(aliases, dict):
        raise ValueError(f'{path}: "_aliases" must be an object')
    if '_spelling_aliases' in data:
        groups = data['_spelling_aliases'].get('groups') if isinstance(
            data['_spelling_aliases'], dict) else None
        if not isinstance(groups, list):
            raise ValueError(f'{path}: "_spelling_aliases" must be an object with a "groups" list')
        seen: Dict[str, int] = {}
        for i, group in enumerate(groups):
            _check_str_list(group, where=f'{path}: _spelling_aliases group {i}')
            for name in group:
                key = normalise_class_name(name)
                if key in seen:
                    raise ValueError(f'{path}: spelling {name!r} is in _spelling_aliases groups '
                                     f'{seen[key]} and {i}')
                seen[key] = i
    return data


@lru_cache(maxsize=None)
def _load_kind(kind: str) -> Dict[str, Any]:
    file_name, _ = _KINDS[kind]
    path = DATA_DIR / file_name
    if not path.is_file():
        raise FileNotFoundError(f'text data file {path} is missing (broken installation?)')
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f'{path}: invalid JSON ({e})') from e
    return _validate(kind, path, data)


def _check_kind(kind: str) -> None:
    if kind not in _KINDS:
        raise KeyError(f'unknown data kind {kind!r}; available: {sorted(_KINDS)}')


def list_tables(*, kind: str = 'class_names') -> List[str]:
    """Names of the shipped tables of one kind.

    Args:
        kind: One of ``'class_names'``, ``'synonyms'``, ``'background'``,
            ``'templates'``.

    Returns:
        Sorted table names (aliases such as ``'clip_es'`` are not included; see
        :func:`resolve_alias`).

    Raises:
        KeyError: Unknown ``kind``.
    """
    _check_kind(kind)
    return sorted(k for k in _load_kind(kind) if not k.startswith('_'))


def _entry(kind: str, name: str) -> Dict[str, Any]:
    _check_kind(kind)
    if not isinstance(name, str):
        raise KeyError(f'{kind} table name must be a str, got {type(name).__name__}')
    data = _load_kind(kind)
    if name.startswith('_') or name not in data:
        aliases = sorted(data.get('_aliases', {}))
        hint = f' (table-dependent aliases: {aliases}, see resolve_alias)' if aliases else ''
        raise KeyError(f'unknown {kind} table {name!r}; available: {list_tables(kind=kind)}{hint}')
    return data[name]


def table_info(name: str, *, kind: str = 'class_names') -> Dict[str, Any]:
    """Full JSON entry of a table (payload plus ``source``/``note`` provenance).

    Args:
        name: Table name.
        kind: Data kind, see :func:`list_tables`.

    Returns:
        A deep copy of the JSON object of that table.

    Raises:
        KeyError: Unknown kind or table (the message lists the available ones).
    """
    return json.loads(json.dumps(_entry(kind, name)))


def resolve_alias(name: str, *, kind: str, table: Optional[str]) -> str:
    """Resolve a table-dependent alias (e.g. synonyms ``'clip_es'``) to a concrete set.

    Args:
        name: Alias or concrete set name.
        kind: ``'synonyms'`` or ``'background'`` (any kind is accepted).
        table: Class table the set is meant for (``'voc20'``, ``'coco80'``, ...).

    Returns:
        The concrete set name; ``name`` itself when it is not an alias.

    Raises:
        KeyError: ``name`` is an alias with no set for ``table``.
    """
    _check_kind(kind)
    aliases = _load_kind(kind).get('_aliases', {})
    if name not in aliases:
        return name
    per_table = aliases[name]
    if table not in per_table:
        raise KeyError(f'{kind} alias {name!r} has no set for class table {table!r}; '
                       f'it is defined for {sorted(per_table)}; pick one of '
                       f'{list_tables(kind=kind)} explicitly')
    return per_table[table]


def class_names(table: str) -> List[str]:
    """Class names of a table in label-index order.

    Args:
        table: Table name, e.g. ``'voc20'``, ``'coco80'``, ``'ade150'``.

    Returns:
        List of class names (a copy).

    Raises:
        KeyError: Unknown table (the message lists the available ones).
    """
    return list(_entry('class_names', table)['names'])


@lru_cache(maxsize=None)
def _spelling_groups() -> Dict[str, tuple]:
    """Normalised spelling -> all normalised spellings of its group (``_spelling_aliases``)."""
    groups = _load_kind('class_names').get('_spelling_aliases', {}).get('groups', [])
    out: Dict[str, tuple] = {}
    for group in groups:
        norm = tuple(normalise_class_name(n) for n in group)
        for n in norm:
            out[n] = norm
    return out


def spelling_variants(name: str) -> List[str]:
    """The other spellings of a class shipped in ``class_names.json`` ``_spelling_aliases``.

    Args:
        name: A class name in any spelling (``'couch'``, ``'sofa'``, ``'TV'``).

    Returns:
        The normalised other spellings (``['sofa']`` for ``'couch'``); empty when the name has none.
    """
    key = normalise_class_name(name)
    return [n for n in _spelling_groups().get(key, ()) if n != key]


def find_class_index(name: str, names: Sequence[str]) -> Optional[int]:
    """Index of a class name in a list of class names, or None.

    Matching order: exact; then after :func:`normalise_class_name` (NFC, whitespace, case); then
    through the other spellings of the name (:func:`spelling_variants`: COCO's ``'motorcycle'``
    finds VOC's ``'motorbike'`` and the other way round).

    Args:
        name: The requested name.
        names: Class names in index order.

    Returns:
        The index, or None when nothing matches.
    """
    for i, n in enumerate(names):
        if n == name:
            return i
    loose = {}
    for i, n in enumerate(names):
        loose.setdefault(normalise_class_name(n), i)
    key = normalise_class_name(name)
    if key in loose:
        return loose[key]
    hits = {loose[v] for v in spelling_variants(name) if v in loose}
    return hits.pop() if len(hits) == 1 else None


def close_class_names(name: str, names: Sequence[str], *, n: int = 3) -> List[str]:
    """Entries of ``names`` that look like ``name`` (for "did you mean" hints).

    Other spellings of the entries count: ``'couches'`` suggests ``'sofa'`` through ``'couch'``.

    Args:
        name: The unknown name.
        names: Class names in index order.
        n: At most this many suggestions.

    Returns:
        Entries of ``names``, best first.
    """
    spelled: Dict[str, int] = {}
    for i, entry in enumerate(names):
        spelled.setdefault(normalise_class_name(entry), i)
    for i, entry in enumerate(names):
        for v in spelling_variants(entry):
            spelled.setdefault(v, i)
    out: List[str] = []
    for match in difflib.get_close_matches(normalise_class_name(name), list(spelled), n=3 * n, cutoff=0.6):
        entry = names[spelled[match]]
        if entry not in out:
            out.append(entry)
    return out[:n]


def synonyms(name: str) -> Dict[str, str]:
    """Class-name replacements of a synonym set.

    Args:
        name: Set name, e.g. ``'clip_es_voc'``, ``'clip_es_coco_official'`` (keeps
            the official ``'sknowboard'`` typo) or ``'clip_es_coco'`` (corrected).

    Returns:
        Mapping class name -> text encoded instead (only replaced classes appear).

    Raises:
        KeyError: Unknown set.
    """
    return dict(_entry('synonyms', name)['replacements'])


def background_words(name: str) -> List[str]:
    """Background word set.

    Args:
        name: ``'clip_es_voc'`` (25 words), ``'clip_es_coco'`` (23) or
            ``'maskclip_demo'`` (5).

    Returns:
        The words in their official order (a copy).

    Raises:
        KeyError: Unknown set.
    """
    return list(_entry('background', name)['words'])


def templates(name: str) -> List[str]:
    """Prompt template set.

    Args:
        name: ``'clip_es'``, ``'single'``, ``'openai80'``, ``'scene5'``,
            ``'maskclip85'`` or ``'pacl7'``.

    Returns:
        Templates, each with exactly one ``{}`` placeholder (a copy).

    Raises:
        KeyError: Unknown set.
    """
    return list(_entry('templates', name)['templates'])


def load_name_file(path: Union[str, os.PathLike]) -> List[str]:
    """Read a user class-name file: one class per line (SCLIP format).

    A line may hold several comma-separated synonyms (``'person,people'``);
    they are kept as one string here -- see :func:`wsss_mmseg.text.prompts.expand_synonyms`.
    Blank lines and lines starting with ``#`` are skipped; surrounding
    whitespace is stripped. A ``.json`` file must contain a list of strings.

    Args:
        path: Path of a ``.txt`` or ``.json`` file.

    Returns:
        Class strings in file order.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file holds no class or is malformed.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f'class-name file {p} does not exist')
    if p.suffix.lower() == '.json':
        try:
            with open(p, encoding='utf-8') as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f'{p}: invalid JSON ({e})') from e
        names = _check_str_list(data, where=str(p))
        names = [n.strip() for n in names]
        if any(not n for n in names):
            raise ValueError(f'{p}: contains an empty class name')
        return names
    with open(p, encoding='utf-8') as f:
        names = [ln.strip() for ln in f]
    names = [n for n in names if n and not n.startswith('#')]
    if not names:
        raise ValueError(f'{p}: no class names found')
    return names


def _as_index(ref: Any) -> int:
    if isinstance(ref, bool):
        raise TypeError(f'class reference {ref!r} is a bool, expected a class name or an int index')
    try:
        return operator.index(ref)
    except TypeError:
        raise TypeError(f'class reference {ref!r} ({type(ref).__name__}) is neither a '
                        'class name (str) nor an integer index') from None


def resolve_classes(names_or_indices: Union[ClassRef, Sequence[ClassRef]], *,
                    table: str) -> List[int]:
    """Map class names and/or indices to label indices of a table.

    Names match exactly first, then case-, whitespace- and Unicode-normalisation-insensitively (so
    ``'bed'`` finds ADE's ``'bed '`` and ``'Person'`` finds ``'person'``), then through the other
    spellings of a class (``'couch'`` finds coco80's ``'sofa'``; see :func:`find_class_index`).

    Args:
        names_or_indices: One reference or a sequence of references; each is a
            class name (``str``) or a non-negative integer index.
        table: Class table name (see :func:`list_tables`).

    Returns:
        Label indices in the requested order.

    Raises:
        KeyError: Unknown table, or unknown class name (the message names the
            class, the table and close matches).
        IndexError: Index out of range or negative.
        TypeError: A reference that is neither str nor int (bool is refused).
        ValueError: Empty request or a class requested twice.
    """
    names = class_names(table)
    refs: Sequence[Any]
    if isinstance(names_or_indices, (str, bytes)) or not isinstance(names_or_indices, Sequence):
        refs = [names_or_indices]
    else:
        refs = names_or_indices
    if len(refs) == 0:
        raise ValueError(f'no classes requested from table {table!r}')
    out: List[int] = []
    for ref in refs:
        if isinstance(ref, str):
            found = find_class_index(ref, names)
            if found is not None:
                idx = found
            else:
                close = close_class_names(ref, names)
                hint = f'; did you mean {", ".join(repr(c) for c in close)}?' if close else ''
                raise KeyError(f'unknown class name {ref!r} for class table {table!r} '
                               f'({len(names)} classes){hint}')
        else:
            idx = _as_index(ref)
            if not 0 <= idx < len(names):
                raise IndexError(f'class index {idx} is out of range for class table '
                                 f'{table!r} (valid: 0..{len(names) - 1})')
        out.append(idx)
    dup = sorted({names[i] for i in out if out.count(i) > 1})
    if dup:
        raise ValueError(f'classes requested more than once from table {table!r}: {dup}')
    return out


def check_synonym_mapping(mapping: Mapping[str, str], *, where: str = 'synonyms') -> Dict[str, str]:
    """Validate a user synonym mapping (class name -> replacement text).

    Args:
        mapping: The mapping to check.
        where: Context used in error messages.

    Returns:
        A plain ``dict`` copy.

    Raises:
        ValueError: Keys/values are not strings or a value is blank.
    """
    if not isinstance(mapping, Mapping):
        raise ValueError(f'{where}: expected a mapping class name -> text, '
                         f'got {type(mapping).__name__}')
    for k, v in mapping.items():
        if not isinstance(k, str) or not isinstance(v, str) or not v.strip():
            raise ValueError(f'{where}: entry {k!r} -> {v!r} must map a str to a non-empty str')
    return dict(mapping)
