"""MaskCLIP+ maths as pure functions (spec maskclip_pacl.md §2): re-normalising the student's
input for the teacher, text-embedding classifier logits, writing the teacher's pseudo labels into the
unlabeled pixels, and the training phase as a function of the iteration. No mmseg imports; the
registered segmentor and hook (``wsss_mmseg.models.maskclip_plus``,
``wsss_mmseg.hooks.maskclip_plus_phase``) call these.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


__all__ = ['renormalize', 'text_classifier_logits', 'assign_pseudo_labels', 'phase_at']


def renormalize(x: Tensor, *, src_mean: Optional[Tensor], src_std: Optional[Tensor], dst_mean: Tensor,
                dst_std: Tensor, swap_channels: bool = False) -> Tensor:
    """Re-express images normalised with one mean/std pair in another one.

    ``raw = x * src_std + src_mean`` (``x`` itself when ``src_mean`` is ``None``: un-normalised
    input), optionally reversed channels (BGR <-> RGB), then ``(raw - dst_mean) / dst_std``.

    Args:
        x: ``(B, 3, H, W)`` float images.
        src_mean: ``(3,)``/``(3, 1, 1)`` mean of ``x``'s normalisation, or ``None``.
        src_std: Matching std, or ``None``.
        dst_mean: Target mean (pixel units, the target channel order).
        dst_std: Target std.
        swap_channels: Reverse the channel order between the two normalisations.

    Returns:
        ``(B, 3, H, W)`` float32 images.
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f'renormalize expects (B, 3, H, W) images, got shape {tuple(x.shape)}')
    raw = x.float()
    if src_mean is not None:
        raw = raw * src_std.reshape(1, 3, 1, 1).to(raw) + src_mean.reshape(1, 3, 1, 1).to(raw)
    if swap_channels:
        raw = raw.flip(1)
    return (raw - dst_mean.reshape(1, 3, 1, 1).to(raw)) / dst_std.reshape(1, 3, 1, 1).to(raw)


def text_classifier_logits(feat: Tensor, text: Tensor, *, background: Optional[Tensor] = None) -> Tensor:
    """MaskCLIP+ classifier: 1x1 convolution of (un-normalised) features with text embeddings.

    Args:
        feat: ``(B, D, h, w)`` decode-head features.
        text: ``(K, D)`` class embeddings (used as given: the frozen CLIP ones are L2-normalised).
        background: Optional ``(1, D)`` background vector; L2-normalised and prepended as class 0.

    Returns:
        ``(B, K (+1), h, w)`` logits.
    """
    if feat.dim() != 4 or text.dim() != 2 or feat.shape[1] != text.shape[1]:
        raise ValueError(f'text classifier: features {tuple(feat.shape)} and text {tuple(text.shape)} '
                         'must be (B, D, h, w) and (K, D)')
    weight = text.to(feat.dtype)
    if background is not None:
        weight = torch.cat([F.normalize(background.to(feat.dtype), dim=-1), weight])
    return torch.einsum('bdhw,kd->bkhw', feat, weight)


def assign_pseudo_labels(gt: Tensor, scores: Tensor, *, pseudo_classes: Sequence[int],
                         unlabeled_index: int = 254, ignore_index: int = 255,
                         conf_thresh: Optional[float] = None, writable: Optional[Tensor] = None,
                         conf_scope: str = 'all') -> Tensor:
    """Write argmax-over-``pseudo_classes`` labels into the unlabelled pixels of a label map.

    Args:
        gt: ``(B, H, W)`` or ``(B, 1, H, W)`` integer labels; ``unlabeled_index`` marks pixels to label.
        scores: ``(B, C, H, W)`` class scores at the label resolution (teacher or student logits,
            channel ``c`` = class ``c``).
        pseudo_classes: Class ids the pseudo label may take (the argmax runs over these only).
        unlabeled_index: Marker of pixels to label (254).
        ignore_index: Label of pixels without a label (255).
        conf_thresh: If set, pixels whose best score among ``pseudo_classes`` is below it get
            ``ignore_index`` (official MaskCLIP+: the raw teacher score, spec §2.2).
        conf_scope: ``'all'`` (official ``assign_label``: a low-confidence pixel is ignored
            wherever it is, seen-class GT pixels included) or ``'unlabeled'`` (only pixels that
            receive a pseudo label; GT pixels are kept).
        writable: Optional ``(B, H, W)`` bool: label these pixels instead of ``gt == unlabeled_index``
            (annotation-free mode without the GT void mask).

    Returns:
        int64 labels of ``gt``'s shape: pseudo labels where written, ``ignore_index`` at every
        remaining ``unlabeled_index`` pixel, ``gt`` elsewhere.
    """
    squeeze = gt.dim() == 4
    labels = gt[:, 0] if squeeze else gt
    if labels.dim() != 3 or scores.dim() != 4 or scores.shape[0] != labels.shape[0] \
            or scores.shape[-2:] != labels.shape[-2:]:
        raise ValueError(f'labels {tuple(gt.shape)} and scores {tuple(scores.shape)} must be (B[, 1], H, W) and '
                         '(B, C, H, W) of the same batch and size')
    ids = [int(c) for c in pseudo_classes]
    if not ids:
        raise ValueError('pseudo_classes is empty')
    if len(set(ids)) != len(ids) or min(ids) < 0 or max(ids) >= scores.shape[1]:
        raise ValueError(f'pseudo_classes {ids} must be distinct ids in [0, {scores.shape[1]})')
    labels = labels.long()
    index = torch.tensor(ids, dtype=torch.long, device=scores.device)
    best, arg = scores.index_select(1, index).max(dim=1)
    if conf_scope not in ('all', 'unlabeled'):
        raise ValueError(f"conf_scope must be 'all' or 'unlabeled', got {conf_scope!r}")
    pseudo = index[arg].to(labels.device)
    target = (labels == unlabeled_index) if writable is None else writable.bool()
    out = torch.where(target, pseudo, labels)
    if conf_thresh is not None:
        low = (best < conf_thresh).to(labels.device)
        if conf_scope == 'unlabeled':
            low = low & target
        out = torch.where(low, torch.full_like(out, ignore_index), out)
    out = torch.where(out == unlabeled_index, torch.full_like(out, ignore_index), out)
    return out[:, None] if squeeze else out


def phase_at(iteration: int, *, switch_iter: Optional[int]) -> str:
    """``'teacher'`` while ``iteration < switch_iter`` (0-based ``runner.iter``), else ``'self'``.

    Args:
        iteration: Iterations already done (``runner.iter``).
        switch_iter: First 0-based iteration of self-training; ``None`` = never.

    Returns:
        ``'teacher'`` or ``'self'``.
    """
    if switch_iter is None or iteration < switch_iter:
        return 'teacher'
    return 'self'


# ----------------------------------------------------------------------------- modules
