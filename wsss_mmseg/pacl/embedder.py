"""PACL vision embedder e_v (spec maskclip_pacl.md §3.2): a per-patch residual MLP.

Pure torch; the registered :class:`wsss_mmseg.models.pacl.PACLHead` wraps it.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

__all__ = ['VisionEmbedder']


class VisionEmbedder(nn.Module):
    """Residual MLP applied to every patch token: ``skip(x) + main(x)``.

    Paper form (default ``depth=2``): skip = ``Linear(D_v, D)``; main = ``Linear(D_v, H)``,
    ReLU, ``Linear(H, D)`` with ``H = D``. ``depth`` is the number of linear layers of the
    main branch (ReLU between them); ``hidden_dim`` their width.

    ``init='clip_proj'`` starts as CLIP's own dense embedding: the skip branch is set to
    ``proj`` (given to :meth:`init_from_projection`) and the last main layer to zero, so the
    untrained embedder equals ``ln_post(x) @ proj`` when the input is ``ln_post`` tokens.

    Args:
        in_dim: Token width ``D_v``.
        out_dim: Embedding width ``D`` (the text embedding width).
        hidden_dim: Width of the hidden main-branch layers (default ``out_dim``).
        depth: Linear layers in the main branch (>= 1).
    """

    def __init__(self, in_dim: int, out_dim: int, *, hidden_dim: Optional[int] = None, depth: int = 2) -> None:
        super().__init__()
        if in_dim < 1 or out_dim < 1:
            raise ValueError(f'VisionEmbedder dims must be positive, got in_dim={in_dim}, out_dim={out_dim}')
        if depth < 1:
            raise ValueError(f'VisionEmbedder depth must be >= 1, got {depth}')
        hidden = int(hidden_dim or out_dim)
        self.in_dim, self.out_dim, self.depth = int(in_dim), int(out_dim), int(depth)
        self.skip = nn.Linear(in_dim, out_dim)
        layers = []
        width = in_dim
        for i in range(depth):
            last = i == depth - 1
            layers.append(nn.Linear(width, out_dim if last else hidden))
            if not last:
                layers.append(nn.ReLU())
            width = hidden
        self.main = nn.Sequential(*layers)

    @torch.no_grad()
    def init_from_projection(self, proj: torch.Tensor) -> None:
        """Skip branch := ``x @ proj`` (no bias), last main layer := 0.

        Args:
            proj: ``(D_v, D)`` projection (CLIP's ``visual.proj``).
        """
        if tuple(proj.shape) != (self.in_dim, self.out_dim):
            raise ValueError(f'projection shape {tuple(proj.shape)} does not match the embedder '
                             f'({self.in_dim}, {self.out_dim})')
        self.skip.weight.copy_(proj.t().to(self.skip.weight.dtype))
        self.skip.bias.zero_()
        last = self.main[-1]
        last.weight.zero_()
        last.bias.zero_()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(..., D_v) -> (..., D)``."""
        if tokens.shape[-1] != self.in_dim:
            raise ValueError(f'VisionEmbedder expects tokens of width {self.in_dim}, got {tokens.shape[-1]}')
        return self.skip(tokens) + self.main(tokens)
