"""MaskCLIP dense labels and the unified last-block surgery (spec ``maskclip_pacl.md`` §1, §5.6).

Training-free dense features from a frozen CLIP image tower:

* ViT (:func:`vit_dense_features`): blocks ``1..L-1`` run unchanged; the **last** block is
  re-run with its attention replaced according to ``mode`` and with the residual / FFN kept or
  dropped (:data:`SURGERY_DEFAULTS`):

  ========== ======================================= ======== =====
  mode       attention applied to ``v`` (per head)   residual FFN
  ========== ======================================= ======== =====
  vanilla    ``softmax(q k^T / sqrt(d))``            keep     keep
  maskclip   identity (token attends to itself)      keep     keep
  sclip      ``softmax(q q^T/sqrt d) + softmax(k k^T/sqrt d)`` keep keep
  clearclip  ``softmax(q q^T / sqrt(d))``            drop     drop
  naclip     ``softmax(k k^T / sqrt(d) + G_sigma)``  drop     drop
  ========== ======================================= ======== =====

  then ``out_proj``, then per token ``proj(ln_post(.))``; the CLS token is dropped. MaskCLIP's
  per-token output is therefore ``proj(ln_post(x + out_proj(v) + MLP(ln_2(x + out_proj(v)))))``.
  The last block's keys are always returned (for key smoothing).
* ResNet (:func:`resnet_dense_features`): ``c_proj(v_proj(F))`` as 1x1 convolutions on the
  attention-pool input ``F`` (no positional embedding, as MaskCLIP), keys ``k_proj(F)``.

Logits are raw cosine similarities between the L2-normalised dense features and unit text
embeddings (:func:`cosine_logits`, spec §1.4). Pure torch + open_clip (no mmseg/mmengine).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..clip.resnet import CLIPResNet, linear_as_conv1x1
from ..clip.vit import CLIPViT, block_forward, interpolate_pos_embed, multihead_attention, qkv_projection

__all__ = [
    'SURGERY_MODES',
    'SURGERY_DEFAULTS',
    'resolve_surgery',
    'gaussian_neighbourhood_bias',
    'surgery_attention',
    'last_block_surgery',
    'vit_dense_features',
    'resnet_dense_features',
    'dense_features',
    'cosine_logits',
    'merge_background',
]

#: Last-block surgery modes (spec §5.6; ``proxy`` needs a second model and is not provided).
SURGERY_MODES: Tuple[str, ...] = ('vanilla', 'maskclip', 'sclip', 'clearclip', 'naclip')

#: Official ``(residual, ffn)`` defaults per mode (True = keep).
SURGERY_DEFAULTS: Dict[str, Tuple[bool, bool]] = {
    'vanilla': (True, True),
    'maskclip': (True, True),
    'sclip': (True, True),
    'clearclip': (False, False),
    'naclip': (False, False),
}


def resolve_surgery(mode: str, *, residual: Optional[bool] = None,
                    ffn: Optional[bool] = None) -> Tuple[bool, bool]:
    """``(residual, ffn)`` keep flags of a mode, with optional overrides.

    Args:
        mode: One of :data:`SURGERY_MODES`.
        residual: Keep the attention residual (``None`` = the mode's default).
        ffn: Keep the FFN branch (``None`` = the mode's default).

    Returns:
        ``(keep_residual, keep_ffn)``.

    Raises:
        ValueError: Unknown mode.
    """
    if mode not in SURGERY_DEFAULTS:
        raise ValueError(f'unknown last-block surgery mode {mode!r}; choose one of {SURGERY_MODES}.')
    d_res, d_ffn = SURGERY_DEFAULTS[mode]
    return (d_res if residual is None else bool(residual)), (d_ffn if ffn is None else bool(ffn))


def gaussian_neighbourhood_bias(grid: Tuple[int, int], *, sigma: float = 5.0, with_cls: bool = True,
                                dtype: torch.dtype = torch.float32,
                                device: Optional[torch.device] = None) -> Tensor:
    """NACLIP's Gaussian neighbourhood bias on the patch grid (unnormalised, peak 1).

    ``w_ij = exp(-((r_i - r_j)^2 + (c_i - c_j)^2) / (2 sigma^2))`` for patches ``i, j`` at
    grid positions ``(r, c)`` (row-major order); the CLS row and column are 0.

    Args:
        grid: ``(h, w)`` patch grid.
        sigma: Standard deviation in patches (5 in NACLIP).
        with_cls: Prepend the (zero) CLS row/column.
        dtype: Result dtype.
        device: Result device.

    Returns:
        ``(T, T)`` with ``T = h * w`` (+1 with CLS).

    Raises:
        ValueError: ``sigma <= 0`` or an empty grid.
    """
    h, w = int(grid[0]), int(grid[1])
    if h < 1 or w < 1:
        raise ValueError(f'grid must be positive, got {grid}.')
    if not sigma > 0:
        raise ValueError(f'sigma must be > 0, got {sigma}.')
    rows = torch.arange(h, dtype=torch.float64, device=device).repeat_interleave(w)
    cols = torch.arange(w, dtype=torch.float64, device=device).repeat(h)
    d2 = (rows[:, None] - rows[None, :]) ** 2 + (cols[:, None] - cols[None, :]) ** 2
    bias = torch.exp(-d2 / (2.0 * float(sigma) ** 2))
    if with_cls:
        bias = F.pad(bias, (1, 0, 1, 0))
    return bias.to(dtype)


def _heads(x: Tensor, num_heads: int) -> Tensor:
    b, t, d = x.shape
    return x.reshape(b, t, num_heads, d // num_heads).transpose(1, 2)


def surgery_attention(q: Tensor, k: Tensor, v: Tensor, *, mode: str, num_heads: int,
                      grid: Optional[Tuple[int, int]] = None, sigma: float = 5.0) -> Tensor:
    """Per-head attention of a surgery mode applied to ``v``, before ``out_proj``.

    Args:
        q: ``(B, T, D)`` queries (``in_proj`` output incl. bias, heads not split).
        k: ``(B, T, D)`` keys.
        v: ``(B, T, D)`` values.
        mode: One of :data:`SURGERY_MODES`.
        num_heads: Number of heads (``D % num_heads == 0``).
        grid: ``(h, w)`` patch grid (``T = 1 + h * w``); needed for ``'naclip'``.
        sigma: Gaussian neighbourhood std in patches (``'naclip'``).

    Returns:
        ``(B, T, D)`` attention output, heads concatenated.

    Raises:
        ValueError: Unknown mode, or ``'naclip'`` without a grid matching ``T``.
    """
    resolve_surgery(mode)
    if mode == 'maskclip':
        return v
    if mode == 'vanilla':
        return multihead_attention(q, k, v, num_heads=num_heads)[0]
    b, t, d = q.shape
    scale = (d // num_heads) ** -0.5
    qh, kh, vh = _heads(q, num_heads), _heads(k, num_heads), _heads(v, num_heads)
    if mode == 'sclip':
        attn = (qh @ qh.transpose(-2, -1) * scale).softmax(-1) + (kh @ kh.transpose(-2, -1) * scale).softmax(-1)
    elif mode == 'clearclip':
        attn = (qh @ qh.transpose(-2, -1) * scale).softmax(-1)
    else:  # naclip
        if grid is None or 1 + int(grid[0]) * int(grid[1]) != t:
            raise ValueError(f"mode 'naclip' needs the patch grid of the {t} tokens (1 + h * w), got {grid}.")
        bias = gaussian_neighbourhood_bias(grid, sigma=sigma, dtype=qh.dtype, device=qh.device)
        attn = (kh @ kh.transpose(-2, -1) * scale + bias).softmax(-1)
    out = attn @ vh
    return out.transpose(1, 2).reshape(b, t, d)


def last_block_surgery(block: nn.Module, x: Tensor, *, mode: str = 'maskclip', residual: Optional[bool] = None,
                       ffn: Optional[bool] = None, grid: Optional[Tuple[int, int]] = None,
                       sigma: float = 5.0) -> Tuple[Tensor, Dict[str, Tensor]]:
    """Run an open_clip ``ResidualAttentionBlock`` with its attention surgically replaced.

    ``a = ls_1(out_proj(attention_mode(q, k, v)))``; ``y = x + a`` (residual kept) or ``y = a``;
    then ``y = y + ls_2(mlp(ln_2(y)))`` when the FFN is kept.

    Args:
        block: The (last) block.
        x: ``(B, T, D)`` block input.
        mode: One of :data:`SURGERY_MODES`.
        residual: Keep the residual (``None`` = mode default, :data:`SURGERY_DEFAULTS`).
        ffn: Keep the FFN (``None`` = mode default).
        grid: Patch grid (needed by ``'naclip'``).
        sigma: NACLIP Gaussian std in patches.

    Returns:
        ``(y (B, T, D), extras)`` with ``extras['q'|'k'|'v']`` (``in_proj`` outputs incl. bias,
        ``(B, T, D)``) and ``extras['ln1']``.
    """
    keep_res, keep_ffn = resolve_surgery(mode, residual=residual, ffn=ffn)
    if mode == 'vanilla' and keep_res and keep_ffn:
        y, extras = block_forward(block, x, need_qkv=True)
        return y, extras
    ln1 = block.ln_1(x)
    q, k, v = qkv_projection(block.attn, ln1)
    out = surgery_attention(q, k, v, mode=mode, num_heads=block.attn.num_heads, grid=grid, sigma=sigma)
    a = block.ls_1(block.attn.out_proj(out))
    y = x + a if keep_res else a
    if keep_ffn:
        y = y + block.ls_2(block.mlp(block.ln_2(y)))
    return y, {'ln1': ln1, 'q': q, 'k': k, 'v': v}


def _patch_map(tokens: Tensor, grid: Tuple[int, int]) -> Tensor:
    """``(B, 1 + h*w, C)`` -> ``(B, C, h, w)`` (CLS dropped, row-major grid)."""
    b, _, c = tokens.shape
    h, w = grid
    return tokens[:, 1:, :].transpose(1, 2).reshape(b, c, h, w).contiguous()


def vit_dense_features(vit: CLIPViT, images: Tensor, *, mode: str = 'maskclip', residual: Optional[bool] = None,
                       ffn: Optional[bool] = None, sigma: float = 5.0, legacy_maskclip_keys: bool = False,
                       attn_last: int = 0) -> Dict[str, object]:
    """Dense per-patch embeddings of a CLIP ViT with last-block surgery (spec §1.1, §5.6).

    Args:
        vit: :class:`~wsss_mmseg.clip.vit.CLIPViT` wrapper.
        images: ``(B, 3, H, W)`` normalised images, sides multiples of the patch size.
        mode: Surgery mode (:data:`SURGERY_MODES`), ``'maskclip'`` by default.
        residual: Keep the last block's residual (``None`` = mode default).
        ffn: Keep the last block's FFN (``None`` = mode default).
        sigma: NACLIP Gaussian std in patches.
        legacy_maskclip_keys: Return ``out_proj(k)`` as keys, as the official MaskCLIP code
            (§1.1 step 3); default: the raw last-block keys ``k`` (``in_proj`` output).
        attn_last: Also return the head-averaged (unmodified, q-k) attention maps of the last
            ``attn_last`` blocks, for CAA.

    Returns:
        ``{'dense': (B, E, h, w), 'keys': (B, D, h, w), 'grid': (h, w)}`` and, with
        ``attn_last``, ``'attn'``: list of ``(B, 1 + N, 1 + N)`` maps (oldest first).

    Raises:
        ValueError: Bad mode, input size or ``attn_last``.
    """
    resolve_surgery(mode, residual=residual, ffn=ffn)
    n_layers = vit.num_layers
    if not 0 <= int(attn_last) <= n_layers:
        raise ValueError(f'attn_last={attn_last} must be in [0, {n_layers}].')
    n_before = max(int(attn_last) - 1, 0)
    feats = vit.forward_features(images, attn_last=n_before, stop_before_last=True)
    grid = tuple(int(g) for g in feats['grid'])
    last = vit.blocks[-1]
    y, extras = last_block_surgery(last, feats['pre_last'], mode=mode, residual=residual, ffn=ffn,
                                   grid=grid, sigma=sigma)
    keys = extras['k']
    if legacy_maskclip_keys:
        keys = last.attn.out_proj(keys)
    out: Dict[str, object] = {'dense': _patch_map(vit.head(y), grid), 'keys': _patch_map(keys, grid), 'grid': grid}
    if attn_last:
        attn: List[Tensor] = list(feats['attn'])
        _, w_last = multihead_attention(extras['q'], extras['k'], extras['v'], num_heads=last.attn.num_heads,
                                        need_weights=True)
        attn.append(w_last)
        out['attn'] = attn[-int(attn_last):]
    return out


def resnet_dense_features(resnet: CLIPResNet, images: Tensor, *, pos_embed: bool = False) -> Dict[str, object]:
    """MaskCLIP dense features of a CLIP ResNet: ``c_proj(v_proj(F))``, keys ``k_proj(F)`` (spec §1.2).

    Args:
        resnet: :class:`~wsss_mmseg.clip.resnet.CLIPResNet` wrapper.
        images: ``(B, 3, H, W)`` normalised images, sides multiples of 32.
        pos_embed: Add the attention pool's positional embedding (patch part, bicubically
            interpolated to the grid) to ``F`` before the projections, as CLIP's attention pool
            does; MaskCLIP does not (default ``False``). ResNet-only option.

    Returns:
        ``{'dense': (B, E, h, w), 'keys': (B, C, h, w), 'grid': (h, w)}``.
    """
    pool = resnet.visual.attnpool
    feat = resnet.features(images)
    grid = (int(feat.shape[-2]), int(feat.shape[-1]))
    if pos_embed:
        table = pool.positional_embedding
        src = resnet.native_grid
        pe = interpolate_pos_embed(table, src_grid=src, dst_grid=grid, mode='bicubic')[1:]
        feat = feat + pe.t().reshape(1, -1, grid[0], grid[1]).to(feat.dtype)
    v = linear_as_conv1x1(feat, pool.v_proj)
    k = linear_as_conv1x1(feat, pool.k_proj)
    return {'dense': linear_as_conv1x1(v, pool.c_proj), 'keys': k, 'grid': grid}


_VIT_ONLY = ('mode', 'residual', 'ffn', 'sigma', 'legacy_maskclip_keys', 'attn_last')
_RN_ONLY = ('pos_embed',)


def dense_features(tower: Union[CLIPViT, CLIPResNet], images: Tensor, **options) -> Dict[str, object]:
    """Dispatch to :func:`vit_dense_features` or :func:`resnet_dense_features`.

    ViT-only options: ``mode``, ``residual``, ``ffn``, ``sigma``, ``legacy_maskclip_keys``,
    ``attn_last``; ResNet-only: ``pos_embed``. An option given (not ``None``) to the wrong kind
    of tower is an error; ``mode='maskclip'`` is accepted for both (it is the ResNet path).

    Args:
        tower: A ``CLIPViT`` or ``CLIPResNet``.
        images: ``(B, 3, H, W)`` normalised images.
        **options: Options of the matching function.

    Returns:
        The dict of the matching function.

    Raises:
        ValueError: An option that does not apply to the tower, or an unknown option.
    """
    unknown = sorted(set(options) - set(_VIT_ONLY) - set(_RN_ONLY))
    if unknown:
        raise ValueError(f'unknown dense-feature option(s) {unknown}; ViT: {_VIT_ONLY}, ResNet: {_RN_ONLY}.')
    given = {k: v for k, v in options.items() if v is not None}
    if isinstance(tower, CLIPViT):
        bad = [k for k in _RN_ONLY if k in given]
        if bad:
            raise ValueError(f'option(s) {bad} apply to ResNet CLIPs only; this tower is a ViT.')
        return vit_dense_features(tower, images, **given)
    if isinstance(tower, CLIPResNet):
        bad = [k for k in _VIT_ONLY if k in given and not (k == 'mode' and given[k] == 'maskclip')]
        if bad:
            raise ValueError(f'option(s) {bad} apply to ViT CLIPs only (last-block surgery); this tower is a '
                             "ResNet, whose only dense path is MaskCLIP's c_proj(v_proj(F)).")
        return resnet_dense_features(tower, images, pos_embed=bool(given.get('pos_embed', False)))
    raise ValueError(f'tower must be a CLIPViT or CLIPResNet, got {type(tower).__name__}.')


def cosine_logits(dense: Tensor, text: Tensor) -> Tensor:
    """Raw cosine similarity of every location with every text embedding (spec §1.4).

    Args:
        dense: ``(B, E, h, w)`` dense embeddings (any norm).
        text: ``(K, E)`` text embeddings (normalised again here).

    Returns:
        ``(B, K, h, w)`` cosines in ``[-1, 1]`` (float32).

    Raises:
        ValueError: Mismatched embedding dimensions.
    """
    if dense.dim() != 4 or text.dim() != 2 or dense.shape[1] != text.shape[1]:
        raise ValueError(f'dense (B, E, h, w) and text (K, E) must share E; got {tuple(dense.shape)} '
                         f'and {tuple(text.shape)}.')
    d = F.normalize(dense.float(), dim=1)
    t = F.normalize(text.float().to(d.device), dim=1)
    return torch.einsum('behw,ke->bkhw', d, t)


def merge_background(logits: Tensor, *, num_fg: int, reduce: str = 'max') -> Tensor:
    """Collapse background-word channels into one class-0 channel placed first.

    Args:
        logits: ``(B, num_fg + M, h, w)``: foreground classes first, then ``M >= 1`` background words.
        num_fg: Number of foreground channels.
        reduce: ``'max'`` over the background words (a location belongs to background if any
            background word wins), the only reduction.

    Returns:
        ``(B, 1 + num_fg, h, w)``: channel 0 background, channel ``c + 1`` foreground class ``c``.

    Raises:
        ValueError: No background channels or an unknown reduction.
    """
    if reduce != 'max':
        raise ValueError(f"reduce must be 'max', got {reduce!r}.")
    if logits.shape[1] <= num_fg:
        raise ValueError(f'logits have {logits.shape[1]} channels, no background words after {num_fg} classes.')
    bg = logits[:, num_fg:].amax(dim=1, keepdim=True)
    return torch.cat([bg, logits[:, :num_fg]], dim=1)
