"""Sharpness-based prompt selection (CLIP-ES, CVPR 2023, Sec. 3.2 "sharpness").

CLIP-ES chose its template (``a clean origami {}.``) by classifying the training images
with plain CLIP under each candidate template and preferring the template whose class
score distributions are the *sharpest*; the maintainer describes the recipe as
"use the original CLIP to perform classification and record the logits of each image,
then calculate sharpness for each prompt" (linyq2117/CLIP-ES issue #18). The paper's
equation is not reproduced in our spec, so this module implements the dispersion
index of each image's class-probability vector — ``var(p_i) / mean(p_i)`` over the
``C`` dataset classes, averaged over images — which is the coefficient-of-variation
style sharpness measure the paper describes, and labels it as our reading. Image-level
labels are used only for a second, diagnostic column: the mean probability that the
template gives to the classes actually present (``label_score``).

Pure torch; no mmseg imports.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import Tensor

__all__ = ['class_probabilities', 'sharpness', 'label_score', 'rank_templates']


def class_probabilities(image_emb: Tensor, text_emb: Tensor, *, logit_scale: float = 100.0) -> Tensor:
    """Softmax over classes of ``logit_scale * cos(image, class)``.

    Args:
        image_emb: ``(N, E)`` image embeddings (any norm).
        text_emb: ``(C, E)`` class embeddings (any norm).
        logit_scale: CLIP's temperature (100 for OpenAI CLIP).

    Returns:
        ``(N, C)`` probabilities (float32).
    """
    img = torch.nn.functional.normalize(image_emb.float(), dim=-1)
    txt = torch.nn.functional.normalize(text_emb.float(), dim=-1)
    return (logit_scale * img @ txt.t()).softmax(dim=-1)


def sharpness(probs: Tensor) -> Tensor:
    """Mean over images of the dispersion index ``var(p_i) / mean(p_i)`` of each score vector.

    Args:
        probs: ``(N, C)`` per-image class scores (``C >= 2``).

    Returns:
        Scalar tensor; larger = sharper. With the population variance a one-hot vector over
        ``C`` classes gives ``1 - 1/C`` (the maximum) and a uniform vector gives 0.
    """
    if probs.dim() != 2 or probs.shape[1] < 2:
        raise ValueError(f'probs must be (N, C>=2), got {tuple(probs.shape)}')
    mean = probs.mean(dim=1)
    var = probs.var(dim=1, unbiased=False)
    return (var / mean.clamp_min(1e-12)).mean()


def label_score(probs: Tensor, labels: Sequence[Sequence[int]]) -> Tensor:
    """Mean probability given to the classes present in each image (diagnostic).

    Args:
        probs: ``(N, C)`` class scores.
        labels: per image, the indices of its classes (at least one each).

    Returns:
        Scalar tensor.
    """
    if len(labels) != probs.shape[0]:
        raise ValueError(f'{len(labels)} label lists for {probs.shape[0]} images')
    vals = []
    for i, lab in enumerate(labels):
        if len(lab) == 0:
            raise ValueError(f'image {i} has no labels')
        vals.append(probs[i, list(lab)].sum())
    return torch.stack(vals).mean()


def rank_templates(image_emb: Tensor, text_emb_per_template: Dict[str, Tensor], *,
                   labels: Optional[Sequence[Sequence[int]]] = None,
                   logit_scale: float = 100.0) -> list:
    """Score every template; sorted by sharpness, sharpest first.

    Args:
        image_emb: ``(N, E)`` image embeddings (computed once, template independent).
        text_emb_per_template: template -> ``(C, E)`` class embeddings under it.
        labels: optional image-level labels for the ``label_score`` column.
        logit_scale: CLIP temperature.

    Returns:
        ``[{'template', 'sharpness', 'label_score' (or None)}, ...]``.
    """
    rows = []
    for template, text in text_emb_per_template.items():
        probs = class_probabilities(image_emb, text, logit_scale=logit_scale)
        rows.append(dict(template=template, sharpness=float(sharpness(probs)),
                         label_score=None if labels is None else float(label_score(probs, labels))))
    return sorted(rows, key=lambda r: -r['sharpness'])
