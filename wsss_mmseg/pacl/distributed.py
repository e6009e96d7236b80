"""Cross-process negatives for caption-PACL (spec maskclip_pacl.md §3.2, §3.7): pure torch.

With several processes each one holds a local batch of ``B_l`` images and captions. CLIP-style
training contrasts every image with the captions of **all** processes: the captions (frozen
text tower, no gradient) are gathered, each process computes the compatibility rows of its own
images with all ``B_g`` captions (``B_l x B_g``, spec §3.7), and the rows are gathered into the
full ``B_g x B_g`` matrix. Every process then evaluates the same loss as a single process on
the concatenated batch.

Gradients: :func:`gather_rows` keeps the autograd path of the local rows; its backward sums
the incoming gradients of all processes (all-reduce) and returns the local slice. As every
process computes the same loss ``L``, the local rows receive ``world_size * dL/drow``, and
DDP's gradient averaging divides by ``world_size``: the parameters get exactly the gradient of
the single-process loss on the concatenated batch.

Without an initialised process group (or with one process) everything reduces to the local
computation.
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.distributed as dist

from .compat_fn import compatibility

__all__ = ['world_info', 'gather_no_grad', 'gather_rows', 'caption_compatibility']


def world_info() -> tuple:
    """``(world_size, rank)`` of the default process group, ``(1, 0)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _gather_padded(x: torch.Tensor) -> List[torch.Tensor]:
    """All-gather tensors whose first dimension may differ between processes."""
    world, _ = world_info()
    n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes_i = [int(s.item()) for s in sizes]
    top = max(sizes_i)
    padded = x.new_zeros((top,) + tuple(x.shape[1:]))
    padded[:x.shape[0]] = x
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return [p[:s] for p, s in zip(parts, sizes_i)]


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenation over processes (rank order) of ``x`` along dim 0, without gradient.

    Args:
        x: ``(n_r, ...)`` tensor of this process.

    Returns:
        ``(sum_r n_r, ...)``; ``x`` itself with one process.
    """
    world, _ = world_info()
    if world == 1:
        return x
    with torch.no_grad():
        return torch.cat(_gather_padded(x.detach()), dim=0)


class _GatherRows(torch.autograd.Function):
    """All-gather along dim 0 whose backward all-reduces the gradient and returns the local slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D401
        parts = _gather_padded(x.detach())
        _, rank = world_info()
        start = sum(p.shape[0] for p in parts[:rank])
        ctx.slice = (start, start + x.shape[0])
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D401
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start, stop = ctx.slice
        return grad[start:stop]


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenation over processes of ``x`` along dim 0, differentiable for the local part.

    Args:
        x: ``(n_r, ...)`` tensor of this process.

    Returns:
        ``(sum_r n_r, ...)`` (rank order); ``x`` itself with one process. See the module
        docstring for the gradient convention.
    """
    world, _ = world_info()
    if world == 1:
        return x
    return _GatherRows.apply(x)


def caption_compatibility(patches: torch.Tensor, texts: torch.Tensor, *, temperature: float = 1.0,
                          chunk_size: Optional[int] = 256) -> torch.Tensor:
    """The global ``B_g x B_g`` matrix ``phi[i, j] = phi_hat(x_i, y_j)`` over all processes.

    Args:
        patches: ``(B_l, T, D)`` patch embeddings of this process's images.
        texts: ``(B_l, D)`` caption embeddings of this process (same order as the images).
        temperature: Patch-softmax temperature tau_a.
        chunk_size: Texts per chunk of :func:`~wsss_mmseg.pacl.compat_fn.compatibility`.

    Returns:
        ``(B_g, B_g)`` compatibilities (rows images, columns captions, positives on the
        diagonal); gradients flow into the local rows.
    """
    if patches.shape[0] != texts.shape[0]:
        raise ValueError(f'caption PACL needs one caption per image, got {patches.shape[0]} images and '
                         f'{texts.shape[0]} captions')
    all_texts = gather_no_grad(texts)
    rows = compatibility(patches, all_texts, temperature=temperature, chunk_size=chunk_size)
    return gather_rows(rows)
