"""SEAM (Wang et al., CVPR 2020): CAM normalisation, pixel correlation module (PCM) and the
ER / ECR losses of the Siamese training (spec classic_wsss.md, SEAM row). Pure torch.

Notation: ``K`` foreground CAMs per image; SEAM adds a background channel 0 = ``1 - max_c fg``,
so "full" maps have ``1 + K`` channels. The image-level labels are ``y`` (B, K) and
``y_full = [1, y]`` (the background is always present). Views: the original image ``I`` and
``T(I)`` (bilinear down-scaling, 0.3 in SEAM).

* :func:`max_norm` -- ReLU, then per map ``relu(p - min - eps) / (max - min + eps)``.
* :func:`with_background` -- prepend ``1 - max_c fg``.
* :func:`pcm_seed` -- the PCM input (no gradient): ReLU'd CAM divided by its maximum,
  background ``1 - max fg``, foreground reduced to the arg-max class at every pixel.
* :func:`pcm_propagate` -- ``cam_rv[:, j] = sum_i cam[:, i] a_ij / (sum_i a_ij + eps)`` with
  ``a_ij = relu(cos(f_i, f_j))`` over the feature grid.
* :func:`max_onehot` -- keep only the arg-max foreground channel (background untouched).
* :func:`er_loss` -- ``mean | T(N(A(I))) * y - N(A(T(I))) * y |`` over the foreground channels.
* :func:`ecr_loss` -- ``mean of the top r% of | max_onehot(target) - N(PCM) * y_full |``
  per image, averaged over images (SEAM's hard-pixel ECR).
* :func:`min_pool_loss` -- the official code's extra term on the PCM maps: mean of the ReLU'd
  smallest quarter of the per-pixel foreground maxima.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['max_norm', 'with_background', 'pcm_seed', 'pcm_propagate', 'max_onehot', 'er_loss', 'ecr_loss',
           'min_pool_loss']


def _check4(x: Tensor, name: str) -> None:
    if x.dim() != 4:
        raise ValueError(f'{name} must be (B, C, h, w), got shape {tuple(x.shape)}')


def max_norm(maps: Tensor, *, eps: float = 1e-5) -> Tensor:
    """Per-map min-max normalisation of ReLU'd maps: ``relu(p - min - eps) / (max - min + eps)``.

    Args:
        maps: ``(B, C, h, w)``.
        eps: Stabiliser.

    Returns:
        Maps in ``[0, 1)``.
    """
    _check4(maps, 'maps')
    p = F.relu(maps)
    flat = p.flatten(2)
    hi = flat.amax(-1)[..., None, None]
    lo = flat.amin(-1)[..., None, None]
    return F.relu(p - lo - eps) / (hi - lo + eps)


def with_background(fg: Tensor) -> Tensor:
    """``(B, 1 + K, h, w)``: channel 0 = ``1 - max_c fg_c``, then the foreground maps."""
    _check4(fg, 'fg')
    return torch.cat([1 - fg.amax(1, keepdim=True), fg], dim=1)


@torch.no_grad()
def pcm_seed(cam_fg: Tensor, *, eps: float = 1e-5) -> Tensor:
    """The map PCM propagates: ``(B, 1 + K, h, w)``, no gradient.

    Args:
        cam_fg: ``(B, K, h, w)`` raw foreground CAMs.
        eps: Stabiliser.

    Returns:
        Background ``1 - max fg`` and, per pixel, only the largest normalised foreground score.
    """
    _check4(cam_fg, 'cam_fg')
    cam = F.relu(cam_fg.detach())
    peak = cam.flatten(2).amax(-1)[..., None, None] + eps
    norm = F.relu(cam - eps) / peak
    best = norm.amax(1, keepdim=True)
    fg = torch.where(norm < best, torch.zeros_like(norm), norm)
    return torch.cat([1 - best, fg], dim=1)


def pcm_propagate(cam: Tensor, feats: Tensor, *, eps: float = 1e-5) -> Tensor:
    """Pixel correlation module: propagate ``cam`` with the ReLU'd cosine affinity of ``feats``.

    Args:
        cam: ``(B, C, h, w)`` maps (resized to the feature grid by the caller).
        feats: ``(B, D, h, w)`` embedded features (PCM's last 1x1 convolution already applied).
        eps: Added to the feature norms and to the affinity column sums.

    Returns:
        ``(B, C, h, w)``: ``cam_rv[:, :, j] = sum_i cam[:, :, i] a_ij / (sum_i a_ij + eps)``.
    """
    _check4(cam, 'cam')
    _check4(feats, 'feats')
    if cam.shape[0] != feats.shape[0] or cam.shape[2:] != feats.shape[2:]:
        raise ValueError(f'cam {tuple(cam.shape)} and feats {tuple(feats.shape)} must share batch and grid')
    b, c, h, w = cam.shape
    f = feats.flatten(2)
    f = f / (f.norm(dim=1, keepdim=True) + eps)
    aff = F.relu(f.transpose(1, 2) @ f)                       # (B, N, N), a_ij
    aff = aff / (aff.sum(dim=1, keepdim=True) + eps)          # normalise over the sources i
    return (cam.flatten(2) @ aff).reshape(b, c, h, w)


def max_onehot(full: Tensor) -> Tensor:
    """Copy of ``(B, 1 + K, h, w)`` maps with every foreground score below the pixel's maximum
    foreground score set to 0 (the background channel 0 is kept)."""
    _check4(full, 'full')
    fg = full[:, 1:]
    best = fg.amax(1, keepdim=True)
    return torch.cat([full[:, :1], torch.where(fg != best, torch.zeros_like(fg), fg)], dim=1)


def er_loss(cam_o_fg: Tensor, cam_t_fg: Tensor) -> Tensor:
    """Equivariant regularisation: ``mean |cam_o - cam_t|`` of label-masked, normalised
    foreground maps already on the same grid."""
    if cam_o_fg.shape != cam_t_fg.shape:
        raise ValueError(f'ER needs maps of one shape, got {tuple(cam_o_fg.shape)} and {tuple(cam_t_fg.shape)}')
    return (cam_o_fg - cam_t_fg).abs().mean()


def ecr_loss(target_full: Tensor, pcm_full: Tensor, *, top_ratio: float = 0.2) -> Tensor:
    """Equivariant cross regularisation of one direction (SEAM's hard-pixel form).

    Args:
        target_full: ``(B, 1 + K, h, w)`` maps of the *other* view (detached by the caller), made
            one-hot over the foreground with :func:`max_onehot` here.
        pcm_full: ``(B, 1 + K, h, w)`` normalised, label-masked PCM maps of this view.
        top_ratio: Fraction of the ``(1 + K) h w`` differences per image that are averaged
            (the largest ones; 1.0 = plain mean).

    Returns:
        Scalar: mean over images of the mean of each image's top ``int(top_ratio * (1+K) h w)``
        absolute differences.
    """
    if target_full.shape != pcm_full.shape:
        raise ValueError(f'ECR needs maps of one shape, got {tuple(target_full.shape)} and {tuple(pcm_full.shape)}')
    if not 0 < top_ratio <= 1:
        raise ValueError(f'top_ratio must be in (0, 1], got {top_ratio}')
    diff = (max_onehot(target_full) - pcm_full).abs().flatten(1)
    k = max(1, int(diff.shape[1] * top_ratio))
    return diff.topk(k, dim=-1).values.mean()


def min_pool_loss(pcm_fg: Tensor) -> Tensor:
    """Mean of the ReLU'd smallest quarter of the per-pixel foreground maxima, per image.

    Args:
        pcm_fg: ``(B, K, h, w)`` label-masked raw PCM foreground maps.

    Returns:
        Scalar ``sum(relu(smallest h*w//4 of max_c pcm)) / (k * B)``.
    """
    _check4(pcm_fg, 'pcm_fg')
    b, _, h, w = pcm_fg.shape
    k = max(1, (h * w) // 4)
    low = pcm_fg.amax(1).flatten(1).topk(k, dim=-1, largest=False).values
    return F.relu(low).sum() / (k * b)
