"""PACL token backbone (spec maskclip_pacl.md §3.2, §3.4, §3.8 pitfall 4): the frozen CLIP ViT
token map that PACL's vision embedder e_v reads (re-exported by :mod:`wsss_mmseg.models.pacl`)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.registry import MODELS

from ..clip import CLIPViT
from .clip_encoders import build_clip_from_cfg

__all__ = ['TOKEN_SOURCES', 'PACLTokenBackbone']

#: Token sources of :class:`PACLTokenBackbone`: plain blocks, or a last-block surgery mode.
TOKEN_SOURCES = ('last', 'penultimate', 'maskclip', 'sclip', 'clearclip', 'naclip')


@MODELS.register_module()
class PACLTokenBackbone(BaseModule):
    """Frozen CLIP ViT returning the patch-token map that PACL's e_v reads: ``((B, D, h, w),)``.

    Tokens are block outputs *before* ``ln_post`` (the head applies its frozen copy):

    * ``'last'`` -- output of the last block (the paper's f_v);
    * ``'penultimate'`` -- output of block L-1 (spec §3.8 pitfall 4: last-layer tokens carry
      global information);
    * ``'maskclip' | 'sclip' | 'clearclip' | 'naclip'`` -- the last block run with that
      locality-preserving attention surgery (:func:`wsss_mmseg.cam.maskclip.last_block_surgery`,
      each mode's residual/FFN defaults unless ``surgery_residual``/``surgery_ffn`` are given).

    Inputs of any size (zero-padded right/bottom to the patch size, padded patches cropped).
    The CLIP model is not a registered submodule: it moves with the backbone but stays out of
    ``state_dict()``, so checkpoints hold only the trained head.

    Args:
        clip: ``build_clip`` arguments.
        token_source: One of :data:`TOKEN_SOURCES`.
        surgery_residual: Keep the last block's residual in a surgery mode (None = mode default).
        surgery_ffn: Keep the last block's FFN in a surgery mode (None = mode default).
        sigma: NACLIP Gaussian std (patches).
        pos_interp: Positional-table interpolation.
        test_patch_stride: Stride of the patch embedding in eval mode (spec §3.4: 4 -> overlapping
            patches, positional table interpolated to the ``ceil(H/4) x ceil(W/4)`` grid, 16x the
            tokens); ``None`` = the patch size. Training always uses the patch size.
        init_cfg: Unused.
    """

    def __init__(self, *, clip: Optional[dict] = None, token_source: str = 'last',
                 surgery_residual: Optional[bool] = None, surgery_ffn: Optional[bool] = None,
                 sigma: float = 5.0, pos_interp: str = 'bicubic', test_patch_stride: Optional[int] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if token_source not in TOKEN_SOURCES:
            raise ValueError(f'token_source must be one of {TOKEN_SOURCES}, got {token_source!r}')
        model = build_clip_from_cfg(clip, config_key='model.backbone.clip.pretrained')
        if not (hasattr(model.visual, 'transformer') and hasattr(model.visual, 'conv1')):
            raise ValueError('PACLTokenBackbone needs a CLIP ViT (patch tokens)')
        tower = CLIPViT(model.visual, pos_interp=pos_interp)
        if token_source == 'penultimate' and tower.num_layers < 2:
            raise ValueError("token_source='penultimate' needs a ViT with at least 2 blocks")
        object.__setattr__(self, '_tower', tower)  # not a submodule: not in state_dict()
        self.token_source = token_source
        self.surgery = dict(residual=surgery_residual, ffn=surgery_ffn, sigma=float(sigma))
        self.patch_size = tower.patch_size
        if test_patch_stride is not None and not 1 <= int(test_patch_stride) <= tower.patch_size:
            raise ValueError(f'test_patch_stride must be in [1, {tower.patch_size}] (the patch size), '
                             f'got {test_patch_stride}')
        self.test_patch_stride = None if test_patch_stride is None else int(test_patch_stride)
        self.width = tower.width
        self.is_vit = True
        if token_source not in ('last', 'penultimate'):
            from ..cam.maskclip import resolve_surgery
            resolve_surgery(token_source, residual=surgery_residual, ffn=surgery_ffn)

    @property
    def tower(self) -> CLIPViT:
        """The wrapped frozen tower."""
        return self._tower

    @property
    def stride(self) -> int:
        """Input pixels per token-grid cell (the test patch stride in eval mode)."""
        if not self.training and self.test_patch_stride is not None:
            return self.test_patch_stride
        return self.patch_size

    def _strided_tokens(self, images: torch.Tensor, stride: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Block outputs of overlapping patches (spec §3.4): ``((B, 1 + N, D), grid)``."""
        from ..clip.vit import block_forward
        from ..pacl.strided import strided_patch_embed
        vit = self._tower
        visual = vit.visual
        x, grid = strided_patch_embed(images, visual.conv1.weight, visual.conv1.bias, stride=stride)
        cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + vit.pos_embed(grid, device=x.device).to(x.dtype)
        x = visual.ln_pre(x)
        n = vit.num_layers
        run = n - 1 if self.token_source != 'last' else n
        for i in range(run):
            x, _ = block_forward(vit.blocks[i], x)
        if self.token_source in ('last', 'penultimate'):  # output of block L, or of block L-1
            return x, grid
        from ..cam.maskclip import last_block_surgery
        tokens, _ = last_block_surgery(vit.blocks[-1], x, mode=self.token_source, residual=self.surgery['residual'],
                                       ffn=self.surgery['ffn'], grid=grid, sigma=self.surgery['sigma'])
        return tokens, grid

    def _apply(self, fn, recurse: bool = True):  # noqa: D401 - torch internal hook
        """Also move/cast the hidden CLIP tower."""
        self._tower._apply(fn)
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True) -> 'PACLTokenBackbone':
        """The tower stays in eval mode."""
        super().train(mode)
        self._tower.eval()
        return self

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor]:
        """``((B, D, h, w),)`` token map of normalised images ``(B, 3, H, W)``."""
        if self.stride != self.patch_size:
            tokens, (gh, gw) = self._strided_tokens(images, self.stride)
            b, _, c = tokens.shape
            return (tokens[:, 1:, :].transpose(1, 2).reshape(b, c, gh, gw).contiguous(),)
        h, w = images.shape[-2:]
        s = self.patch_size
        gh, gw = -(-h // s), -(-w // s)
        images = F.pad(images, (0, gw * s - w, 0, gh * s - h))
        vit = self._tower
        if self.token_source == 'last':
            tokens = vit.forward_features(images, out_layers=(-1,))['tokens'][-1]
        elif self.token_source == 'penultimate':
            tokens = vit.forward_features(images, out_layers=(-2,))['tokens'][-2]
        else:
            from ..cam.maskclip import last_block_surgery
            feats = vit.forward_features(images, stop_before_last=True)
            tokens, _ = last_block_surgery(vit.blocks[-1], feats['pre_last'], mode=self.token_source,
                                           residual=self.surgery['residual'], ffn=self.surgery['ffn'],
                                           grid=(gh, gw), sigma=self.surgery['sigma'])
        b, _, c = tokens.shape
        return (tokens[:, 1:, :].transpose(1, 2).reshape(b, c, gh, gw).contiguous(),)


