"""Registered frozen CLIP encoders: a dense image backbone and a class-text classifier.

Both read a ``clip=dict(model_name=..., pretrained=...)`` block and share one model
instance per checkpoint through :func:`wsss_mmseg.clip.build_clip`'s cache.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.registry import MODELS

from ..clip import CLIPResNet, CLIPViT, build_clip, get_tokenizer
from ..text.encoder import TextEmbeddingCache, class_embeddings

from ..clip.config import merge_clip_cfg


def build_clip_from_cfg(clip: Optional[dict], *, config_key: Optional[str] = None) -> torch.nn.Module:
    """``build_clip(**clip)`` with the plugin's defaults (ViT-B/16, OpenAI weights).

    Args:
        clip: The ``clip=dict(model_name=..., pretrained=...)`` block (None: the defaults).
        config_key: Config key of its ``pretrained`` entry, named when the weights cannot be had
            (e.g. ``'model.backbone.clip.pretrained'``).

    Returns:
        The frozen open_clip model.
    """
    return build_clip(config_key=config_key, **merge_clip_cfg(clip))


def _is_vit(visual: torch.nn.Module) -> bool:
    return hasattr(visual, 'transformer') and hasattr(visual, 'conv1')


@MODELS.register_module()
class FrozenCLIPImageEncoder(BaseModule):
    """Frozen CLIP image tower as an mmseg backbone returning dense feature maps.

    ViT towers run at any input size (positional embedding interpolated per grid; inputs
    whose sides are not multiples of the patch size are zero-padded right/bottom and the
    padded patches are cropped from the output). ResNet towers return the attention-pool
    input (``'feat'``) or its v/c projections applied as 1x1 convolutions (``'dense'``).
    Images must be normalised with CLIP's mean/std by the data preprocessor
    (``mean=[122.771, 116.746, 104.094], std=[68.501, 66.632, 70.323]``).

    Args:
        clip: ``build_clip`` arguments, e.g. ``dict(model_name='ViT-B-16', pretrained='openai')``.
        out_layers: ViT only: block indices (negative from the end) whose token outputs are
            returned as ``(B, D, h, w)`` maps, in this order.
        out_dense: Also return the projected per-token embedding ``(B, E, h, w)`` (ViT:
            ``ln_post`` + ``proj`` of the last block; ResNet: ``c_proj(v_proj(feat))``),
            after the ``out_layers`` maps.
        pos_interp: ViT positional-embedding interpolation, ``'bicubic'`` or ``'bilinear'``.
        init_cfg: mmengine init config (unused: the weights come from ``clip``).
    """

    def __init__(self, *, clip: Optional[dict] = None, out_layers: Sequence[int] = (-1,),
                 out_dense: bool = False, pos_interp: str = 'bicubic',
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        # an mmseg backbone: the key the user overrides is model.backbone.clip.pretrained
        model = build_clip_from_cfg(clip, config_key='model.backbone.clip.pretrained')
        visual = model.visual
        self.is_vit = _is_vit(visual)
        if self.is_vit:
            self.tower = CLIPViT(visual, pos_interp=pos_interp)
            self.stride = self.tower.patch_size
        else:
            if tuple(out_layers) not in ((), (-1,)):
                raise ValueError('out_layers selects ViT blocks; a ResNet CLIP returns its '
                                 "attention-pool input ('feat') and/or out_dense=True")
            self.tower = CLIPResNet(visual)
            self.stride = 32
        self.out_layers = tuple(int(i) for i in out_layers)
        self.out_dense = bool(out_dense)
        if not self.out_layers and not self.out_dense:
            raise ValueError('FrozenCLIPImageEncoder returns nothing: give out_layers or out_dense=True')
        self.tower.requires_grad_(False)
        self.tower.eval()

    def train(self, mode: bool = True) -> 'FrozenCLIPImageEncoder':
        """Stays in eval mode: the tower is frozen."""
        super().train(mode)
        self.tower.eval()
        return self

    def _pad(self, images: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        h, w = images.shape[-2:]
        s = self.stride
        ph, pw = (-h) % s, (-w) % s
        if ph or pw:
            images = F.pad(images, (0, pw, 0, ph))
        return images, (-(-h // s), -(-w // s))

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Dense maps ``(B, C, h, w)``: one per ``out_layers`` entry, then the dense embedding."""
        images, (gh, gw) = self._pad(images)
        if not self.is_vit:
            feats = self.tower.forward_features(images)
            outs: List[torch.Tensor] = []
            if self.out_layers:
                outs.append(feats['feat'][..., :gh, :gw])
            if self.out_dense:
                outs.append(feats['dense'][..., :gh, :gw])
            return tuple(outs)
        feats = self.tower.forward_features(images, out_layers=self.out_layers)
        h, w = feats['grid']
        maps = [feats['tokens'][i] for i in self.out_layers]
        if self.out_dense:
            maps.append(feats['dense'])
        return tuple(_tokens_to_map(t, h, w)[..., :gh, :gw] for t in maps)


def _tokens_to_map(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(B, 1+h*w, C)`` tokens (CLS first) -> ``(B, C, h, w)`` (row-major grid)."""
    b, _, c = tokens.shape
    return tokens[:, 1:, :].transpose(1, 2).reshape(b, c, h, w).contiguous()


@MODELS.register_module()
class FrozenCLIPTextEncoder(BaseModule):
    """Frozen CLIP text classifier: L2-normalised class (and background) embeddings.

    The embeddings are computed once at construction (prompt ensemble: normalise each
    sentence embedding, average over templates, normalise again) and kept as buffers
    ``class_embeddings`` ``(C, E)`` and ``background_embeddings`` ``(M, E)``; the text tower
    itself is not kept, so it never enters a checkpoint. Prompts, synonyms and background
    words are data (``wsss_mmseg/text/data``), selectable by name or given as lists.

    Args:
        clip: ``build_clip`` arguments (the same dict as the image encoder's shares one model).
        class_table: Class-name table, e.g. ``'voc20'``, ``'coco80'``, ``'context59'``.
        classes: Subset (names or indices) of ``class_table``, or free-form names without a table.
        synonyms: ``None``, a synonym-set name (``'clip_es'``) or a mapping name -> text.
        templates: Template-set name (``'clip_es'``, ``'openai80'``, ``'maskclip85'``...) or list.
        background: ``None``, a background-word set (``'clip_es'``) or a list of words.
        cache_dir: Optional directory for the on-disk text-embedding cache.
        init_cfg: mmengine init config (unused).
    """

    def __init__(self, *, clip: Optional[dict] = None, class_table: Optional[str] = None,
                 classes: Optional[Sequence[Union[str, int]]] = None,
                 synonyms: Union[None, str, Dict[str, str]] = None,
                 templates: Union[str, Sequence[str]] = 'clip_es',
                 background: Union[None, str, Sequence[str]] = None,
                 cache_dir: Optional[str] = None, init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if class_table is None and not classes:
            raise ValueError('FrozenCLIPTextEncoder needs class_table and/or classes')
        cfg = merge_clip_cfg(clip)
        model = build_clip(config_key='text_encoder.clip.pretrained', **cfg)
        tokenizer = get_tokenizer(cfg.get('model_name') or 'ViT-B-16')
        cache = TextEmbeddingCache(cache_dir) if cache_dir else None
        fg, bg = class_embeddings(model, tokenizer, classes=list(classes) if classes else None,
                                  table=class_table, synonyms=synonyms, templates=templates,
                                  background=background, cache=cache,
                                  model_name=str(cfg.get('model_name')))
        self.register_buffer('class_embeddings', fg.float(), persistent=False)
        self.register_buffer('background_embeddings', bg.float(), persistent=False)
        self.logit_scale = float(model.logit_scale.exp().item())

    def forward(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(class_embeddings (C, E), background_embeddings (M, E))``."""
        return self.class_embeddings, self.background_embeddings
