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

File hashes are cached by :func:`wsss_mmseg.utils.file_hash.cached_file_sha256` -- the
one helper that also hashes the pseudo-label job's label files: in
``<cache root>/weights_sha256.json`` (cache root: ``$WSSS_MMSEG_CACHE``, else
``~/.cache/wsss_mmseg``), an entry used only while the file's real path, size,
``mtime_ns``, ``ctime_ns`` and inode are unchanged (see that module for the cache rules:
atomic, ``flock``-guarded updates; corrupt caches ignored; hashing still works where the
cache cannot be written).

Pure Python (no torch, no open_clip import): cheap to call before the model is built.
"""
from __future__ import annotations

import os
from importlib import metadata
from typing import Optional, Union

from ..utils.file_hash import (CACHE_ENV, HASH_CACHE_NAME, cache_root, cached_file_sha256,
                               clear_memory_cache, file_sha256, file_stamp)

__all__ = ['CACHE_ENV', 'HASH_CACHE_NAME', 'cache_root', 'clear_memory_cache', 'file_sha256',
           'file_stamp', 'weights_content_id']

#: Suffixes that mark a ``pretrained`` string as a file path (as build_clip does).
_CHECKPOINT_SUFFIXES = ('.pt', '.pth', '.bin', '.ckpt', '.safetensors', '.pkl', '.tar')

PathLike = Union[str, os.PathLike]


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
    from .architecture import _RANDOM_INIT_SEED  # the seed build_clip initialises with
    return (f'random:{model_name}:seed={_RANDOM_INIT_SEED}:open_clip={_version("open_clip_torch")}'
            f':torch={_version("torch")}')


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
        return 'sha256:' + cached_file_sha256(expanded, cache_dir=cache_dir)
    if _looks_like_path(value):
        raise FileNotFoundError(f"pretrained weights file '{os.path.abspath(expanded)}' does "
                                'not exist')
    if not model_name:
        raise ValueError(f"pretrained tag '{value}' needs a model_name (e.g. 'ViT-B-16') to "
                         'identify the weights')
    return f'open_clip:{model_name}:{value}'
