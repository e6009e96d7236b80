"""Prompt building and the two synonym modes.

Two ways of using a class string that holds several names
(``'person with clothes,people,human'``):

* **sentence fusion** (CLIP-ES): the whole string is put into each template as
  one sentence, e.g. ``'a clean origami person with clothes,people,human.'``;
  one embedding per class. Use :func:`apply_synonyms` + :func:`build_prompts`.
* **split / max** (SCLIP): the string is split at commas, every name gets its
  own embedding row, and a class score is the max over its rows (taken after
  the softmax over all rows in SCLIP). Use :func:`expand_synonyms` to get the
  row texts plus the row -> class mapping, and :func:`max_over_synonyms` to
  reduce row scores to class scores.

Pure functions; only :func:`max_over_synonyms` needs torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Mapping, Sequence

import torch

from .vocab import check_synonym_mapping, check_template


def _check_texts(texts: Sequence[str], *, what: str) -> List[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise ValueError(f'{what} must be a sequence of strings, got {type(texts).__name__}')
    if len(texts) == 0:
        raise ValueError(f'{what} is empty')
    out = []
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise ValueError(f'{what}[{i}] = {t!r} is not a non-empty string')
        out.append(t)
    return out


def apply_synonyms(class_texts: Sequence[str], synonyms: Mapping[str, str]) -> List[str]:
    """Replace class names by their synonym strings.

    Args:
        class_texts: Class names.
        synonyms: Mapping class name -> replacement text (e.g.
            :func:`wsss_mmseg.text.vocab.synonyms` ``('clip_es_voc')``). Names
            without an entry are kept; entries for absent names are ignored.

    Returns:
        The texts to encode, one per class.

    Raises:
        ValueError: Empty/invalid class texts or a malformed mapping.
    """
    texts = _check_texts(class_texts, what='class_texts')
    mapping = check_synonym_mapping(synonyms)
    return [mapping.get(t, t) for t in texts]


def build_prompts(class_texts: Sequence[str], templates: Sequence[str]) -> List[List[str]]:
    """Fill every template with every class text (sentence-level fusion).

    Args:
        class_texts: One text per class (possibly a fused synonym string).
        templates: Templates with one ``{}`` placeholder each.

    Returns:
        ``prompts[c][t]`` = ``templates[t]`` filled with ``class_texts[c]``.

    Raises:
        ValueError: Empty inputs or a malformed template.

    Example:
        >>> build_prompts(['person with clothes,people,human'], ['a clean origami {}.'])
        [['a clean origami person with clothes,people,human.']]
    """
    texts = _check_texts(class_texts, what='class_texts')
    tmpls = _check_texts(templates, what='templates')
    for i, t in enumerate(tmpls):
        check_template(t, where=f'templates[{i}]')
    return [[t.format(c) for t in tmpls] for c in texts]


@dataclass(frozen=True)
class SynonymExpansion:
    """Result of splitting comma-separated class strings into one row per name.

    Attributes:
        texts: One name per row, rows of a class are contiguous.
        row_to_class: ``row_to_class[r]`` = class index of row ``r``.
        class_rows: ``class_rows[c]`` = row indices of class ``c``.
    """

    texts: List[str]
    row_to_class: List[int]
    class_rows: List[List[int]]

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_rows)

    def row_index(self) -> torch.Tensor:
        """``row_to_class`` as a ``LongTensor`` of shape ``(R,)``."""
        return torch.tensor(self.row_to_class, dtype=torch.long)


def expand_synonyms(class_texts: Sequence[str], *, sep: str = ',') -> SynonymExpansion:
    """Split each class string at ``sep`` into separate rows (SCLIP mode).

    Surrounding whitespace of each part is stripped; empty parts are dropped;
    a name repeated within one class is kept once.

    Args:
        class_texts: One (possibly comma-separated) string per class.
        sep: Separator between synonyms.

    Returns:
        The expansion (row texts, row -> class, class -> rows).

    Raises:
        ValueError: Empty input, empty separator, or a class without any name.
    """
    texts = _check_texts(class_texts, what='class_texts')
    if not sep:
        raise ValueError('sep must be a non-empty string')
    rows: List[str] = []
    row_to_class: List[int] = []
    class_rows: List[List[int]] = []
    for c, text in enumerate(texts):
        parts: List[str] = []
        for p in text.split(sep):
            p = p.strip()
            if p and p not in parts:
                parts.append(p)
        if not parts:
            raise ValueError(f'class_texts[{c}] = {text!r} contains no name')
        class_rows.append(list(range(len(rows), len(rows) + len(parts))))
        rows.extend(parts)
        row_to_class.extend([c] * len(parts))
    return SynonymExpansion(texts=rows, row_to_class=row_to_class, class_rows=class_rows)


def max_over_synonyms(scores: torch.Tensor, row_to_class: torch.Tensor, *,
                      num_classes: int, dim: int = -1) -> torch.Tensor:
    """Reduce per-row scores to per-class scores by a max over each class's rows.

    Args:
        scores: Floating tensor whose ``dim`` axis has one entry per synonym row ``R``.
        row_to_class: ``LongTensor (R,)`` with the class of every row.
        num_classes: Number of classes ``C``; every class must own a row.
        dim: Axis of ``scores`` holding the rows.

    Returns:
        Tensor like ``scores`` with axis ``dim`` of size ``C``.

    Raises:
        ValueError: Shape mismatch, class index out of range, or a class with no row.
    """
    if not scores.is_floating_point():
        raise ValueError(f'scores must be a floating-point tensor, got {scores.dtype}')
    if row_to_class.dim() != 1 or row_to_class.dtype != torch.long:
        raise ValueError('row_to_class must be a 1-D LongTensor')
    dim = dim % scores.dim()
    if scores.shape[dim] != row_to_class.numel():
        raise ValueError(f'scores has {scores.shape[dim]} rows on dim {dim} but row_to_class '
                         f'has {row_to_class.numel()}')
    if row_to_class.numel() and (int(row_to_class.min()) < 0 or
                                 int(row_to_class.max()) >= num_classes):
        raise ValueError(f'row_to_class values must lie in [0, {num_classes})')
    counts = torch.bincount(row_to_class.cpu(), minlength=num_classes)
    if bool((counts == 0).any()):
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f'classes {missing} have no synonym row')
    moved = scores.movedim(dim, -1)
    out_shape = moved.shape[:-1] + (num_classes,)
    index = row_to_class.to(scores.device).expand(moved.shape)
    out = torch.full(out_shape, float('-inf'), dtype=scores.dtype, device=scores.device)
    out = out.scatter_reduce(-1, index, moved, reduce='amax', include_self=True)
    return out.movedim(-1, dim)
