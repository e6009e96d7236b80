"""The settings fingerprint of a pseudo-label work dir (``pseudo_fingerprint.json``).

Part of the work-dir rules owned by :mod:`wsss_mmseg.pseudo.workdir` (which states the rule
"one setting per folder" and re-exports these names): which settings determine the output
bytes and their hash (:func:`config_fingerprint`), the stored fingerprint
(:func:`read_fingerprint`, :func:`write_fingerprint`) and what changed between two of them,
for messages.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..utils.file_hash import cached_file_sha256
from .io import atomic_write_bytes

PathLike = Union[str, os.PathLike]

__all__ = ['FINGERPRINT_FILE', 'jsonable', 'weights_ids', 'config_fingerprint', 'read_fingerprint',
           'write_fingerprint', 'describe_fingerprint_change', 'generator_label']

FINGERPRINT_FILE = 'pseudo_fingerprint.json'


def jsonable(obj: Any) -> Any:
    """JSON-safe copy of ``obj`` (fingerprint settings, summary and rank records).

    Mappings get string keys, tuples become lists, numpy scalars Python numbers, paths
    strings, anything else its ``repr``.
    """
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return repr(obj)


def weights_ids(section: Any) -> Dict[str, str]:
    """Content ids of every existing file a generator section names (weights, checkpoints).

    Walks the section's string values (``clip.pretrained``, ``checkpoint``, ...); those
    naming an existing file are identified by the sha256 of their content
    (:func:`wsss_mmseg.clip.weights_id.weights_content_id`, cached like the label files by
    :mod:`wsss_mmseg.utils.file_hash`).

    Args:
        section: The ``generator`` config section.

    Returns:
        ``{path as written: content id}``.
    """
    from ..clip.weights_id import weights_content_id
    found: Dict[str, str] = {}

    def walk(obj: Any) -> None:
        if isinstance(obj, Mapping):
            for v in obj.values():
                walk(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v)
        elif isinstance(obj, (str, os.PathLike)):
            path = os.path.expanduser(os.fspath(obj))
            if len(path) < 4096 and os.path.isfile(path):
                found[os.fspath(obj)] = weights_content_id(path)

    walk(section)
    return found


def config_fingerprint(cfg: Mapping[str, Any], job: Mapping[str, Any], *,
                       source_files: Sequence[PathLike] = (),
                       weights: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """The settings that determine the output bytes, and their hash.

    Args:
        cfg: Job config (``pseudo_dataset``, ``generator``, ``mask_maker``).
        job: Resolved ``pseudo_job`` options.
        source_files: List/label files of the dataset (content hashed, through the cache of
            :func:`wsss_mmseg.utils.file_hash.cached_file_sha256`: edits are noticed).
        weights: Content ids of the generator's weight files (default: :func:`weights_ids`).

    Returns:
        ``dict(sha256=..., settings=...)``.
    """
    if weights is None:
        weights = weights_ids(cfg.get('generator'))
    settings = dict(pseudo_dataset=jsonable(cfg.get('pseudo_dataset')),
                    generator=jsonable(cfg.get('generator')),
                    mask_maker=jsonable(cfg.get('mask_maker')),
                    exif_transpose=bool(job['exif_transpose']),
                    cam_dtype=str(job['cam_dtype']),
                    label_files={str(p): cached_file_sha256(p) for p in source_files if Path(p).is_file()},
                    weights=dict(sorted(weights.items())))
    blob = json.dumps(settings, sort_keys=True).encode()
    return dict(sha256=hashlib.sha256(blob).hexdigest(), settings=settings)


def read_fingerprint(work_dir: PathLike) -> Tuple[str, Optional[Dict[str, Any]]]:
    """The stored fingerprint and its status.

    Returns:
        ``('absent', None)``, ``('corrupt', None)`` (unreadable, not JSON, no sha256) or
        ``('ok', data)``.
    """
    path = Path(work_dir) / FINGERPRINT_FILE
    if not path.exists():
        return 'absent', None
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError):
        return 'corrupt', None
    if not isinstance(data, dict) or not isinstance(data.get('sha256'), str):
        return 'corrupt', None
    return 'ok', data


def write_fingerprint(work_dir: PathLike, fingerprint: Mapping[str, Any]) -> None:
    """Atomically write ``pseudo_fingerprint.json``."""
    atomic_write_bytes(Path(work_dir) / FINGERPRINT_FILE,
                       (json.dumps(fingerprint, indent=1, sort_keys=True) + '\n').encode())


def describe_fingerprint_change(old: Optional[Mapping[str, Any]], new: Mapping[str, Any]) -> str:
    """Which settings differ between two fingerprints, for messages."""
    if old is None:
        return 'unknown settings'
    before = old.get('settings') or {}
    now = new['settings']
    changed = []
    for key in sorted(set(before) | set(now)):
        if before.get(key) == now.get(key):
            continue
        if key in ('label_files', 'weights'):
            a, b = before.get(key) or {}, now.get(key) or {}
            files = sorted(f for f in set(a) | set(b) if a.get(f) != b.get(f))
            changed.append(f'{"label files" if key == "label_files" else "weights content"} {files}')
        elif isinstance(before.get(key), Mapping) and isinstance(now.get(key), Mapping):
            a, b = before[key], now[key]
            sub = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            changed.append(f'{key} ({", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sub)[:300]})')
        else:
            changed.append(key)
    return ', '.join(changed) or 'nothing visible'


def generator_label(fp: Optional[Mapping[str, Any]]) -> str:
    """``<generator type> (settings <sha12>)`` for messages."""
    if fp is None:
        return 'unknown settings'
    gen = (fp.get('settings') or {}).get('generator') or {}
    typ = gen.get('type', '?') if isinstance(gen, Mapping) else '?'
    return f'{typ} (settings {str(fp.get("sha256", "?"))[:12]})'
