"""On-disk (and in-memory) cache of class text embeddings.

Building the text features of a job (e.g. CLIP-ES VOC: 20 classes + 25 background
words through the ViT-B/16 text tower) costs about a second on a CPU -- on every run,
every resume and every rank. The cache stores each ``(C, E)`` float32 matrix under a
key that covers everything that determines its values:

* the embedding recipe (:data:`wsss_mmseg.text.encoder.RECIPE`);
* the model name and the **weights identity**: a
  :func:`wsss_mmseg.clip.weights_id.weights_content_id` (``'sha256:...'`` of the weights
  file, ``'open_clip:<model>:<tag>'``) or, for random/unknown weights,
  :func:`weights_fingerprint` (a hash of the text tower's tensors);
* the **model definition** (:func:`model_definition_id`: ``repr(model)`` -- layer types,
  widths, activation -- and the names, shapes and dtypes of the text-tower tensors);
* every **text input**: the exact sentences sent to the text tower (class names after
  synonym replacement/fusion x templates, background words x templates -- so the class
  table/selection, synonyms, templates and background words are all covered), and the
  **tokenizer** (:func:`tokenizer_identity`: its type, context length and the tokens of a
  probe sentence);
* the **dtype** of the text tower, the device type it ran on, the torch version, and the
  batching of :func:`wsss_mmseg.text.encoder.encode_class_texts`.

Files are ``<directory>/<sha256(key)>.pt`` holding ``{'format', 'key', 'embeddings'}``,
written to a temporary file in the same folder, fsynced and ``os.replace``-d (readers
never see a partial file; concurrent writers of one key write identical content), read
back with ``torch.load(weights_only=True)`` (no code runs from a cache file). A file
that cannot be read, or holds another key, a wrong shape/dtype or non-finite values, is
ignored with a ``RuntimeWarning``, recomputed and rewritten.

The default folder is ``<cache root>/text_features`` (:func:`default_text_cache_dir`;
cache root ``$WSSS_MMSEG_CACHE`` or ``~/.cache/wsss_mmseg``). Clear it with
``rm -r ~/.cache/wsss_mmseg/text_features`` (or :func:`clear_text_cache`).

Pure torch (no mmseg/mmengine).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

__all__ = ['CacheKey', 'TextEmbeddingCache', 'TEXT_CACHE_SUBDIR', 'CacheSpec', 'cache_key_parts',
           'clear_text_cache',
           'default_text_cache_dir', 'model_definition_id', 'resolve_text_cache',
           'shared_text_cache', 'text_tower_dtype', 'tokenizer_identity', 'weights_fingerprint']

#: Sub-folder of the cache root holding text features.
TEXT_CACHE_SUBDIR = 'text_features'
#: A sentence tokenized to identify a tokenizer (BPE merges, case/unicode handling).
_TOKENIZER_PROBE = "A clean origami photo of 2 Dogs, a café-table & naïve ÜBER-cat's {toy}!"

#: What ``class_embeddings(cache=...)`` accepts: ``'auto'``, ``True``/``False``/``None``,
#: a folder, or a :class:`TextEmbeddingCache`.
CacheSpec = Union[str, bool, None, os.PathLike, 'TextEmbeddingCache']


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 over the text tower's weights (everything but the vision tower).

    Entries of ``model.state_dict()`` are hashed in sorted-name order (name,
    dtype, shape, raw bytes), skipping any whose dotted name contains a
    ``visual`` component and the ``logit_scale``/``logit_bias`` scalars, which do
    not influence ``encode_text``. Roughly 0.3 s for the ViT-B/16 text tower.

    Args:
        model: The CLIP module.

    Returns:
        Hex digest.

    Raises:
        ValueError: ``model`` has no (text) tensors to hash.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f'weights_fingerprint needs an nn.Module, got {type(model).__name__}; '
                         'pass an explicit fingerprint string instead')
    h = hashlib.sha256()
    n = 0
    state = model.state_dict()
    for name in sorted(state):
        parts = name.split('.')
        if 'visual' in parts or parts[-1] in ('logit_scale', 'logit_bias'):
            continue
        t = state[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().to('cpu').contiguous()
        h.update(f'{name}|{t.dtype}|{tuple(t.shape)}|'.encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        n += 1
    if n == 0:
        raise ValueError(f'{type(model).__name__} has no text-tower tensors to fingerprint')
    return h.hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """Key of one cached embedding matrix.

    Attributes:
        payload: Canonical JSON of (recipe, model name, weights fingerprint, prompts).
        digest: SHA-256 hex of ``payload`` (also the on-disk file stem).
        num_rows: Number of classes (rows) the cached matrix must have.
    """

    payload: str
    digest: str
    num_rows: int


class TextEmbeddingCache:
    """Cache of class text embeddings keyed by model name, weights fingerprint and prompts.

    Entries live in memory and, if ``directory`` is given, also on disk as
    ``<directory>/<sha256(key)>.pt`` (written to a temporary file in the same
    directory, fsynced, then ``os.replace``-d into place, so readers never see a
    partial file). A disk file that cannot be read, belongs to another key or has
    a wrong shape/dtype/non-finite values is ignored (with a ``RuntimeWarning``)
    and rewritten on the next :meth:`put`. Returned tensors are CPU clones, so
    callers cannot alter the cache.

    Args:
        directory: Optional cache directory (created on first write).
        max_items: Optional bound on in-memory entries (least recently used
            are dropped); ``None`` = unbounded.
    """

    FORMAT = 1

    def __init__(self, directory: Union[str, os.PathLike, None] = None, *,
                 max_items: Optional[int] = None) -> None:
        if max_items is not None and (not isinstance(max_items, int) or max_items <= 0):
            raise ValueError(f'max_items must be a positive int or None, got {max_items!r}')
        self.directory: Optional[Path] = Path(directory) if directory is not None else None
        if self.directory is not None and self.directory.exists() and not self.directory.is_dir():
            raise ValueError(f'cache directory {self.directory} exists and is not a directory')
        self.max_items = max_items
        self._memory: 'OrderedDict[str, Tuple[str, torch.Tensor]]' = OrderedDict()
        self.hits = 0
        self.disk_hits = 0
        self.misses = 0

    @staticmethod
    def make_key(*, model_name: str, fingerprint: str,
                 prompts_per_class: Sequence[Sequence[str]],
                 extra: Optional[Mapping[str, Any]] = None) -> CacheKey:
        """Build the key of one embedding matrix.

        Args:
            model_name: Model identifier (e.g. ``'ViT-B-16'``); should also imply the
                tokenizer.
            fingerprint: Weights fingerprint (see :func:`weights_fingerprint`) or any
                string that identifies the weights.
            prompts_per_class: The exact sentences of every class.
            extra: Further JSON-serialisable settings that influence the values
                (e.g. the batching of :func:`encode_class_texts`).

        Returns:
            The key.

        Raises:
            ValueError: Empty model name/fingerprint, malformed prompts or a
                non-serialisable ``extra``.
        """
        from .encoder import RECIPE, _check_prompts  # deferred: encoder imports this module
        for what, v in (('model_name', model_name), ('fingerprint', fingerprint)):
            if not isinstance(v, str) or not v:
                raise ValueError(f'{what} must be a non-empty string, got {v!r}')
        prompts = _check_prompts(prompts_per_class)
        try:
            payload = json.dumps({'recipe': RECIPE, 'model': model_name, 'weights': fingerprint,
                                  'prompts': prompts, 'extra': dict(extra or {})},
                                 ensure_ascii=False, sort_keys=True, separators=(',', ':'))
        except TypeError as e:
            raise ValueError(f'cache key extra={extra!r} is not JSON-serialisable ({e})') from e
        return CacheKey(payload=payload,
                        digest=hashlib.sha256(payload.encode('utf-8')).hexdigest(),
                        num_rows=len(prompts))

    def path_for(self, key: CacheKey) -> Optional[Path]:
        """On-disk location of ``key`` (``None`` without a directory)."""
        return None if self.directory is None else self.directory / f'{key.digest}.pt'

    def _valid(self, key: CacheKey, value: Any) -> bool:
        return (isinstance(value, torch.Tensor) and value.dtype == torch.float32
                and value.dim() == 2 and value.shape[0] == key.num_rows and value.shape[1] > 0
                and bool(torch.isfinite(value).all()))

    def _remember(self, key: CacheKey, value: torch.Tensor) -> None:
        self._memory[key.digest] = (key.payload, value)
        self._memory.move_to_end(key.digest)
        if self.max_items is not None:
            while len(self._memory) > self.max_items:
                self._memory.popitem(last=False)

    def _read_disk(self, key: CacheKey) -> Optional[torch.Tensor]:
        path = self.path_for(key)
        if path is None or not path.is_file():
            return None
        try:
            obj = torch.load(path, map_location='cpu', weights_only=True)
        except Exception as e:  # any unreadable/corrupt file is simply not trusted
            warnings.warn(f'ignoring unreadable text-embedding cache file {path}: {e!r}',
                          RuntimeWarning, stacklevel=3)
            return None
        if not (isinstance(obj, dict) and obj.get('format') == self.FORMAT
                and obj.get('key') == key.payload and self._valid(key, obj.get('embeddings'))):
            warnings.warn(f'ignoring text-embedding cache file {path}: its content does not '
                          'match the requested key/shape', RuntimeWarning, stacklevel=3)
            return None
        return obj['embeddings']

    def get(self, key: CacheKey) -> Optional[torch.Tensor]:
        """Look ``key`` up in memory, then on disk.

        Args:
            key: From :meth:`make_key`.

        Returns:
            A CPU float32 clone of the cached ``(C, E)`` matrix, or ``None``.
        """
        entry = self._memory.get(key.digest)
        if entry is not None and entry[0] == key.payload:
            self._memory.move_to_end(key.digest)
            self.hits += 1
            return entry[1].clone()
        value = self._read_disk(key)
        if value is None:
            self.misses += 1
            return None
        self.disk_hits += 1
        self._remember(key, value.clone())
        return value.clone()

    def put(self, key: CacheKey, value: torch.Tensor) -> None:
        """Store ``value`` under ``key`` in memory and (atomically) on disk.

        Args:
            key: From :meth:`make_key`.
            value: ``(C, E)`` float32 finite tensor with ``C == key.num_rows``.

        Raises:
            ValueError: ``value`` does not fit the key.
        """
        if not isinstance(value, torch.Tensor) or value.dtype != torch.float32:
            raise ValueError('cache values must be float32 tensors, got '
                             f'{getattr(value, "dtype", type(value).__name__)}')
        stored = value.detach().to('cpu').clone().contiguous()
        if not self._valid(key, stored):
            raise ValueError(f'cache value of shape {tuple(value.shape)} does not fit a key with '
                             f'{key.num_rows} rows (or contains non-finite values)')
        self._remember(key, stored)
        path = self.path_for(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {'format': self.FORMAT, 'key': key.payload, 'embeddings': stored}
        from ..utils.atomic import atomic_replace  # deferred: the text package loads without the plugin
        atomic_replace(path, lambda f: torch.save(payload, f))

    def get_or_compute(self, key: CacheKey, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Return the cached matrix or compute, store and return it.

        Args:
            key: From :meth:`make_key`.
            compute: Called only on a miss; must return the ``(C, E)`` float32 matrix.

        Returns:
            CPU float32 ``(C, E)`` tensor.

        A cache folder that cannot be written (read-only home, full disk) does not stop
        the caller: the value is kept in memory and returned, with a ``RuntimeWarning``.
        """
        hit = self.get(key)
        if hit is not None:
            return hit
        value = compute()
        try:
            self.put(key, value)
        except OSError as exc:
            warnings.warn(f'text-feature cache {self.directory} is not writable ({exc}); the '
                          'embeddings were computed but not stored on disk', RuntimeWarning,
                          stacklevel=2)
        return value.detach().to('cpu').clone()

    def clear_memory(self) -> None:
        """Drop all in-memory entries (disk files are kept)."""
        self._memory.clear()

    def __len__(self) -> int:
        return len(self._memory)


# --------------------------------------------------------------------------------------
# key components and the default cache
# --------------------------------------------------------------------------------------

def _is_text_tensor(name: str) -> bool:
    parts = name.split('.')
    return 'visual' not in parts and parts[-1] not in ('logit_scale', 'logit_bias')


def text_tower_dtype(model: Any) -> str:
    """dtype of the text tower's first tensor (``'torch.float32'``; ``'unknown'`` if none).

    Args:
        model: The CLIP module (or any object with ``encode_text``).

    Returns:
        The dtype as a string.
    """
    if isinstance(model, nn.Module):
        for name, t in model.state_dict().items():
            if _is_text_tensor(name) and isinstance(t, torch.Tensor) and t.is_floating_point():
                return str(t.dtype)
    return 'unknown'


def model_definition_id(model: Any) -> str:
    """SHA-256 of a model's definition (architecture, not weight values).

    Covers ``type(model)``, ``repr(model)`` (layer types and sizes, activation such as
    QuickGELU vs GELU, LayerNorm eps), the ``context_length``/``vocab_size``/
    ``text_pool_type`` attributes where present, and the name, shape and dtype of every
    text-tower tensor (precision: fp32, mixed fp16, ...). For an object that is not an
    ``nn.Module`` only its type is used.

    Args:
        model: The CLIP module (or any object with ``encode_text``).

    Returns:
        Hex digest.
    """
    h = hashlib.sha256()
    cls = type(model)
    h.update(f'{cls.__module__}.{cls.__qualname__}\n'.encode())
    if isinstance(model, nn.Module):
        h.update(repr(model).encode())
        for attr in ('context_length', 'vocab_size', 'text_pool_type'):
            h.update(f'\n{attr}={getattr(model, attr, None)!r}'.encode())
        for name, t in model.state_dict().items():
            if _is_text_tensor(name) and isinstance(t, torch.Tensor):
                h.update(f'\n{name}|{t.dtype}|{tuple(t.shape)}'.encode())
    return h.hexdigest()


def tokenizer_identity(tokenizer: Callable) -> str:
    """Identity of a tokenizer: its type, context length and the tokens of a probe sentence.

    Args:
        tokenizer: Callable list[str] -> ``(N, L)`` token tensor.

    Returns:
        ``'<module>.<type>:ctx=<L>:<sha256 of the probe tokens>'``.

    Raises:
        ValueError: The tokenizer does not return a 2-D tensor for the probe.
    """
    cls = type(tokenizer)
    name = getattr(tokenizer, '__qualname__', None) if callable(tokenizer) and \
        cls.__name__ in ('function', 'builtin_function_or_method') else None
    name = f'{cls.__module__}.{name or cls.__qualname__}'
    tokens = tokenizer([_TOKENIZER_PROBE])
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
        raise ValueError(f'tokenizer {name} must return a (N, L) tensor, got '
                         f'{getattr(tokens, "shape", type(tokens).__name__)}')
    tokens = tokens.detach().to('cpu', torch.int64).contiguous()
    digest = hashlib.sha256(tokens.numpy().tobytes()).hexdigest()[:16]
    return f'{name}:ctx={tokens.shape[1]}:{digest}'


def default_text_cache_dir() -> Path:
    """``<cache root>/text_features`` (cache root ``$WSSS_MMSEG_CACHE`` or ``~/.cache/wsss_mmseg``)."""
    from ..clip.weights_id import cache_root  # deferred: the text package loads without the plugin
    return cache_root() / TEXT_CACHE_SUBDIR


_SHARED: Dict[str, 'TextEmbeddingCache'] = {}


def shared_text_cache(directory: Union[str, os.PathLike, None] = None) -> 'TextEmbeddingCache':
    """The process-wide :class:`TextEmbeddingCache` of a folder (memory hits across callers).

    Args:
        directory: Cache folder; ``None`` = :func:`default_text_cache_dir` (read at call
            time, so ``$WSSS_MMSEG_CACHE`` may change between calls).

    Returns:
        One cache instance per absolute folder path.
    """
    path = Path(directory) if directory is not None else default_text_cache_dir()
    key = os.path.abspath(os.path.expanduser(str(path)))
    if key not in _SHARED:
        _SHARED[key] = TextEmbeddingCache(key)
    return _SHARED[key]


def clear_text_cache(directory: Union[str, os.PathLike, None] = None) -> int:
    """Delete the cached text features of a folder (and forget them in this process).

    Args:
        directory: Cache folder; ``None`` = :func:`default_text_cache_dir`.

    Returns:
        Number of cache files removed.
    """
    path = Path(directory) if directory is not None else default_text_cache_dir()
    for cache in _SHARED.values():
        if cache.directory is not None and os.path.abspath(cache.directory) == os.path.abspath(path):
            cache.clear_memory()
    if not path.is_dir():
        return 0
    files = list(path.glob('*.pt'))
    shutil.rmtree(path)
    return len(files)


def _is_file_or_tag_id(weights_id: Optional[str]) -> bool:
    return isinstance(weights_id, str) and weights_id.startswith(('sha256:', 'open_clip:'))


def resolve_text_cache(cache: CacheSpec, weights_id: Optional[str]) -> Optional['TextEmbeddingCache']:
    """The cache that ``class_embeddings(cache=..., weights_id=...)`` uses.

    Args:
        cache: ``'auto'`` -- the shared default-folder cache when ``weights_id`` names
            file or tag weights (``'sha256:...'``, ``'open_clip:...'``), no cache for
            random or unidentified weights; ``True`` -- the shared default-folder cache
            whatever the weights; ``False``/``None`` -- no cache; a folder path -- the
            shared cache of that folder; a :class:`TextEmbeddingCache` -- itself.
        weights_id: From :func:`wsss_mmseg.clip.weights_id.weights_content_id`, or ``None``.

    Returns:
        The cache, or ``None`` for no caching.

    Raises:
        ValueError: Any other ``cache`` value.
    """
    if isinstance(cache, TextEmbeddingCache):
        return cache
    if cache is None or cache is False:
        return None
    if cache is True:
        return shared_text_cache()
    if isinstance(cache, str) and cache == 'auto':
        return shared_text_cache() if _is_file_or_tag_id(weights_id) else None
    if isinstance(cache, (str, os.PathLike)) and os.fspath(cache).strip():
        return shared_text_cache(cache)
    raise ValueError(f"cache must be 'auto', True, False/None, a folder path or a "
                     f'TextEmbeddingCache, got {cache!r}')


def cache_key_parts(model: Any, tokenizer: Callable, weights_id: Optional[str],
                    fingerprint: Optional[str], device: torch.device) -> Tuple[str, Dict[str, Any]]:
    """The weights string and the extra key fields of one embedding call.

    Args:
        model: The CLIP module.
        tokenizer: Its tokenizer.
        weights_id: A file/tag weights identity, or ``None`` / a ``'random:'`` id.
        fingerprint: An explicit weights string given by the caller (wins).
        device: Where the text tower runs.

    Returns:
        ``(weights, extra)`` for :meth:`TextEmbeddingCache.make_key`.
    """
    if fingerprint is not None:
        weights = fingerprint
    elif _is_file_or_tag_id(weights_id):
        weights = weights_id
    else:  # random or unknown weights: hash the tensors themselves
        weights = weights_fingerprint(model)
    extra = {'definition': model_definition_id(model), 'tokenizer': tokenizer_identity(tokenizer),
             'dtype': text_tower_dtype(model), 'device': torch.device(device).type,
             'torch': torch.__version__}
    return weights, extra
