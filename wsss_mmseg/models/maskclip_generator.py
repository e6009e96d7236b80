"""Registered ``MaskCLIPGenerator``: MaskCLIP (or a surgery variant) as a pseudo-label source.

A pseudo-label source of ``tools/generate_pseudo.py`` with the interface of
``CLIPESGenerator``, built from the MaskCLIP model pieces of :mod:`wsss_mmseg.models.maskclip`
(frozen CLIP tower, normalisation constants, registered post-processors) over the math of
:mod:`wsss_mmseg.cam.maskclip`.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from mmseg.registry import MODELS
from PIL import Image
from torch import Tensor

from ..cam.clip_es import clip_es_input_size, resize_maps
from ..cam.maskclip import cosine_logits, dense_features
from ..clip import CLIPResNet, CLIPViT, build_clip, get_tokenizer
from ..text import class_embeddings, class_names as table_class_names, resolve_background
from .generators import resolve_device
from .maskclip import (CLIP_MEAN_255, CLIP_STD_255, IMAGENET_MEAN_255, IMAGENET_STD_255, _build_post,
                       _build_tower, _clip_cfg)
from ..generators import PseudoLabelGenerator

__all__ = ['MaskCLIPGenerator']


@MODELS.register_module()
class MaskCLIPGenerator(PseudoLabelGenerator):
    """MaskCLIP dense labels as a pseudo-label source (interface of ``CLIPESGenerator``).

    Per image: bicubic resize to multiples of the stride (aspect ratio not kept, as CLIP-ES;
    longer side capped by ``max_side``), dense embeddings (optional ViT surgery), cosine logits
    with the image's ``K`` label embeddings + ``M`` background-word embeddings,
    ``P = softmax(scale * cos)`` over these ``K + M`` prompts only (restricted to the image's
    labels), ``cam_k = P_k / max_x P_k`` (``cam_norm='max'``: each present class reaches 1, as
    CAMs; ``'minmax'`` also subtracts the minimum; ``'none'`` keeps the probabilities), resized
    bilinearly to the original size. ``cam_refined``: key smoothing of the ``K + M`` logits
    (then the same normalisation) and/or CAA on the patch maps, ``None`` when neither is set.
    Without background words and ``K = 1`` the softmax is 1 everywhere: use background words.

    Args:
        clip: ``build_clip`` arguments.
        class_table: Table whose indices the label ids are (``'voc20'``).
        text_table: Table of the prompt names in the same order (``'voc20_readable'``; default
            ``class_table``).
        synonyms: Synonym set/mapping for the prompts, or None.
        templates: Prompt templates (``'maskclip85'``).
        background: Background words (``'clip_es'`` = CLIP-ES's 25 VOC words, ``'maskclip_demo'``,
            a list) or None.
        scale: Softmax inverse temperature (100, CLIP's logit scale).
        cam_norm: ``'max'``, ``'minmax'`` or ``'none'``.
        mode, residual, ffn, sigma, legacy_maskclip_keys, pos_embed: dense-path options
            (:class:`MaskCLIPBackbone`).
        key_smoothing: ``None`` or a ``KeySmoothing`` config.
        caa: ``None`` or a ``CAA`` config (ViT only; attention of the last ``attn_layers`` blocks).
        pamr: ``None`` or a ``PAMR`` config (spec §5.3/§6.4): refines the (KS / CAA refined, else the
            plain) maps with the network input image, last in the chain.
        legacy_imagenet_norm: ImageNet mean/std instead of CLIP's.
        device: torch device or ``'auto'``.
        max_side: Cap of the longer network-input side (None: no cap).
        pos_interp: ViT positional-table interpolation.
    """

    def __init__(self, clip: Optional[Mapping[str, Any]] = None, class_table: str = 'voc20',
                 text_table: Optional[str] = None, synonyms: Union[None, str, Mapping[str, str]] = None,
                 templates: Union[str, Sequence[str]] = 'maskclip85',
                 background: Union[None, str, Sequence[str]] = 'clip_es', scale: float = 100.0,
                 cam_norm: str = 'max', mode: Optional[str] = None, residual: Optional[bool] = None,
                 ffn: Optional[bool] = None, sigma: Optional[float] = None,
                 legacy_maskclip_keys: Optional[bool] = None, pos_embed: Optional[bool] = None,
                 key_smoothing: Optional[Mapping[str, Any]] = None, caa: Optional[Mapping[str, Any]] = None,
                 pamr: Optional[Mapping[str, Any]] = None,
                 legacy_imagenet_norm: bool = False, device: str = 'auto', max_side: Optional[int] = 1024,
                 pos_interp: str = 'bicubic') -> None:
        if cam_norm not in ('max', 'minmax', 'none'):
            raise ValueError(f"cam_norm must be 'max', 'minmax' or 'none', got {cam_norm!r}.")
        self.device = resolve_device(device)
        self.class_table = class_table
        self._class_names = list(table_class_names(class_table))
        text_table = text_table or class_table
        if len(table_class_names(text_table)) != len(self._class_names):
            raise ValueError(f'text_table {text_table!r} has {len(table_class_names(text_table))} names, '
                             f'class_table {class_table!r} has {len(self._class_names)}; they must align.')
        cfg = _clip_cfg(clip)
        model = build_clip(device=self.device, config_key='generator.clip.pretrained', **cfg)
        tokenizer = get_tokenizer(cfg.get('model_name'))
        bg_words = resolve_background(background, table=class_table) or None  # aliases resolve by class_table
        fg, bg = class_embeddings(model, tokenizer, table=text_table, synonyms=synonyms, templates=templates,
                                  background=bg_words, device=self.device)
        self.fg_text, self.bg_text = fg.float(), bg.float()
        self.tower = _build_tower(model, pos_interp)
        self.options = dict(mode=mode, residual=residual, ffn=ffn, sigma=sigma,
                            legacy_maskclip_keys=legacy_maskclip_keys, pos_embed=pos_embed)
        self.stride = int(self.tower.patch_size if isinstance(self.tower, CLIPViT) else CLIPResNet.stride)
        with torch.no_grad():
            dense_features(self.tower, torch.zeros(1, 3, self.stride, self.stride, device=self.device),
                           **self.options)
        self.scale = float(scale)
        self.cam_norm = cam_norm
        self.ks = _build_post(key_smoothing, 'KeySmoothing')
        self.caa = _build_post(caa, 'CAA')
        self.pamr = _build_post(pamr, 'PAMR')
        if self.caa is not None and not isinstance(self.tower, CLIPViT):
            raise ValueError('caa needs attention maps: it applies to ViT CLIPs only (this one is a ResNet).')
        self.mean = IMAGENET_MEAN_255 if legacy_imagenet_norm else CLIP_MEAN_255
        self.std = IMAGENET_STD_255 if legacy_imagenet_norm else CLIP_STD_255
        self.max_side = max_side

    @property
    def class_names(self) -> List[str]:
        """Class names of ``class_table`` (label id ``i`` -> ``class_names[i]``, mask value ``i + 1``)."""
        return list(self._class_names)

    def preprocess(self, img: np.ndarray) -> Tensor:
        """``(1, 3, H, W)`` normalised network input (bicubic resize to multiples of the stride)."""
        h0, w0 = img.shape[:2]
        h, w = clip_es_input_size(h0, w0, patch=self.stride, max_side=self.max_side)
        pil = Image.fromarray(np.ascontiguousarray(img), mode='RGB').resize((w, h), Image.BICUBIC)
        x = torch.from_numpy(np.array(pil, dtype=np.float32)).permute(2, 0, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        return ((x - mean) / std)[None].contiguous()

    def _normalise(self, maps: Tensor) -> Tensor:
        if self.cam_norm == 'none':
            return maps
        flat = maps.flatten(1)
        hi = flat.amax(dim=1)[:, None, None]
        if self.cam_norm == 'max':
            return maps / hi.clamp_min(1e-12)
        lo = flat.amin(dim=1)[:, None, None]
        return (maps - lo) / (hi - lo).clamp_min(1e-12)

    @torch.no_grad()
    def generate_one(self, img_rgb_uint8: np.ndarray, label_ids: Sequence[int]) -> Dict[str, Any]:
        """Class maps of one image at its original size.

        Args:
            img_rgb_uint8: ``(H0, W0, 3)`` uint8 RGB image.
            label_ids: Class indices (into :attr:`class_names`), ``K >= 1``, already validated and
                de-duplicated by the input preparer (:meth:`generate_image`, the pseudo-label job).

        Returns:
            dict with ``keys`` int64 ``(K,)``, ``cam`` float32 ``(K, H0, W0)`` in ``[0, 1]`` and
            ``cam_refined`` float32 ``(K, H0, W0)`` (key smoothing / CAA) or ``None``.
        """
        img = np.asarray(img_rgb_uint8)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f'expected an (H, W, 3) uint8 RGB image, got shape {img.shape} dtype {img.dtype}')
        keys = [int(c) for c in label_ids]
        k = len(keys)
        x = self.preprocess(img).to(self.device)
        opts = dict(self.options)
        if self.caa is not None:
            opts['attn_last'] = min(int(getattr(self.caa, 'attn_layers', 8)), self.tower.num_layers)
        feats = dense_features(self.tower, x, **opts)
        text = torch.cat([self.fg_text[keys], self.bg_text])
        logits = cosine_logits(feats['dense'], text)  # (1, K + M, h, w)
        prob = (self.scale * logits).softmax(dim=1)[0, :k]
        cam = self._normalise(prob).clamp(0.0, 1.0)
        h0, w0 = img.shape[:2]
        out: Dict[str, Any] = {'keys': np.asarray(keys, dtype=np.int64), 'cam': resize_maps(cam, (h0, w0)),
                               'cam_refined': None}
        refined: Optional[Tensor] = None
        if self.ks is not None:
            refined = self._normalise(self.ks(logits, keys=feats['keys'])[0, :k].clamp_min(0.0)).clamp(0.0, 1.0)
        if self.caa is not None:
            base = refined if refined is not None else cam
            refined = torch.as_tensor(self.caa(base.float(), attn=[a[0] for a in feats['attn']]))
        if self.pamr is not None:  # at the network input size (PAMR is invariant to the normalisation)
            base = refined if refined is not None else cam
            refined = self.pamr(base.float(), image=x).clamp(0.0, 1.0)
        if refined is not None:
            out['cam_refined'] = resize_maps(refined, (h0, w0))
        return out
