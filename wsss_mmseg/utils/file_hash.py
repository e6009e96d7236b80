"""SHA-256 of files, cached by the file's stamp: one helper for weights and label files.

Fingerprints and cache keys identify files by *content* (:mod:`wsss_mmseg.clip.weights_id`
for CLIP weights and checkpoints, :func:`wsss_mmseg.pseudo.fingerprint.config_fingerprint` for
the dataset's list and label files). Hashing a ViT-B/16 file (~600 MB) takes about a
second, so :func:`cached_file_sha256` remembers each digest in memory (per process) and in
``<cache root>/weights_sha256.json`` (cache root: ``$WSSS_MMSEG_CACHE``, else
``~/.cache/wsss_mmseg``; the name is kept from when only weights were cached).

An entry is used only while the file's real path, size, ``mtime_ns``, ``ctime_ns`` and
inode are unchanged: rewriting the file (even with the same size, or ``cp -p`` keeping the
old mtime, or ``mv`` of another file onto the path) is a miss and the file is hashed
again. The JSON is replaced atomically (temp file + ``os.replace``) under an ``flock`` on
``weights_sha256.json.lock``, so concurrent processes (ranks) neither lose entries nor read
partial files; while one process hashes a file the others wait for its result instead of
hashing the same file. An unreadable or corrupt cache file is ignored and rewritten. Where
the cache cannot be written the hash is still returned (with a warning). Entries of files
that no longer exist are dropped on the next store. Delete the JSON file to clear the cache.

Pure Python (no torch, no mmseg/mmengine import).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple, Union

from .atomic import atomic_replace

__all__ = ['CACHE_ENV', 'HASH_CACHE_NAME', 'cache_root', 'cached_file_sha256', 'clear_memory_cache',
           'file_sha256', 'file_stamp']

#: Environment variable naming the cache root (default ``~/.cache/wsss_mmseg``).
CACHE_ENV = 'WSSS_MMSEG_CACHE'
#: File name of the hash cache inside the cache root.
HASH_CACHE_NAME = 'weights_sha256.json'
_FORMAT = 1
_CHUNK = 8 << 20

PathLike = Union[str, os.PathLike]
Stamp = Tuple[int, int, int, int, int]

# realpath -> (stamp, sha256): avoids re-reading the JSON within one process
_MEMO: Dict[str, Tuple[Stamp, str]] = {}


def cache_root() -> Path:
    """Root folder of wsss_mmseg's on-disk caches.

    Returns:
        ``$WSSS_MMSEG_CACHE`` if set and non-empty, else ``~/.cache/wsss_mmseg``.
    """
    env = os.environ.get(CACHE_ENV, '').strip()
    return Path(os.path.expanduser(env)) if env else Path.home() / '.cache' / 'wsss_mmseg'


def clear_memory_cache() -> None:
    """Forget the hashes remembered by this process (the JSON cache is kept)."""
    _MEMO.clear()


def file_sha256(path: PathLike, *, chunk_size: int = _CHUNK) -> str:
    """SHA-256 of a file's bytes (streamed, constant memory, no cache).

    Args:
        path: The file.
        chunk_size: Bytes read at a time.

    Returns:
        Hex digest.
    """
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(chunk_size), b''):
            h.update(chunk)
    return h.hexdigest()


def file_stamp(path: PathLike) -> Stamp:
    """What the hash cache compares: ``(size, mtime_ns, ctime_ns, inode, device)``.

    Args:
        path: The file (resolved by the caller).

    Returns:
        The stamp tuple.
    """
    st = os.stat(path)
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


# ------------------------------------------------------------------ JSON hash cache
def _read_entries(path: Path) -> Dict[str, dict]:
    """Entries of the JSON cache; ``{}`` when absent, unreadable or malformed."""
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # corrupt or unreadable: ignored, rewritten on the next store
    if not isinstance(data, dict) or data.get('format') != _FORMAT or \
            not isinstance(data.get('entries'), dict):
        return {}
    return {k: v for k, v in data['entries'].items() if isinstance(v, dict)}


def _entry_hash(entry: Optional[dict], stamp: Stamp) -> Optional[str]:
    if not entry or entry.get('stamp') != list(stamp):
        return None
    digest = entry.get('sha256')
    if isinstance(digest, str) and len(digest) == 64 and \
            all(c in '0123456789abcdef' for c in digest):
        return digest
    return None


def _write_entries(path: Path, entries: Dict[str, dict]) -> None:
    """Replace the JSON cache atomically (:func:`wsss_mmseg.utils.atomic.atomic_replace`)."""
    data = json.dumps({'format': _FORMAT, 'entries': entries}, indent=1, sort_keys=True).encode('utf-8')
    atomic_replace(path, lambda f: f.write(data))


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Exclusive ``flock`` on ``lock_path`` (a no-op where fcntl is unavailable)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover  (not POSIX)
        yield
        return
    with open(lock_path, 'a+b') as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def cached_file_sha256(path: PathLike, *, cache_dir: Optional[PathLike] = None) -> str:
    """SHA-256 of a file's bytes, read only when its stamp is not cached (module docstring).

    Args:
        path: The file (``~`` expanded; symlinks resolved: one entry per real file).
        cache_dir: Folder of the JSON cache (default :func:`cache_root`).

    Returns:
        Hex digest.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        IsADirectoryError: ``path`` is a directory.
    """
    real = os.path.realpath(os.path.expanduser(os.fspath(path)))
    if os.path.isdir(real):
        raise IsADirectoryError(f"cannot hash '{real}': it is a directory, not a file")
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    stamp = file_stamp(real)
    memo = _MEMO.get(real)
    if memo is not None and memo[0] == stamp:
        return memo[1]
    json_path = root / HASH_CACHE_NAME
    digest = _entry_hash(_read_entries(json_path).get(real), stamp)
    if digest is None:
        try:
            root.mkdir(parents=True, exist_ok=True)
            with _locked(root / (HASH_CACHE_NAME + '.lock')):
                entries = _read_entries(json_path)  # another process may have hashed it meanwhile
                digest = _entry_hash(entries.get(real), stamp)
                if digest is None:
                    digest = file_sha256(real)
                    if file_stamp(real) == stamp:  # not modified while we read it
                        entries = {k: v for k, v in entries.items() if os.path.isfile(k)}
                        entries[real] = {'stamp': list(stamp), 'sha256': digest}
                        _write_entries(json_path, entries)
        except OSError as exc:
            if digest is None and getattr(exc, 'filename', None) == real:
                raise  # the file itself cannot be read: not a cache problem
            warnings.warn(f'file hash cache {json_path} is not usable ({exc}); hashing '
                          f'{real} without caching', RuntimeWarning, stacklevel=2)
            if digest is None:
                digest = file_sha256(real)
    _MEMO[real] = (stamp, digest)
    return digest
