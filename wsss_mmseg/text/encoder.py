"""Text embeddings of class prompts with an in-memory / on-disk cache.

The recipe (CLIP-ES ``zeroshot_classifier`` and MaskCLIP ``prompt_engineering``):
for each class, encode every template sentence, L2-normalise each row, average
over the templates, L2-normalise again -> one unit vector per class, ``(C, E)``.
Normalisation is done in float32 (CLIP-ES ran it in the model dtype, fp16 on
CUDA), the result is always float32.

Nothing here depends on the CLIP factory of this package: any ``model`` with
``encode_text(tokens) -> (N, E)`` and any ``tokenizer(list[str]) -> LongTensor
(N, L)`` work (e.g. an ``open_clip`` ``CLIP`` and ``open_clip.get_tokenizer``).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from . import vocab
from .prompts import apply_synonyms, build_prompts, expand_synonyms

#: Identifies the embedding recipe inside cache keys; bump when it changes.
RECIPE = 'l2norm-rows/mean-over-templates/l2norm/float32/v1'

Tokenizer = Callable[[List[str]], torch.Tensor]
DeviceLike = Union[str, torch.device, None]


def _model_device(model: Any) -> torch.device:
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
        for b in model.buffers():
            return b.device
    return torch.device('cpu')


def _check_prompts(prompts_per_class: Sequence[Sequence[str]]) -> List[List[str]]:
    if isinstance(prompts_per_class, str) or not isinstance(prompts_per_class, Sequence):
        raise ValueError('prompts_per_class must be a sequence (one entry per class) of '
                         f'sequences of strings, got {type(prompts_per_class).__name__}')
    if len(prompts_per_class) == 0:
        raise ValueError('prompts_per_class is empty')
    out = []
    for c, prompts in enumerate(prompts_per_class):
        if isinstance(prompts, str) or not isinstance(prompts, Sequence) or len(prompts) == 0:
            raise ValueError(f'prompts_per_class[{c}] must be a non-empty sequence of strings, '
                             f'got {prompts!r}')
        for p in prompts:
            if not isinstance(p, str) or not p.strip():
                raise ValueError(f'prompts_per_class[{c}] contains {p!r}, not a non-empty string')
        out.append(list(prompts))
    return out


def normalise_rows(x: torch.Tensor) -> torch.Tensor:
    """Divide every row by its L2 norm (plain division, as in CLIP).

    Args:
        x: ``(N, E)`` tensor.

    Returns:
        ``(N, E)`` tensor with unit-norm rows.
    """
    return x / x.norm(dim=-1, keepdim=True)


def mean_of_normalised(row_embeddings: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
    """Normalise rows, average consecutive groups of rows, normalise again.

    Args:
        row_embeddings: ``(sum(counts), E)`` raw text embeddings, rows of a class
            contiguous.
        counts: Number of rows (templates) of every class.

    Returns:
        ``(len(counts), E)`` unit-norm class embeddings.

    Raises:
        ValueError: ``counts`` does not match the number of rows.
    """
    if sum(counts) != row_embeddings.shape[0] or any(c <= 0 for c in counts):
        raise ValueError(f'counts {list(counts)} do not partition {row_embeddings.shape[0]} rows')
    rows = normalise_rows(row_embeddings)
    means = torch.stack([chunk.mean(dim=0) for chunk in torch.split(rows, list(counts), dim=0)])
    return normalise_rows(means)


def _batches(counts: Sequence[int], *, batch_size: int, group_by_class: bool) -> List[range]:
    """Row ranges of the ``encode_text`` calls."""
    total = sum(counts)
    if not group_by_class:
        return [range(s, min(s + batch_size, total)) for s in range(0, total, batch_size)]
    out: List[range] = []
    start = 0
    for n in counts:  # one class per call (split further only beyond batch_size)
        stop = start + n
        out.extend(range(s, min(s + batch_size, stop)) for s in range(start, stop, batch_size))
        start += n
    return out


def encode_class_texts(model: Any, tokenizer: Tokenizer,
                       prompts_per_class: Sequence[Sequence[str]], *,
                       batch_size: int = 256, group_by_class: bool = True,
                       device: DeviceLike = None) -> torch.Tensor:
    """Prompt-ensemble text embedding of every class.

    For each class every prompt sentence is encoded, each row L2-normalised, the
    rows averaged and the mean L2-normalised again. Runs under ``torch.no_grad``;
    the model's train/eval mode is not touched.

    CPU/GPU matmul kernels may round differently for different batch shapes. With
    ``group_by_class=True`` (default) every ``encode_text`` call holds the sentences
    of one class only (as in CLIP-ES/MaskCLIP), so a class's embedding is
    bit-identical whatever other classes are encoded with it (subset selection,
    background sets, cache reuse). ``False`` packs sentences of several classes
    into each call (fewer calls for many single-template classes).

    Args:
        model: Object with ``encode_text(tokens) -> (N, E)``.
        tokenizer: Callable mapping a list of strings to a ``(N, L)`` token tensor.
        prompts_per_class: ``prompts[c]`` = the sentences of class ``c``.
        batch_size: Maximum sentences per ``encode_text`` call.
        group_by_class: Never mix classes within one call (see above).
        device: Where tokens are sent; default = the model's parameter device.

    Returns:
        ``(C, E)`` float32 tensor with unit-norm rows, on ``device``.

    Raises:
        ValueError: Malformed prompts, bad ``batch_size`` or tokenizer/model
            outputs of the wrong shape.
        RuntimeError: Non-finite embeddings (e.g. fp16 overflow).
    """
    prompts = _check_prompts(prompts_per_class)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f'batch_size must be a positive int, got {batch_size!r}')
    dev = torch.device(device) if device is not None else _model_device(model)
    flat = [p for ps in prompts for p in ps]
    counts = [len(ps) for ps in prompts]
    chunks: List[torch.Tensor] = []
    with torch.no_grad():
        for rows in _batches(counts, batch_size=batch_size, group_by_class=bool(group_by_class)):
            batch = flat[rows.start:rows.stop]
            tokens = tokenizer(batch)
            if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or \
                    tokens.shape[0] != len(batch):
                got = getattr(tokens, 'shape', type(tokens).__name__)
                raise ValueError('tokenizer must return a (N, L) tensor for N sentences, got '
                                 f'{got} for N={len(batch)}')
            emb = model.encode_text(tokens.to(dev))
            if not isinstance(emb, torch.Tensor) or emb.dim() != 2 or emb.shape[0] != len(batch):
                raise ValueError('model.encode_text must return (N, E), got '
                                 f'{getattr(emb, "shape", type(emb).__name__)} for N={len(batch)}')
            chunks.append(emb.float())
        out = mean_of_normalised(torch.cat(chunks, dim=0), counts)
    if not bool(torch.isfinite(out).all()):
        raise RuntimeError('text embeddings contain non-finite values (zero-norm or overflowing '
                           'encode_text output)')
    return out


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
        fd, tmp = tempfile.mkstemp(prefix=f'.{key.digest}.', suffix='.tmp', dir=path.parent)
        try:
            with os.fdopen(fd, 'wb') as f:
                torch.save({'format': self.FORMAT, 'key': key.payload, 'embeddings': stored}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def get_or_compute(self, key: CacheKey, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Return the cached matrix or compute, store and return it.

        Args:
            key: From :meth:`make_key`.
            compute: Called only on a miss; must return the ``(C, E)`` float32 matrix.

        Returns:
            CPU float32 ``(C, E)`` tensor.
        """
        hit = self.get(key)
        if hit is not None:
            return hit
        value = compute()
        self.put(key, value)
        return value.detach().to('cpu').clone()

    def clear_memory(self) -> None:
        """Drop all in-memory entries (disk files are kept)."""
        self._memory.clear()

    def __len__(self) -> int:
        return len(self._memory)


# --------------------------------------------------------------------------------------
# convenience layer: class names / synonyms / templates / background -> embeddings
# --------------------------------------------------------------------------------------

ClassSpec = Optional[Sequence[Union[str, int]]]
SynonymSpec = Union[None, str, Mapping[str, str]]
TemplateSpec = Union[str, Sequence[str]]
BackgroundSpec = Union[None, str, Sequence[str]]


def resolve_class_texts(*, classes: ClassSpec, table: Optional[str],
                        synonyms: SynonymSpec = None) -> List[str]:
    """Class names (after synonym replacement) for a class selection.

    Args:
        classes: Names and/or indices into ``table``; ``None`` = the whole table.
            Without a table, free-form names (str only).
        table: Class table name or ``None``.
        synonyms: ``None``, a synonym-set name or alias (``'clip_es'`` resolves by
            ``table``), or a mapping class name -> text.

    Returns:
        One text per selected class.

    Raises:
        ValueError: Neither classes nor table, or indices without a table.
        KeyError: Unknown table, class name or synonym set.
    """
    if table is not None:
        all_names = vocab.class_names(table)
        if classes is None:
            names = all_names
        else:
            names = [all_names[i] for i in vocab.resolve_classes(classes, table=table)]
    else:
        if classes is None:
            raise ValueError('give classes=..., table=... or both')
        if isinstance(classes, str) or not isinstance(classes, Sequence) or len(classes) == 0:
            raise ValueError(f'classes must be a non-empty sequence, got {classes!r}')
        bad = [c for c in classes if not isinstance(c, str) or not c.strip()]
        if bad:
            raise ValueError(f'without a table, classes must be non-empty names; got {bad!r} '
                             '(integer indices need table=...)')
        names = list(classes)
    if synonyms is None:
        return list(names)
    if isinstance(synonyms, str):
        mapping = vocab.synonyms(vocab.resolve_alias(synonyms, kind='synonyms', table=table))
    else:
        mapping = vocab.check_synonym_mapping(synonyms)
    return apply_synonyms(names, mapping)


def resolve_templates(templates: TemplateSpec) -> List[str]:
    """A template-set name or an explicit template list, validated.

    Args:
        templates: Set name (``'clip_es'``, ``'openai80'``, ...) or list of templates.

    Returns:
        The templates.

    Raises:
        KeyError: Unknown set name.
        ValueError: Empty list or malformed template.
    """
    if isinstance(templates, str):
        return vocab.templates(templates)
    if not isinstance(templates, Sequence) or len(templates) == 0:
        raise ValueError(f'templates must be a set name or a non-empty list, got {templates!r}')
    return [vocab.check_template(t, where=f'templates[{i}]') for i, t in enumerate(templates)]


def resolve_background(background: BackgroundSpec, *, table: Optional[str]) -> List[str]:
    """Background words from a set name/alias or an explicit list.

    Args:
        background: ``None`` (no background), a set name, the alias ``'clip_es'``
            (resolved by ``table``), or a list of words.
        table: Class table, used to resolve aliases.

    Returns:
        Background words (empty list for ``None``).

    Raises:
        KeyError: Unknown set.
        ValueError: Malformed list.
    """
    if background is None:
        return []
    if isinstance(background, str):
        name = vocab.resolve_alias(background, kind='background', table=table)
        return vocab.background_words(name)
    if not isinstance(background, Sequence) or len(background) == 0 or \
            any(not isinstance(w, str) or not w.strip() for w in background):
        raise ValueError(f'background must be None, a set name or a non-empty list of words, '
                         f'got {background!r}')
    return list(background)


def _encode_cached(model: Any, tokenizer: Tokenizer, prompts: List[List[str]], *,
                   cache: Optional[TextEmbeddingCache], model_name: Optional[str],
                   fingerprint: Optional[str], batch_size: int, group_by_class: bool,
                   device: DeviceLike) -> torch.Tensor:
    dev = torch.device(device) if device is not None else _model_device(model)

    def compute() -> torch.Tensor:
        return encode_class_texts(model, tokenizer, prompts, batch_size=batch_size,
                                  group_by_class=group_by_class, device=dev)

    if cache is None:
        return compute()
    key = TextEmbeddingCache.make_key(
        model_name=model_name or type(model).__qualname__,
        fingerprint=fingerprint if fingerprint is not None else weights_fingerprint(model),
        prompts_per_class=prompts,
        extra={'batch_size': batch_size, 'group_by_class': bool(group_by_class)})
    return cache.get_or_compute(key, compute).to(dev)


def _prepare(model: Any, cache: Optional[TextEmbeddingCache],
             fingerprint: Optional[str]) -> Optional[str]:
    if cache is not None and not isinstance(cache, TextEmbeddingCache):
        raise ValueError(f'cache must be a TextEmbeddingCache or None, got {type(cache).__name__}')
    if cache is not None and fingerprint is None:
        return weights_fingerprint(model)  # once per call, shared by fg and bg keys
    return fingerprint


def class_embeddings(model: Any, tokenizer: Tokenizer, *, classes: ClassSpec = None,
                     table: Optional[str] = None, synonyms: SynonymSpec = None,
                     templates: TemplateSpec = 'clip_es', background: BackgroundSpec = None,
                     cache: Optional[TextEmbeddingCache] = None,
                     model_name: Optional[str] = None, fingerprint: Optional[str] = None,
                     batch_size: int = 256, group_by_class: bool = True,
                     device: DeviceLike = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Foreground class embeddings (sentence-level synonym fusion) and background embeddings.

    CLIP-ES VOC setting: ``class_embeddings(model, tok, table='voc20',
    synonyms='clip_es', templates='clip_es', background='clip_es')`` -> ``(20, E)``
    and ``(25, E)``. MaskCLIP: ``table='context59_readable', templates='maskclip85'``.
    Background words use the same templates as the classes.

    Args:
        model: Object with ``encode_text``.
        tokenizer: Callable list[str] -> ``(N, L)`` tokens.
        classes: Names/indices of ``table`` (``None`` = all), or free-form names
            without a table.
        table: Class table name.
        synonyms: ``None``, set name/alias, or mapping class name -> text. A fused
            string is inserted into each template as one sentence.
        templates: Template-set name or explicit list.
        background: ``None``, set name/alias (``'clip_es'``) or list of words.
        cache: Optional :class:`TextEmbeddingCache`.
        model_name: Model name for the cache key (default: the model's class name;
            the weights fingerprint still distinguishes checkpoints).
        fingerprint: Explicit weights fingerprint (default: :func:`weights_fingerprint`,
            only computed when a cache is used).
        batch_size: Maximum sentences per ``encode_text`` call.
        group_by_class: See :func:`encode_class_texts`.
        device: Device for tokens and results (default: the model's).

    Returns:
        ``fg (C, E)`` and ``bg (M, E)`` float32 unit-norm rows; ``bg`` has ``M = 0``
        rows when ``background`` is ``None``.
    """
    fingerprint = _prepare(model, cache, fingerprint)
    texts = resolve_class_texts(classes=classes, table=table, synonyms=synonyms)
    tmpls = resolve_templates(templates)
    bg_words = resolve_background(background, table=table)
    common = dict(cache=cache, model_name=model_name, fingerprint=fingerprint,
                  batch_size=batch_size, group_by_class=group_by_class, device=device)
    fg = _encode_cached(model, tokenizer, build_prompts(texts, tmpls), **common)
    if bg_words:
        bg = _encode_cached(model, tokenizer, build_prompts(bg_words, tmpls), **common)
    else:
        bg = fg.new_zeros((0, fg.shape[1]))
    return fg, bg


def synonym_row_embeddings(model: Any, tokenizer: Tokenizer, *, classes: ClassSpec = None,
                           table: Optional[str] = None, synonyms: SynonymSpec = None,
                           templates: TemplateSpec = 'openai80',
                           background: BackgroundSpec = None,
                           cache: Optional[TextEmbeddingCache] = None,
                           model_name: Optional[str] = None, fingerprint: Optional[str] = None,
                           sep: str = ',', batch_size: int = 256, group_by_class: bool = True,
                           device: DeviceLike = None,
                           ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SCLIP-style embeddings: one row per comma-separated name of every class.

    Each class string (after optional synonym replacement) is split at ``sep``;
    each name is embedded separately (template ensemble as usual). Reduce row
    scores to class scores with
    :func:`wsss_mmseg.text.prompts.max_over_synonyms` (``row_to_class``).

    Args:
        model: Object with ``encode_text``.
        tokenizer: Callable list[str] -> ``(N, L)`` tokens.
        classes: As in :func:`class_embeddings`.
        table: As in :func:`class_embeddings`.
        synonyms: As in :func:`class_embeddings`.
        templates: Template-set name or list (SCLIP uses ``'openai80'``).
        background: As in :func:`class_embeddings` (one row per word).
        cache: Optional :class:`TextEmbeddingCache`.
        model_name: See :func:`class_embeddings`.
        fingerprint: See :func:`class_embeddings`.
        sep: Synonym separator.
        batch_size: Maximum sentences per ``encode_text`` call.
        group_by_class: See :func:`encode_class_texts`.
        device: Device for tokens and results.

    Returns:
        ``rows (R, E)``, ``row_to_class (R,)`` long tensor, ``bg (M, E)``.
    """
    fingerprint = _prepare(model, cache, fingerprint)
    texts = resolve_class_texts(classes=classes, table=table, synonyms=synonyms)
    expansion = expand_synonyms(texts, sep=sep)
    tmpls = resolve_templates(templates)
    bg_words = resolve_background(background, table=table)
    common = dict(cache=cache, model_name=model_name, fingerprint=fingerprint,
                  batch_size=batch_size, group_by_class=group_by_class, device=device)
    rows = _encode_cached(model, tokenizer, build_prompts(expansion.texts, tmpls), **common)
    if bg_words:
        bg = _encode_cached(model, tokenizer, build_prompts(bg_words, tmpls), **common)
    else:
        bg = rows.new_zeros((0, rows.shape[1]))
    return rows, expansion.row_index().to(rows.device), bg
