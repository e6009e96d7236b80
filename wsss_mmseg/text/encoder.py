"""Text embeddings of class prompts, optionally cached on disk (:mod:`.feature_cache`).

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

from dataclasses import dataclass
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from . import vocab
from .feature_cache import (CacheKey, CacheSpec, TextEmbeddingCache, cache_key_parts,  # noqa: F401
                            resolve_text_cache, weights_fingerprint)
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


@dataclass(frozen=True)
class _CachePlan:
    """Where one ``class_embeddings`` call caches and the key fields shared by its calls."""

    cache: Optional[TextEmbeddingCache]
    model_name: str = ''
    weights: str = ''
    extra: Optional[Mapping[str, Any]] = None


def _plan_cache(model: Any, tokenizer: Tokenizer, *, cache: CacheSpec, weights_id: Optional[str],
                fingerprint: Optional[str], model_name: Optional[str],
                device: torch.device) -> _CachePlan:
    """Resolve the cache and compute the key fields once (shared by fg and bg keys)."""
    if isinstance(cache, Mapping):
        raise ValueError(f'cache must be a TextEmbeddingCache, a folder, True/False or '
                         f"'auto', got {type(cache).__name__}")
    if weights_id is not None and (not isinstance(weights_id, str) or not weights_id):
        raise ValueError(f'weights_id must be a non-empty string from weights_content_id, '
                         f'got {weights_id!r}')
    store = resolve_text_cache(cache, weights_id)
    if store is None:
        return _CachePlan(None)
    weights, extra = cache_key_parts(model, tokenizer, weights_id, fingerprint, device)
    return _CachePlan(store, model_name or type(model).__qualname__, weights, extra)


def _encode_cached(model: Any, tokenizer: Tokenizer, prompts: List[List[str]], *,
                   plan: _CachePlan, batch_size: int, group_by_class: bool,
                   device: torch.device) -> torch.Tensor:

    def compute() -> torch.Tensor:
        return encode_class_texts(model, tokenizer, prompts, batch_size=batch_size,
                                  group_by_class=group_by_class, device=device)

    if plan.cache is None:
        return compute()
    key = TextEmbeddingCache.make_key(
        model_name=plan.model_name, fingerprint=plan.weights, prompts_per_class=prompts,
        extra=dict(plan.extra or {}, batch_size=batch_size, group_by_class=bool(group_by_class)))
    return plan.cache.get_or_compute(key, compute).to(device)


def class_embeddings(model: Any, tokenizer: Tokenizer, *, classes: ClassSpec = None,
                     table: Optional[str] = None, synonyms: SynonymSpec = None,
                     templates: TemplateSpec = 'clip_es', background: BackgroundSpec = None,
                     cache: CacheSpec = 'auto', weights_id: Optional[str] = None,
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
        cache: ``'auto'`` (default) -- the on-disk cache in
            :func:`~wsss_mmseg.text.feature_cache.default_text_cache_dir` when
            ``weights_id`` names file or tag weights, none otherwise (random or
            unidentified weights); ``True`` -- that cache whatever the weights (random
            weights are keyed by a hash of their tensors); ``False``/``None`` -- no
            cache; a folder path; or a :class:`TextEmbeddingCache`. Results are
            bit-identical with and without the cache (see
            :mod:`wsss_mmseg.text.feature_cache` for the key).
        weights_id: Identity of the model's weights,
            ``wsss_mmseg.clip.weights_id.weights_content_id(pretrained, model_name)``
            for the ``pretrained`` the model was built from. It must describe ``model``:
            the cache trusts it instead of hashing the tensors.
        model_name: Model name for the cache key (default: the model's class name;
            the weights identity still distinguishes checkpoints).
        fingerprint: Explicit weights string for the cache key; overrides ``weights_id``
            (default: ``weights_id`` for file/tag weights, else
            :func:`weights_fingerprint`, only computed when a cache is used).
        batch_size: Maximum sentences per ``encode_text`` call.
        group_by_class: See :func:`encode_class_texts`.
        device: Device for tokens and results (default: the model's).

    Returns:
        ``fg (C, E)`` and ``bg (M, E)`` float32 unit-norm rows; ``bg`` has ``M = 0``
        rows when ``background`` is ``None``.
    """
    texts = resolve_class_texts(classes=classes, table=table, synonyms=synonyms)
    tmpls = resolve_templates(templates)
    bg_words = resolve_background(background, table=table)
    dev = torch.device(device) if device is not None else _model_device(model)
    plan = _plan_cache(model, tokenizer, cache=cache, weights_id=weights_id,
                       fingerprint=fingerprint, model_name=model_name, device=dev)
    common = dict(plan=plan, batch_size=batch_size, group_by_class=group_by_class, device=dev)
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
                           cache: CacheSpec = 'auto', weights_id: Optional[str] = None,
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
        cache: See :func:`class_embeddings`.
        weights_id: See :func:`class_embeddings`.
        model_name: See :func:`class_embeddings`.
        fingerprint: See :func:`class_embeddings`.
        sep: Synonym separator.
        batch_size: Maximum sentences per ``encode_text`` call.
        group_by_class: See :func:`encode_class_texts`.
        device: Device for tokens and results.

    Returns:
        ``rows (R, E)``, ``row_to_class (R,)`` long tensor, ``bg (M, E)``.
    """
    texts = resolve_class_texts(classes=classes, table=table, synonyms=synonyms)
    expansion = expand_synonyms(texts, sep=sep)
    tmpls = resolve_templates(templates)
    bg_words = resolve_background(background, table=table)
    dev = torch.device(device) if device is not None else _model_device(model)
    plan = _plan_cache(model, tokenizer, cache=cache, weights_id=weights_id,
                       fingerprint=fingerprint, model_name=model_name, device=dev)
    common = dict(plan=plan, batch_size=batch_size, group_by_class=group_by_class, device=dev)
    rows = _encode_cached(model, tokenizer, build_prompts(expansion.texts, tmpls), **common)
    if bg_words:
        bg = _encode_cached(model, tokenizer, build_prompts(bg_words, tmpls), **common)
    else:
        bg = rows.new_zeros((0, rows.shape[1]))
    return rows, expansion.row_index().to(rows.device), bg
