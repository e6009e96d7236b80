"""Dense access to open_clip ViTs: any input size, per-block intermediates, no patching.

open_clip's ``VisionTransformer`` only runs at its native size and hides attention maps
and q/k/v. :class:`CLIPViT` wraps one (sharing its parameters, changing nothing in it)
and re-implements the forward from the modules' own weights:

* :func:`interpolate_pos_embed` resizes the positional table over the patch grid (CLS
  row kept) so that any input whose sides are multiples of the patch size works;
* :func:`block_forward` is open_clip's ``ResidualAttentionBlock`` forward with optional
  head-averaged attention weights, q/k/v and a substitute for the ``ln_1`` output (for
  gradients w.r.t. the last block's input, as CLIP-ES needs);
* :meth:`CLIPViT.forward_features` collects block outputs, attention maps, the last
  block's input/ln_1/q/k/v, and the per-token projected features.

Tensors are ``(B, T, D)`` with ``T = 1 + h * w`` (CLS first, then the patch grid in
row-major order).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import nn

__all__ = [
    'POS_INTERP_MODES',
    'interpolate_pos_embed',
    'qkv_projection',
    'multihead_attention',
    'block_forward',
    'CLIPViT',
]

POS_INTERP_MODES = ('bicubic', 'bilinear')


def interpolate_pos_embed(pos_embed: torch.Tensor, *, src_grid: Tuple[int, int], dst_grid: Tuple[int, int],
                          mode: str = 'bicubic', round_fp16: bool = False) -> torch.Tensor:
    """Resize a ViT positional table over its patch grid, keeping the CLS row.

    Interpolation runs in fp32 with ``align_corners=False`` and no antialiasing; at
    ``dst_grid == src_grid`` the input tensor itself is returned (identity), unless
    ``round_fp16`` asks for the rounding.

    Args:
        pos_embed: ``(1 + h0 * w0, D)`` table, CLS row first.
        src_grid: ``(h0, w0)`` grid of the table.
        dst_grid: ``(h, w)`` target grid.
        mode: ``'bicubic'`` or ``'bilinear'``.
        round_fp16: Round the whole result to fp16 and back (the official CLIP-ES code
            stores the resized table as fp16 on every call, also at the native size).

    Returns:
        ``(1 + h * w, D)`` table in the dtype of ``pos_embed``.

    Raises:
        ValueError: Bad ``mode`` or a table that does not match ``src_grid``.
    """
    if mode not in POS_INTERP_MODES:
        raise ValueError(f'pos_interp mode must be one of {POS_INTERP_MODES}, got {mode!r}.')
    h0, w0 = src_grid
    h, w = dst_grid
    if pos_embed.ndim != 2 or pos_embed.shape[0] != 1 + h0 * w0:
        raise ValueError(
            f'positional table of shape {tuple(pos_embed.shape)} does not match 1 + {h0}x{w0} tokens.')
    if (h, w) == (h0, w0):
        out = pos_embed
    else:
        dim = pos_embed.shape[1]
        grid = pos_embed[1:].float().reshape(1, h0, w0, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode=mode, align_corners=False)
        grid = grid.permute(0, 2, 3, 1).reshape(h * w, dim).to(pos_embed.dtype)
        out = torch.cat([pos_embed[:1], grid], dim=0)
    if round_fp16:
        out = out.to(torch.float16).to(pos_embed.dtype)
    return out


def qkv_projection(attn: nn.MultiheadAttention, y: torch.Tensor
                   ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Attention input projection (``in_proj`` incl. bias), before the head split.

    Args:
        attn: The block's ``nn.MultiheadAttention`` (packed ``in_proj_weight``).
        y: ``(B, T, D)`` attention input (the ``ln_1`` output).

    Returns:
        ``q, k, v``, each ``(B, T, D)``.
    """
    return F.linear(y, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)


def multihead_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, num_heads: int,
                        need_weights: bool = False, key_padding_mask: Optional[torch.Tensor] = None
                        ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Scaled dot-product attention over heads, before the output projection.

    With ``need_weights`` the attention is computed explicitly like
    ``nn.MultiheadAttention(need_weights=True)`` (q scaled by ``head_dim ** -0.5`` before
    ``q k^T``, row softmax, weights averaged over heads); otherwise
    ``F.scaled_dot_product_attention`` is used (same result up to float rounding).

    Args:
        q: ``(B, Tq, D)`` queries.
        k: ``(B, Tk, D)`` keys.
        v: ``(B, Tk, D)`` values.
        num_heads: Number of heads (``D % num_heads == 0``).
        need_weights: Also return the head-averaged attention weights.
        key_padding_mask: Optional ``(B, Tk)`` bool, True for padded keys: they get zero
            attention weight, so the rows of the valid tokens equal those of the unpadded
            sequence (batches of images with different token counts). None: no masking
            (the unpadded code path, unchanged).

    Returns:
        ``(out (B, Tq, D), weights (B, Tq, Tk) or None)``; weight rows (queries) sum to 1.
    """
    bsz, tq, dim = q.shape
    tk = k.shape[1]
    head_dim = dim // num_heads
    qh = q.reshape(bsz, tq, num_heads, head_dim).transpose(1, 2)
    kh = k.reshape(bsz, tk, num_heads, head_dim).transpose(1, 2)
    vh = v.reshape(bsz, tk, num_heads, head_dim).transpose(1, 2)
    weights = None
    if key_padding_mask is not None and key_padding_mask.shape != (bsz, tk):
        raise ValueError(f'key_padding_mask must be ({bsz}, {tk}), got {tuple(key_padding_mask.shape)}.')
    if need_weights:
        scores = torch.matmul(qh * math.sqrt(1.0 / head_dim), kh.transpose(-2, -1))
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float('-inf'))
        attn = scores.softmax(dim=-1)
        out = torch.matmul(attn, vh)
        weights = attn.mean(dim=1)
    elif key_padding_mask is not None:
        out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=~key_padding_mask[:, None, None, :])
    else:
        out = F.scaled_dot_product_attention(qh, kh, vh)
    return out.transpose(1, 2).reshape(bsz, tq, dim), weights


def _check_block(block: nn.Module) -> None:
    if not isinstance(block, ResidualAttentionBlock):
        raise ValueError(
            f'expected an open_clip ResidualAttentionBlock (OpenAI architecture), got {type(block).__name__}; '
            'custom blocks (qk-norm, scaled-cosine attention, ...) are not supported.')
    attn = block.attn
    if hasattr(block, 'ln_1_kv'):
        raise ValueError('cross-attention blocks are not supported.')
    if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim \
            or attn.bias_k is not None or attn.add_zero_attn:
        raise ValueError('the block attention must be a plain packed-projection nn.MultiheadAttention.')


def block_forward(block: nn.Module, x: torch.Tensor, *, ln1_out: Optional[torch.Tensor] = None,
                  need_attn: bool = False, need_qkv: bool = False,
                  key_padding_mask: Optional[torch.Tensor] = None
                  ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """open_clip ``ResidualAttentionBlock`` forward from the block's own modules.

    ``x + ls_1(out_proj(attn(ln_1(x)))``, then ``+ ls_2(mlp(ln_2(.)))``, in ``(B, T, D)``
    layout whatever the block's ``batch_first`` flag.

    Args:
        block: The block (``ln_1``, ``attn``, ``ls_1``, ``ln_2``, ``mlp``, ``ls_2``).
        x: ``(B, T, D)`` block input.
        ln1_out: Replacement for ``ln_1(x)`` as the attention input (the residual still
            adds ``x``); pass a tensor that requires grad to differentiate w.r.t. it.
        need_attn: Return head-averaged attention weights as ``extras['attn']`` (B, T, T).
        need_qkv: Return ``extras['q'|'k'|'v']`` (B, T, D), after ``in_proj`` incl. bias.

    Returns:
        ``(x_out (B, T, D), extras)``; ``extras['ln1']`` is always the attention input used.

    Raises:
        ValueError: Unsupported block type or a ``ln1_out`` of the wrong shape.
    """
    _check_block(block)
    if ln1_out is None:
        y = block.ln_1(x)
    else:
        if ln1_out.shape != x.shape:
            raise ValueError(f'ln1_out shape {tuple(ln1_out.shape)} differs from x shape {tuple(x.shape)}.')
        y = ln1_out
    q, k, v = qkv_projection(block.attn, y)
    out, weights = multihead_attention(q, k, v, num_heads=block.attn.num_heads, need_weights=need_attn,
                                       key_padding_mask=key_padding_mask)
    out = block.attn.out_proj(out)
    x = x + block.ls_1(out)
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    extras: Dict[str, torch.Tensor] = {'ln1': y}
    if weights is not None:
        extras['attn'] = weights
    if need_qkv:
        extras.update(q=q, k=k, v=v)
    return x, extras


class CLIPViT(nn.Module):
    """Dense, any-size view of an open_clip ``VisionTransformer`` (OpenAI architecture).

    Shares the wrapped tower's parameters and never modifies it. Inputs must have sides
    that are multiples of the patch size; the positional table is interpolated to the
    patch grid (cached per grid/dtype/device; the native grid uses the table unchanged).
    Images are cast to the patch-embedding dtype first, as OpenAI's CLIP does.

    Args:
        visual: ``model.visual`` of an open_clip CLIP (ViT, no attentional pooler).
        pos_interp: ``'bicubic'`` (MaskCLIP/open_clip) or ``'bilinear'`` (CLIP-ES).
        pos_round_fp16: Round the (interpolated) table to fp16 and back (CLIP-ES quirk).
    """

    def __init__(self, visual: VisionTransformer, *, pos_interp: str = 'bicubic',
                 pos_round_fp16: bool = False) -> None:
        super().__init__()
        if not isinstance(visual, VisionTransformer):
            raise ValueError(f'CLIPViT wraps an open_clip VisionTransformer, got {type(visual).__name__}.')
        if getattr(visual, 'attn_pool', None) is not None:
            raise ValueError('VisionTransformers with an attentional pooler are not supported.')
        patch = tuple(visual.patch_size) if isinstance(visual.patch_size, (tuple, list)) else (visual.patch_size,) * 2
        if patch[0] != patch[1]:
            raise ValueError(f'only square patches are supported, got {patch}.')
        for block in visual.transformer.resblocks:
            _check_block(block)
        if pos_interp not in POS_INTERP_MODES:
            raise ValueError(f'pos_interp must be one of {POS_INTERP_MODES}, got {pos_interp!r}.')
        self.visual = visual
        self.pos_interp = pos_interp
        self.pos_round_fp16 = bool(pos_round_fp16)
        self._patch = int(patch[0])
        self._pos_cache: Dict[Tuple, torch.Tensor] = {}

    # ----------------------------------------------------------------- properties
    @property
    def patch_size(self) -> int:
        """Patch side in pixels."""
        return self._patch

    @property
    def width(self) -> int:
        """Token width D."""
        return int(self.visual.conv1.out_channels)

    @property
    def num_layers(self) -> int:
        """Number of transformer blocks L."""
        return len(self.visual.transformer.resblocks)

    @property
    def num_heads(self) -> int:
        """Attention heads per block."""
        return int(self.visual.transformer.resblocks[0].attn.num_heads)

    @property
    def output_dim(self) -> int:
        """Embedding dimension E after ``proj`` (D when the tower has no projection)."""
        proj = self.visual.proj
        return int(proj.shape[1]) if proj is not None else self.width

    @property
    def native_grid(self) -> Tuple[int, int]:
        """Patch grid ``(h0, w0)`` of the pretrained positional table."""
        grid = self.visual.grid_size
        return int(grid[0]), int(grid[1])

    @property
    def blocks(self) -> nn.ModuleList:
        """The wrapped transformer blocks."""
        return self.visual.transformer.resblocks

    # ----------------------------------------------------------------- pieces
    def grid_size(self, height: int, width: int) -> Tuple[int, int]:
        """Patch grid for an input size.

        Args:
            height: Input height in pixels.
            width: Input width in pixels.

        Returns:
            ``(height // patch, width // patch)``.

        Raises:
            ValueError: A side is not a positive multiple of the patch size.
        """
        p = self._patch
        if height <= 0 or width <= 0 or height % p or width % p:
            raise ValueError(
                f'input size (H, W)=({height}, {width}) is not a multiple of the patch size {p}; '
                'resize or pad the image to multiples of the patch size.')
        return height // p, width // p

    def pos_embed(self, grid: Tuple[int, int], *, dtype: Optional[torch.dtype] = None,
                  device: Optional[torch.device] = None) -> torch.Tensor:
        """Positional table for a patch grid, ``(1 + h * w, D)``.

        Cached per (grid, dtype, device) unless gradients to the table are being tracked.

        Args:
            grid: ``(h, w)``.
            dtype: Result dtype (default: the table's).
            device: Result device (default: the table's).

        Returns:
            The (interpolated) table.
        """
        table = self.visual.positional_embedding
        dtype = dtype or table.dtype
        device = torch.device(device) if device is not None else table.device
        tracked = table.requires_grad and torch.is_grad_enabled()
        key = (tuple(grid), dtype, device, table.data_ptr(), table._version)
        if not tracked and key in self._pos_cache:
            return self._pos_cache[key]
        with torch.set_grad_enabled(tracked):
            out = interpolate_pos_embed(table, src_grid=self.native_grid, dst_grid=tuple(grid),
                                        mode=self.pos_interp, round_fp16=self.pos_round_fp16)
            out = out.to(device=device, dtype=dtype)
        if not tracked:
            if len(self._pos_cache) > 32:
                self._pos_cache.clear()
            self._pos_cache[key] = out
        return out

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch embedding + CLS + positions + ``ln_pre``.

        Args:
            images: ``(B, 3, H, W)``, sides multiples of the patch size.

        Returns:
            ``(B, 1 + h * w, D)``.
        """
        if images.ndim != 4:
            raise ValueError(f'images must be (B, C, H, W), got shape {tuple(images.shape)}.')
        grid = self.grid_size(images.shape[-2], images.shape[-1])
        visual = self.visual
        x = visual.conv1(images.to(visual.conv1.weight.dtype))
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        x = x + self.pos_embed(grid, device=x.device).to(x.dtype)
        return visual.ln_pre(x)

    def head(self, tokens: torch.Tensor) -> torch.Tensor:
        """``ln_post`` then ``proj`` on every token.

        Args:
            tokens: ``(..., D)``.

        Returns:
            ``(..., E)``.
        """
        x = self.visual.ln_post(tokens)
        proj = self.visual.proj
        return x @ proj if proj is not None else x

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """open_clip's pooling of the final tokens (``pool_type``, ``final_ln_after_pool``) + ``proj``.

        Args:
            tokens: ``(B, 1 + N, D)`` output of the last block.

        Returns:
            ``(B, E)`` image embedding (not normalised).
        """
        visual = self.visual

        def global_pool(x: torch.Tensor) -> torch.Tensor:
            if visual.pool_type == 'avg':
                return x[:, 1:].mean(dim=1)
            if visual.pool_type == 'tok':
                return x[:, 0]
            return x

        if visual.final_ln_after_pool:
            pooled = visual.ln_post(global_pool(tokens))
        else:
            pooled = global_pool(visual.ln_post(tokens))
        return pooled @ visual.proj if visual.proj is not None else pooled

    # ----------------------------------------------------------------- forwards
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled image embedding, as ``open_clip`` ``model.encode_image`` (any valid size).

        Args:
            images: ``(B, 3, H, W)``.

        Returns:
            ``(B, E)`` (not normalised).
        """
        x = self.embed(images)
        for block in self.blocks:
            x, _ = block_forward(block, x)
        return self.pool(x)

    def forward_features(self, images: torch.Tensor, *, out_layers: Sequence[int] = (), attn_last: int = 0,
                         qkv_last: bool = False, ln1_last: bool = False,
                         stop_before_last: bool = False) -> Dict[str, object]:
        """Run the tower and collect intermediates.

        Args:
            images: ``(B, 3, H, W)``, sides multiples of the patch size.
            out_layers: Block indices (0-based, negative from the end) whose outputs go to
                ``'tokens'``, keyed by the index as given.
            attn_last: Return head-averaged attention maps of the last ``attn_last`` blocks
                that are run (with ``stop_before_last`` the last block is not run, so these
                are the blocks before it).
            qkv_last: Return ``'q','k','v'`` of the last block (computed from its ``ln_1``
                even when ``stop_before_last``).
            ln1_last: Return ``'ln1'``, the last block's ``ln_1`` output.
            stop_before_last: Do not run the last block (no ``'last'``/``'dense'``); the
                caller runs it, e.g. with autograd, via :func:`block_forward` on
                ``'pre_last'``.

        Returns:
            ``{'grid': (h, w), 'tokens': {idx: (B, 1+N, D)}, 'attn': [(B, 1+N, 1+N), ...],
            'pre_last': (B, 1+N, D)}`` plus ``'ln1'``, ``'q'``, ``'k'``, ``'v'`` (B, 1+N, D)
            when requested, and without ``stop_before_last`` ``'last'`` (B, 1+N, D) and
            ``'dense'`` = ``head(last)`` (B, 1+N, E).

        Raises:
            ValueError: Bad input size, layer index or ``attn_last``.
        """
        num_layers = self.num_layers
        n_run = num_layers - 1 if stop_before_last else num_layers
        wanted: Dict[int, List[int]] = {}
        for requested in out_layers:
            idx = int(requested) + num_layers if int(requested) < 0 else int(requested)
            if not 0 <= idx < n_run:
                extra = ' (the last block is not run with stop_before_last=True)' if stop_before_last else ''
                raise ValueError(f'out_layers index {requested} is out of range for {num_layers} blocks{extra}.')
            wanted.setdefault(idx, []).append(int(requested))
        if not 0 <= int(attn_last) <= n_run:
            raise ValueError(f'attn_last={attn_last} must be in [0, {n_run}] (blocks run).')

        x = self.embed(images)
        grid = self.grid_size(images.shape[-2], images.shape[-1])
        tokens: Dict[int, torch.Tensor] = {}
        attn: List[torch.Tensor] = []
        out: Dict[str, object] = {'grid': grid}
        last_extras: Dict[str, torch.Tensor] = {}
        for i in range(n_run):
            if i == num_layers - 1:
                out['pre_last'] = x
            is_last = i == num_layers - 1
            x, extras = block_forward(self.blocks[i], x, need_attn=i >= n_run - attn_last,
                                      need_qkv=is_last and qkv_last)
            if 'attn' in extras:
                attn.append(extras['attn'])
            for requested in wanted.get(i, ()):
                tokens[requested] = x
            if is_last:
                last_extras = extras
        out['tokens'] = tokens
        out['attn'] = attn
        if stop_before_last:
            out['pre_last'] = x
            if ln1_last or qkv_last:
                last_extras = {'ln1': self.blocks[-1].ln_1(x)}
                if qkv_last:
                    q, k, v = qkv_projection(self.blocks[-1].attn, last_extras['ln1'])
                    last_extras.update(q=q, k=k, v=v)
        else:
            out['last'] = x
            out['dense'] = self.head(x)
        if ln1_last:
            out['ln1'] = last_extras['ln1']
        if qkv_last:
            out.update(q=last_extras['q'], k=last_extras['k'], v=last_extras['v'])
        return out

    def forward(self, images: torch.Tensor, **kwargs) -> Dict[str, object]:
        """Alias of :meth:`forward_features`."""
        return self.forward_features(images, **kwargs)
