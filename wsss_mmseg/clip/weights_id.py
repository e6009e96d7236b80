"""Content identity of CLIP weights, for fingerprints and cache keys.

A pseudo-label job (and the text-feature cache) must know *which weights* made a
result, not only *where they were read from*: replacing ``/models/ViT-B-16.pt`` between
a kill and a resume must not silently mix two models. :func:`weights_content_id` turns
the ``pretrained`` value given to :func:`wsss_mmseg.clip.factory.build_clip` into a
string that changes exactly when the weights change:

==============================  ===================================================
``pretrained``                  identity
==============================  ===================================================
an existing file                ``'sha256:<hex>'`` -- SHA-256 of the file's bytes
                                (the same file under two paths has one identity)
an open_clip tag (``'openai'``) ``'open_clip:<model_name>:<tag>'`` -- open_clip's
                                registry pins one file per (model, tag); the file
                                is not hashed (it may not even be downloaded yet)
``None`` (random init)          ``'random:<model_name>:seed=<s>:open_clip=<v>:torch=<v>'``
                                -- ``build_clip``'s deterministic initialisation,
                                which depends on the architecture, the seed and the
                                open_clip/torch versions
==============================  ===================================================

Hashing a ViT-B/16 file (~600 MB) takes about a second, so file hashes are cached in
``<cache root>/weights_sha256.json`` (cache root: ``$WSSS_MMSEG_CACHE``, else
``~/.cache/wsss_mmseg``). An entry is used only while the file's real path, size,
``mtime_ns``, ``ctime_ns`` and inode are unchanged: rewriting the file (even with the
same size, or ``cp -p`` keeping the old mtime, or ``mv`` of another file onto the
path) is a miss and the file is hashed again. The JSON is replaced atomically (temp
file + ``os.replace``) under an ``flock`` on ``weights_sha256.json.lock``, so concurrent
processes (ranks) neither lose entries nor read partial files; while one process hashes
a file the others wait for its result instead of hashing the same file. An unreadable
or corrupt cache file is ignored and rewritten. Where the cache cannot be written the
hash is still returned (with a warning). Delete the JSON file to clear the cache.

Pure Python (no torch, no open_clip import): cheap to call before the model is built.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple, Union

__all__ = ['CACHE_ENV', 'HASH_CACHE_NAME', 'cache_root', 'clear_memory_cache', 'file_sha256',
           'file_stamp', 'weights_content_id']

#: Environment variable naming the cache root (default ``~/.cache/wsss_mmseg``).
CACHE_ENV = 'WSSS_MMSEG_CACHE'
#: File name of the weights hash cache inside the cache root.
HASH_CACHE_NAME = 'weights_sha256.json'
_FORMAT = 1
_CHUNK = 8 << 20
#: Suffixes that mark a ``pretrained`` string as a file path (as build_clip does).
_CHECKPOINT_SUFFIXES = ('.pt', '.pth', '.bin', '.ckpt', '.safetensors', '.pkl', '.tar')

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
    """SHA-256 of a file's bytes (streamed, constant memory).

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


def _looks_like_path(value: str) -> bool:
    return (os.sep in value or '/' in value or value.startswith(('.', '~'))
            or value.lower().endswith(_CHECKPOINT_SUFFIXES))


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return 'none'


def _random_init_id(model_name: Optional[str]) -> str:
    if not model_name:
        raise ValueError('weights_content_id(None) (random weights) needs the model_name that '
                         'defines the architecture')
    from .factory import _RANDOM_INIT_SEED  # the seed build_clip initialises with
    return (f'random:{model_name}:seed={_RANDOM_INIT_SEED}:open_clip={_version("open_clip_torch")}'
            f':torch={_version("torch")}')


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
    """Replace the JSON cache atomically (temp file in the same folder + ``os.replace``)."""
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            json.dump({'format': _FORMAT, 'entries': entries}, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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


def _cached_file_sha256(real: str, cache_dir: Path) -> str:
    stamp = file_stamp(real)
    memo = _MEMO.get(real)
    if memo is not None and memo[0] == stamp:
        return memo[1]
    json_path = cache_dir / HASH_CACHE_NAME
    digest = _entry_hash(_read_entries(json_path).get(real), stamp)
    if digest is None:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            with _locked(cache_dir / (HASH_CACHE_NAME + '.lock')):
                entries = _read_entries(json_path)  # another process may have hashed it meanwhile
                digest = _entry_hash(entries.get(real), stamp)
                if digest is None:
                    digest = file_sha256(real)
                    if file_stamp(real) == stamp:  # not modified while we read it
                        entries = {k: v for k, v in entries.items() if os.path.isfile(k)}
                        entries[real] = {'stamp': list(stamp), 'sha256': digest}
                        _write_entries(json_path, entries)
        except OSError as exc:
            warnings.warn(f'weights hash cache {json_path} is not usable ({exc}); hashing '
                          f'{real} without caching', RuntimeWarning, stacklevel=3)
            if digest is None:
                digest = file_sha256(real)
    _MEMO[real] = (stamp, digest)
    return digest


def weights_content_id(pretrained: Optional[PathLike], model_name: Optional[str] = None, *,
                       cache_dir: Optional[PathLike] = None) -> str:
    """Identity of the weights that ``build_clip(model_name, pretrained)`` loads.

    See the module docstring for the three forms (``'sha256:...'``,
    ``'open_clip:<model>:<tag>'``, ``'random:<model>:...'``).

    Args:
        pretrained: A checkpoint file path, an open_clip pretrained tag, or ``None``
            for build_clip's deterministic random weights.
        model_name: The open_clip architecture; needed for tags and random weights,
            ignored for files (their content identifies them).
        cache_dir: Folder of the hash cache (default :func:`cache_root`).

    Returns:
        The identity string.

    Raises:
        FileNotFoundError: ``pretrained`` looks like a path that does not exist, or is
            a directory.
        ValueError: Empty ``pretrained``, or a tag / random weights without
            ``model_name``.
    """
    if pretrained is None:
        return _random_init_id(model_name)
    value = os.fspath(pretrained)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f'pretrained must be a file path, an open_clip tag or None, got '
                         f'{pretrained!r}')
    expanded = os.path.expanduser(value)
    if os.path.exists(expanded):
        if not os.path.isfile(expanded):
            raise FileNotFoundError(f"pretrained weights '{expanded}' is not a file")
        root = Path(cache_dir) if cache_dir is not None else cache_root()
        return 'sha256:' + _cached_file_sha256(os.path.realpath(expanded), root)
    if _looks_like_path(value):
        raise FileNotFoundError(f"pretrained weights file '{os.path.abspath(expanded)}' does "
                                'not exist')
    if not model_name:
        raise ValueError(f"pretrained tag '{value}' needs a model_name (e.g. 'ViT-B-16') to "
                         'identify the weights')
    return f'open_clip:{model_name}:{value}'
