"""Softmax-GradCAM of CLIP-ES (spec ``clip_es.md`` §4-5) as small pure functions.

The classifier of CLIP-ES is a softmax over the cosine similarities between the
image embedding and ``K`` label + ``M`` background text embeddings; the Grad-CAM
target of label ``k`` is its softmax probability ``p_k`` and the feature map is
the ``ln_1`` output ``A`` of the last ViT block (CLS token dropped).

Gradients of all ``K`` targets come from ONE forward of the last block and ONE
batched backward (:func:`target_gradients_batched`): the ``K`` vector-Jacobian
products (one-hot cotangents on the target probabilities) run as a single vmapped
backward pass (``torch.autograd.grad(..., is_grads_batched=True)``).
:func:`target_gradients_per_class` is the reference (one shared forward, then one
backward per class with ``retain_graph``) used by tests; ``benchmarks/bench_generate.py``
compares the generator against the official structure (forward + backward per class).

Fidelity:
    * The CAM is ReLU'd and min-max normalised TWICE with
      ``x <- x - min(x); x <- x / (1e-7 + max(x))`` exactly as the official
      pipeline (``eps`` is additive, so maps whose maximum is ~1e-6 stay far
      below 1; the maximum of a normalised map is ``< 1``).
    * The image embedding is the mean of the ``ln_post`` patch tokens (CLS
      unused) followed by ``proj``; both text and image embeddings are
      L2-normalised before the cosine logits.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = [
    'CAM_EPS',
    'minmax_normalize',
    'normalize_gradcam',
    'patch_mean_embedding',
    'clip_softmax',
    'as_target_tensor',
    'target_gradients_batched',
    'target_gradients_per_class',
    'gradcam_weights',
    'gradcam_maps',
    'softmax_gradcam',
]

#: Additive epsilon of the official min-max normalisation (``scale_cam_image``).
CAM_EPS = 1e-7

ScoreFn = Callable[[Tensor], Tensor]
Targets = Union[Sequence[int], Tensor]


def minmax_normalize(maps: Tensor, *, eps: float = CAM_EPS) -> Tensor:
    """Min-max normalise each map over its last two dimensions.

    ``x <- x - min(x)``, then ``x <- x / (eps + max(x))`` (the official
    ``scale_cam_image`` semantics: ``eps`` is added to the maximum, it is not a
    clamp).

    Args:
        maps: ``(..., h, w)`` maps.
        eps: additive epsilon of the denominator.

    Returns:
        Tensor of the same shape and dtype.
    """
    if maps.dim() < 2:
        raise ValueError(f'minmax_normalize expects (..., h, w) maps, got shape {tuple(maps.shape)}')
    flat = maps.flatten(-2)
    flat = flat - flat.amin(dim=-1, keepdim=True)
    flat = flat / (eps + flat.amax(dim=-1, keepdim=True))
    return flat.view_as(maps)


def normalize_gradcam(cam_raw: Tensor, *, eps: float = CAM_EPS, times: int = 2) -> Tensor:
    """ReLU followed by ``times`` min-max normalisations (official: twice).

    Args:
        cam_raw: ``(..., h, w)`` raw class activation maps (before ReLU).
        eps: additive epsilon of each normalisation.
        times: number of normalisations (2 in the official pipeline: once per
            layer in ``compute_cam_per_layer`` and once in
            ``aggregate_multi_layers``, with a no-op ReLU in between).

    Returns:
        ``(..., h, w)`` maps in ``[0, 1)``.
    """
    if times < 1:
        raise ValueError(f'times must be >= 1, got {times}')
    cam = cam_raw
    for _ in range(times):
        cam = minmax_normalize(cam.clamp_min(0), eps=eps)
    return cam


def patch_mean_embedding(tokens: Tensor, *, ln_post: Callable[[Tensor], Tensor],
                         proj: Optional[Tensor]) -> Tensor:
    """Image embedding of CLIP-ES: ``proj(mean_patches(ln_post(tokens)))``.

    Args:
        tokens: ``(B, 1 + N, D)`` output of the last block (CLS first).
        ln_post: the final LayerNorm of the vision tower.
        proj: ``(D, E)`` projection (``None`` = identity).

    Returns:
        ``(B, E)`` un-normalised image embeddings (the CLS token is not used).
    """
    if tokens.dim() != 3 or tokens.shape[1] < 2:
        raise ValueError(f'tokens must be (B, 1+N, D) with N >= 1, got {tuple(tokens.shape)}')
    x = ln_post(tokens)[:, 1:, :].mean(dim=1)
    if proj is not None:
        x = x @ proj.to(x.dtype)
    return x


def clip_softmax(image_emb: Tensor, text_emb: Tensor, *, logit_scale: Union[float, Tensor]) -> Tensor:
    """Softmax over ``logit_scale * cos(image, text_j)``.

    Args:
        image_emb: ``(B, E)`` image embeddings.
        text_emb: ``(T, E)`` text embeddings (rows: K labels then M background prompts).
        logit_scale: multiplicative scale, i.e. ``exp(logit_scale)`` of the checkpoint (100 for CLIP).

    Returns:
        ``(B, T)`` probabilities.
    """
    if image_emb.dim() != 2 or text_emb.dim() != 2 or image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(f'clip_softmax expects (B,E) and (T,E); got {tuple(image_emb.shape)} '
                         f'and {tuple(text_emb.shape)}')
    img = image_emb / image_emb.norm(dim=-1, keepdim=True)
    txt = text_emb.to(img.dtype)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    logits = logit_scale * (img @ txt.t())
    return logits.softmax(dim=-1)


def as_target_tensor(targets: Targets, *, num_scores: Optional[int] = None,
                     device: Optional[torch.device] = None) -> Tensor:
    """Validate target column indices and return them as an int64 tensor ``(K,)``.

    Args:
        targets: ``K >= 1`` column indices into the score matrix.
        num_scores: number of score columns, to range-check the targets.
        device: device of the result.

    Returns:
        ``(K,)`` int64 tensor.
    """
    t = torch.as_tensor(targets, dtype=torch.long, device=device).reshape(-1)
    if t.numel() == 0:
        raise ValueError('at least one Grad-CAM target is required (got K=0)')
    if num_scores is not None and (int(t.min()) < 0 or int(t.max()) >= num_scores):
        raise ValueError(f'Grad-CAM targets {t.tolist()} out of range for {num_scores} scores')
    return t


def _check_features(features: Tensor) -> Tensor:
    if features.dim() == 2:
        features = features.unsqueeze(0)
    if features.dim() != 3 or features.shape[0] != 1:
        raise ValueError(f'features must be (T, D) or (1, T, D), got {tuple(features.shape)}')
    return features


def target_gradients_batched(features: Tensor, score_fn: ScoreFn, targets: Targets) -> Tuple[Tensor, Tensor]:
    """Gradients of ``K`` scalar targets w.r.t. one feature tensor: one forward, one batched backward.

    ``score_fn`` runs ONCE on the ``(1, T, D)`` features; the ``K`` vector-Jacobian
    products (cotangent = one-hot on each target score) are evaluated together by a
    single vmapped backward (``torch.autograd.grad(..., is_grads_batched=True)``), so
    the work shared by all targets (the forward) is done once and the per-target
    backward runs as one batched pass. Equal to :func:`target_gradients_per_class` up to
    float rounding (tested).

    Args:
        features: ``(T, D)`` or ``(1, T, D)`` feature map (treated as a constant input).
        score_fn: function of a ``(1, T, D)`` tensor returning ``(1, C)`` scores.
        targets: ``(K,)`` score columns.

    Returns:
        ``(scores (K, C) detached, grads (K, T, D))``; grads have the dtype of ``features``
        (score rows are identical).
    """
    features = _check_features(features)
    t = as_target_tensor(targets, device=features.device)
    k = t.numel()
    leaf = features.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        scores = score_fn(leaf)
        if scores.dim() != 2 or scores.shape[0] != 1:
            raise ValueError(f'score_fn must return (1, C) scores, got {tuple(scores.shape)}')
        as_target_tensor(t, num_scores=scores.shape[1])
        selected = scores[0, t]
        if k == 1:
            (grads,) = torch.autograd.grad(selected[0], leaf)
        else:
            eye = torch.eye(k, dtype=selected.dtype, device=selected.device)
            (grads,) = torch.autograd.grad(selected, leaf, grad_outputs=eye, is_grads_batched=True)
    return scores.detach().expand(k, -1).clone(), grads.reshape(k, *leaf.shape[1:])


def target_gradients_per_class(features: Tensor, score_fn: ScoreFn, targets: Targets) -> Tuple[Tensor, Tensor]:
    """Reference: one forward and one backward per target (``retain_graph``), as the official code.

    Args:
        features: ``(T, D)`` or ``(1, T, D)`` feature map.
        score_fn: function of a ``(1, T, D)`` tensor returning ``(1, C)`` scores.
        targets: ``(K,)`` score columns.

    Returns:
        ``(scores (K, C) detached, grads (K, T, D))`` (score rows are identical).
    """
    features = _check_features(features)
    t = as_target_tensor(targets, device=features.device)
    leaf = features.detach().clone().requires_grad_(True)
    grads = []
    with torch.enable_grad():
        scores = score_fn(leaf)
        if scores.dim() != 2 or scores.shape[0] != 1:
            raise ValueError(f'score_fn must return (1, C) scores, got {tuple(scores.shape)}')
        as_target_tensor(t, num_scores=scores.shape[1])
        for i, col in enumerate(t.tolist()):
            (g,) = torch.autograd.grad(scores[0, col], leaf, retain_graph=i + 1 < t.numel())
            grads.append(g[0])
    return scores.detach().expand(t.numel(), -1).clone(), torch.stack(grads)


def gradcam_weights(grads: Tensor, *, drop_cls: bool = True) -> Tensor:
    """Grad-CAM channel weights: spatial mean of the gradients.

    Args:
        grads: ``(K, T, D)`` gradients w.r.t. the token features.
        drop_cls: drop token 0 (CLS) before averaging.

    Returns:
        ``(K, D)`` float32 weights.
    """
    if grads.dim() != 3:
        raise ValueError(f'grads must be (K, T, D), got {tuple(grads.shape)}')
    g = grads[:, 1:, :] if drop_cls else grads
    return g.float().mean(dim=1)


def gradcam_maps(activations: Tensor, weights: Tensor, grid: Tuple[int, int], *,
                 drop_cls: bool = True) -> Tensor:
    """Raw Grad-CAM ``sum_d weights_d A_d`` on the patch grid (before ReLU).

    Args:
        activations: ``(T, D)`` or ``(1, T, D)`` token features (the same for every class).
        weights: ``(K, D)`` channel weights.
        grid: ``(h, w)`` patch grid; tokens are row-major.
        drop_cls: drop token 0 (CLS).

    Returns:
        ``(K, h, w)`` float32 maps.
    """
    a = _check_features(activations)[0]
    if drop_cls:
        a = a[1:]
    h, w = int(grid[0]), int(grid[1])
    if a.shape[0] != h * w:
        raise ValueError(f'{a.shape[0]} patch tokens do not match the grid {h}x{w}')
    cam = (weights.float()[:, None, :] * a.float()[None, :, :]).sum(dim=-1)
    return cam.view(-1, h, w)


def softmax_gradcam(features: Tensor, score_fn: ScoreFn, targets: Targets, grid: Tuple[int, int], *,
                    batched: bool = True, eps: float = CAM_EPS) -> dict:
    """Softmax-GradCAM of all targets of one image.

    Args:
        features: ``(1, 1 + N, D)`` feature map ``A`` (``ln_1`` output of the last block, CLS first).
        score_fn: maps ``(B, 1 + N, D)`` copies of ``A`` to ``(B, C)`` softmax probabilities.
        targets: ``(K,)`` probability columns (label ``k`` is column ``targets[k]``).
        grid: ``(h, w)`` patch grid with ``h * w = N``.
        batched: one backward for all classes (default) or the per-class reference loop.
        eps: epsilon of the min-max normalisations.

    Returns:
        dict with ``probs (K, C)``, ``weights (K, D)``, ``cam_raw (K, h, w)`` (before ReLU) and
        ``cam (K, h, w)`` (ReLU + 2x min-max), all float32.
    """
    fn = target_gradients_batched if batched else target_gradients_per_class
    probs, grads = fn(features, score_fn, targets)
    weights = gradcam_weights(grads)
    cam_raw = gradcam_maps(features.detach(), weights, grid)
    return dict(probs=probs.float(), weights=weights, cam_raw=cam_raw,
                cam=normalize_gradcam(cam_raw, eps=eps))
