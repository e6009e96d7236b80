"""Registered PACL components (spec maskclip_pacl.md §3, §6 item 8): head, losses, generator.

Thin wrappers over :mod:`wsss_mmseg.pacl` (pure math):

* :class:`PACLHead` -- decode head holding the trainable vision embedder e_v on top of a frozen
  CLIP backbone (:class:`~wsss_mmseg.models.clip_encoders.FrozenCLIPImageEncoder`) and the frozen
  class text embeddings; ``predict`` = per-class patch-text cosine maps (whole/slide inference),
  ``loss`` = label-PACL (§3.8) and/or caption-PACL (§3.2) depending on ``loss_decode``.
* losses owning their learnable scale/bias (:mod:`wsss_mmseg.models.pacl_losses`, re-exported):
  :class:`PACLMultiLabelLoss`, :class:`PACLContrastiveLabelLoss`, :class:`PACLInfoNCELoss`,
  :class:`PACLDensePriorLoss`, :class:`PACLNegativeSuppressionLoss`.
* :class:`PACLTokenBackbone` (:mod:`wsss_mmseg.models.pacl_backbone`, re-exported) -- frozen CLIP
  ViT giving the token map e_v reads, from the last block, layer L-1, or a locality-preserving last
  block (MaskCLIP/SCLIP/ClearCLIP/NACLIP surgery), optionally with stride-4 patches at test time.
* :class:`PACLGenerator` -- pseudo-label source (``generate(img, label_ids)``) from a trained
  PACL segmentor checkpoint.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from torch import nn

from ..clip import get_tokenizer
from ..pacl.compat_fn import compatibility, patch_text_similarity
from ..pacl.distributed import caption_compatibility
from ..pacl.embedder import VisionEmbedder
from ..text import class_embeddings, class_names as table_class_names
from ..clip.config import merge_clip_cfg
from .clip_encoders import build_clip_from_cfg
from .generators import resolve_device
from .pacl_backbone import TOKEN_SOURCES, PACLTokenBackbone  # noqa: F401  (re-exported)
from .pacl_losses import (PACLContrastiveLabelLoss, PACLDensePriorLoss, PACLInfoNCELoss,  # noqa: F401
                          PACLMultiLabelLoss, PACLNegativeSuppressionLoss)
from ..generators import PseudoLabelGenerator

__all__ = ['PACLTokenBackbone', 'PACLHead', 'PACLMultiLabelLoss', 'PACLContrastiveLabelLoss', 'PACLInfoNCELoss',
           'PACLDensePriorLoss', 'PACLNegativeSuppressionLoss', 'PACLGenerator']

INPUT_NORMS = ('ln_post', 'none')
INITS = ('clip_proj', 'random')


# -------------------------------------------------------------------------------------- head
def _resolve_names(class_table: Optional[str], classes: Optional[Sequence[Union[str, int]]]) -> List[str]:
    table = table_class_names(class_table) if class_table is not None else None
    if classes is None:
        if table is None:
            raise ValueError('PACLHead needs class_table and/or classes')
        return list(table)
    names = []
    for c in classes:
        if isinstance(c, int):
            if table is None:
                raise ValueError(f'class index {c} needs a class_table')
            names.append(table[c])
        else:
            names.append(str(c))
    return names


@MODELS.register_module()
class PACLHead(BaseDecodeHead):
    """PACL decode head: per-patch residual MLP e_v + frozen CLIP class-text embeddings.

    Input: the backbone's token map ``(B, D_v, h, w)`` (``inputs[in_index]``; use
    ``FrozenCLIPImageEncoder(out_layers=(-1,))`` for the last block or ``(-2,)`` for layer L-1,
    spec §3.8 pitfall 4). ``input_norm='ln_post'`` applies CLIP's frozen ``ln_post`` first (the
    natural token source, spec §7). e_v maps every token to the text width E; the text side
    (CLIP's own text projection) is frozen: class (and background) prompt-ensemble embeddings are
    computed once at construction and kept as non-persistent buffers. Only e_v and the losses'
    scale/bias are trainable.

    Output classes (``num_classes``): with ``with_bg_class`` class 0 is background (its score is
    the max cosine over the background prompts, or the constant ``bg_score``) and class ``c + 1``
    is table class c (mmseg's VOC-21 layout); otherwise class c is table class c.

    ``forward`` returns ``score_scale * cos(e_v(token), t_c)`` maps ``(B, K, h, w)`` -- what mmseg's
    whole/slide inference resizes and arg-maxes. ``loss`` dispatches on the loss modules in
    ``loss_decode``: :class:`PACLMultiLabelLoss` reads the multi-hot ``img_labels`` (C,) from each
    data sample's metainfo (pack it with ``PackSegInputs(meta_keys=(..., 'img_labels'))``);
    :class:`PACLInfoNCELoss` reads ``caption`` (a string) and encodes the captions with the frozen
    text tower; :class:`PACLDensePriorLoss` reads ``gt_sem_seg`` (pseudo labels);
    :class:`PACLNegativeSuppressionLoss` reads ``img_labels``.

    Args:
        clip: ``build_clip`` arguments (the same dict as the backbone's shares one model).
        class_table: Class table (``'voc20'``, ``'coco80'``...).
        classes: Subset (names / indices of the table) or free-form names.
        synonyms: Synonym set / mapping, or None.
        templates: Prompt templates (PACL-7 by default, spec §3.4).
        background: Background prompt words (set name or list) used as always-negative classes and
            as the background score, or None.
        with_bg_class: Prepend a background output class.
        bg_score: Constant background cosine when there are no background prompts.
        in_channels: Token width D_v of the backbone output (None: the CLIP ViT width, 768 for ViT-B/16).
        in_index: Which backbone output to use.
        hidden_dim: Hidden width of e_v (default E).
        depth: Linear layers in e_v's main branch (paper: 2).
        input_norm: ``'ln_post'`` (frozen copy of CLIP's) or ``'none'``.
        init: ``'clip_proj'`` (e_v starts as ``ln_post + proj``, i.e. raw CLIP dense features) or
            ``'random'``.
        pool_temperature: Patch-softmax temperature tau_a (paper: 1).
        chunk_size: Texts per chunk in the all-pairs compatibility.
        score_scale: Multiplier of the cosine maps returned by ``forward``.
        loss_decode: Loss config(s).
        kwargs: Other :class:`BaseDecodeHead` arguments (``align_corners``, ``ignore_index``...).
    """

    def __init__(self, *, clip: Optional[dict] = None, class_table: Optional[str] = 'voc20',
                 classes: Optional[Sequence[Union[str, int]]] = None,
                 synonyms: Union[None, str, Dict[str, str]] = None,
                 templates: Union[str, Sequence[str]] = 'pacl7',
                 background: Union[None, str, Sequence[str]] = 'clip_es',
                 with_bg_class: bool = True, bg_score: Optional[float] = None,
                 in_channels: Optional[int] = None, in_index: int = 0, hidden_dim: Optional[int] = None,
                 depth: int = 2,
                 input_norm: str = 'ln_post', init: str = 'clip_proj', pool_temperature: float = 1.0,
                 chunk_size: Optional[int] = 256, score_scale: float = 100.0,
                 loss_decode: Union[dict, Sequence[dict]] = dict(type='PACLMultiLabelLoss'),
                 **kwargs: Any) -> None:
        if input_norm not in INPUT_NORMS:
            raise ValueError(f'input_norm must be one of {INPUT_NORMS}, got {input_norm!r}')
        if init not in INITS:
            raise ValueError(f'init must be one of {INITS}, got {init!r}')
        if not pool_temperature > 0:
            raise ValueError(f'pool_temperature must be > 0, got {pool_temperature}')
        clip_cfg = merge_clip_cfg(clip)
        model = build_clip_from_cfg(clip_cfg, config_key='model.decode_head.clip.pretrained')
        tokenizer = get_tokenizer(clip_cfg.get('model_name'))
        names = _resolve_names(class_table, classes)
        fg, bg = class_embeddings(model, tokenizer, classes=list(classes) if classes is not None else None,
                                  table=class_table, synonyms=synonyms, templates=templates,
                                  background=background)
        if with_bg_class and bg.shape[0] == 0 and bg_score is None:
            raise ValueError('PACLHead(with_bg_class=True) needs background prompts (background=...) '
                             'or a constant bg_score')
        embed_dim = int(fg.shape[1])
        num_classes = len(names) + (1 if with_bg_class else 0)
        visual = model.visual
        width = int(visual.conv1.out_channels) if hasattr(visual, 'conv1') and hasattr(visual, 'transformer') \
            else None
        if in_channels is None:  # derived from the CLIP ViT (issue #17.6)
            if width is None:
                raise ValueError('PACLHead: in_channels cannot be derived from a non-ViT CLIP; set in_channels')
            in_channels = width
        for key in ('num_classes', 'channels', 'init_cfg', 'dropout_ratio'):
            if key in kwargs:
                raise ValueError(f'PACLHead sets {key} itself (got {key}={kwargs[key]!r})')
        super().__init__(in_channels=in_channels, channels=embed_dim, num_classes=num_classes,
                         in_index=in_index, dropout_ratio=0.0, loss_decode=loss_decode, init_cfg=None,
                         **kwargs)
        del self.conv_seg  # PACL classifies by cosine with frozen text embeddings
        self.class_names = names
        self.with_bg_class = bool(with_bg_class)
        self.bg_score = None if bg_score is None else float(bg_score)
        self.pool_temperature = float(pool_temperature)
        self.chunk_size = chunk_size
        self.score_scale = float(score_scale)
        self.register_buffer('class_embeddings', fg.float(), persistent=False)
        self.register_buffer('background_embeddings', bg.float(), persistent=False)
        self._clip = (model,)  # frozen text tower for caption mode; not a submodule (not saved)
        self._clip_model_name = clip_cfg.get('model_name')

        if input_norm == 'ln_post':
            if width is None:
                raise ValueError("input_norm='ln_post' needs a ViT CLIP")
            if in_channels != width:
                raise ValueError(f'in_channels={in_channels} does not match the CLIP ViT width {width}')
            self.input_norm = copy.deepcopy(visual.ln_post).float().requires_grad_(False)
        else:
            self.input_norm = None
        self.embedder = VisionEmbedder(in_channels, embed_dim, hidden_dim=hidden_dim, depth=depth)
        if init == 'clip_proj':
            proj = getattr(visual, 'proj', None)
            if proj is None or tuple(proj.shape) != (in_channels, embed_dim):
                raise ValueError(f"init='clip_proj' needs CLIP's visual.proj of shape ({in_channels}, {embed_dim}), "
                                 f'got {None if proj is None else tuple(proj.shape)}')
            self.embedder.init_from_projection(proj.detach().float())

    # ------------------------------------------------------------------ features
    def train(self, mode: bool = True) -> 'PACLHead':
        """The frozen ``ln_post`` copy stays in eval mode."""
        super().train(mode)
        if self.input_norm is not None:
            self.input_norm.eval()
        return self

    def embed_patches(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """e_v of every patch token.

        Args:
            inputs: Backbone outputs; ``inputs[in_index]`` is ``(B, D_v, h, w)``.

        Returns:
            ``(embeddings (B, h*w, E), (h, w))``.
        """
        x = self._transform_inputs(inputs)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'PACLHead expects a (B, {self.in_channels}, h, w) token map, got shape '
                             f'{tuple(x.shape)} (check in_channels / the backbone out_layers)')
        b, _, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2).float()
        if self.input_norm is not None:
            tokens = self.input_norm(tokens)
        return self.embedder(tokens), (h, w)

    def class_cosines(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosines of patches with the output classes (background first when enabled): ``(B, K, T)``."""
        sim = patch_text_similarity(embeddings, self.class_embeddings)
        if not self.with_bg_class:
            return sim
        if self.background_embeddings.shape[0]:
            bg = patch_text_similarity(embeddings, self.background_embeddings).amax(dim=1, keepdim=True)
        else:
            bg = sim.new_full((sim.shape[0], 1, sim.shape[2]), self.bg_score)
        return torch.cat([bg, sim], dim=1)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Scaled class cosine maps ``(B, K, h, w)``."""
        emb, (h, w) = self.embed_patches(inputs)
        cos = self.class_cosines(emb)
        return (cos * self.score_scale).reshape(cos.shape[0], cos.shape[1], h, w)

    # ---------------------------------------------------------------------- loss
    def _loss_modules(self) -> List[nn.Module]:
        mods = list(self.loss_decode) if isinstance(self.loss_decode, nn.ModuleList) else [self.loss_decode]
        for m in mods:
            if getattr(m, 'kind', None) not in ('label', 'contrast', 'caption', 'dense', 'suppress'):
                raise TypeError(f'PACLHead needs PACL losses (PACLMultiLabelLoss, PACLContrastiveLabelLoss, '
                                f'PACLInfoNCELoss, PACLDensePriorLoss, PACLNegativeSuppressionLoss), '
                                f'got {type(m).__name__}')
        return mods

    def _image_labels(self, batch_data_samples: Sequence[Any], device: torch.device) -> torch.Tensor:
        rows = []
        n = len(self.class_names)
        for i, sample in enumerate(batch_data_samples):
            meta = sample.metainfo
            if 'img_labels' not in meta:
                raise KeyError(f"data sample {i} ({meta.get('img_path', '?')}) has no 'img_labels'; use a PACL "
                               "label dataset and PackSegInputs(meta_keys=(..., 'img_labels'))")
            row = torch.as_tensor(np.asarray(meta['img_labels']), dtype=torch.float32).flatten()
            if row.numel() != n:
                raise ValueError(f"data sample {i}: img_labels has {row.numel()} entries, the head has {n} classes")
            rows.append(row)
        return torch.stack(rows).to(device)

    def _caption_embeddings(self, batch_data_samples: Sequence[Any], device: torch.device,
                            loss: Optional[nn.Module] = None) -> torch.Tensor:
        captions = []
        for i, sample in enumerate(batch_data_samples):
            cap = sample.metainfo.get('caption')
            if not isinstance(cap, str) or not cap.strip():
                raise KeyError(f"data sample {i} has no 'caption' string; use PACLCaptionDataset, SampleCaption "
                               "and PackSegInputs(meta_keys=(..., 'caption'))")
            captions.append(cap)
        if loss is not None and self.training and getattr(loss, 'noun_prompt_prob', 0.0) > 0:
            from ..pacl.caption_nouns import noun_prompt
            captions = [noun_prompt(c, loss.noun_templates, loss.noun_vocabulary, prob=loss.noun_prompt_prob)
                        for c in captions]
        model = self._clip[0]
        tokenizer = get_tokenizer(self._clip_model_name)
        text_device = next(model.parameters()).device
        if text_device != device:
            model.to(device)
        with torch.no_grad():
            emb = model.encode_text(tokenizer(captions).to(device)).float()
        return F.normalize(emb, dim=-1)

    def loss(self, inputs: Sequence[torch.Tensor], batch_data_samples: Sequence[Any],
             train_cfg: Optional[dict] = None) -> Dict[str, torch.Tensor]:
        """PACL losses of a batch (see the class docstring for what each loss reads)."""
        emb, (h, w) = self.embed_patches(inputs)
        device = emb.device
        losses: Dict[str, torch.Tensor] = {}
        cache: Dict[str, Any] = {}

        def labels() -> torch.Tensor:
            if 'labels' not in cache:
                cache['labels'] = self._image_labels(batch_data_samples, device)
            return cache['labels']

        def class_phi() -> Tuple[torch.Tensor, torch.Tensor]:
            if 'phi' not in cache:
                cache['phi'] = compatibility(emb, self.class_embeddings, temperature=self.pool_temperature,
                                             chunk_size=self.chunk_size, return_similarity=True)
            return cache['phi']

        for mod in self._loss_modules():
            if mod.kind in ('label', 'contrast'):
                phi, _ = class_phi()
                phi_bg = None
                if mod.use_background and self.background_embeddings.shape[0]:
                    phi_bg = compatibility(emb, self.background_embeddings, temperature=self.pool_temperature,
                                           chunk_size=self.chunk_size)
                value = mod(phi, labels(), phi_bg)
            elif mod.kind == 'suppress':
                _, sim = class_phi()
                value = mod(sim, labels())
            elif mod.kind == 'caption':
                texts = self._caption_embeddings(batch_data_samples, device, mod)
                # negatives from every process (CLIP-style gather; one process: the local batch)
                value = mod(caption_compatibility(emb, texts, temperature=self.pool_temperature,
                                                  chunk_size=self.chunk_size))
            else:  # dense prior
                if not self.with_bg_class:
                    raise ValueError('PACLDensePriorLoss needs with_bg_class=True (pseudo masks: 0 = background)')
                missing = [i for i, s in enumerate(batch_data_samples) if 'gt_sem_seg' not in s]
                if missing:
                    raise KeyError(f'PACLDensePriorLoss: data samples {missing} carry no gt_sem_seg (pseudo labels)')
                target = self._stack_batch_gt(batch_data_samples).squeeze(1)
                cos = self.class_cosines(emb).reshape(emb.shape[0], -1, h, w)
                cos = F.interpolate(cos, size=target.shape[-2:], mode='bilinear', align_corners=self.align_corners)
                allowed = torch.cat([torch.ones_like(labels()[:, :1]), labels()], dim=1) > 0
                value = mod(cos, target, allowed)
            name = mod.loss_name
            losses[name] = losses[name] + value if name in losses else value
        return losses


# --------------------------------------------------------------------------------- generator
@MODELS.register_module()
class PACLGenerator(PseudoLabelGenerator):
    """Pseudo-label source from a (trained) PACL segmentor, for ``tools/generate_pseudo.py``.

    Config example::

        generator=dict(type='PACLGenerator', model=model,   # the training config's model dict
                       checkpoint='work_dirs/pacl_vitb16_voc/iter_20000.pth', device='auto')

    Maps: with a background class, ``softmax`` over ``{background} ∪ labels`` of
    ``cam_scale * cos`` (probabilities in [0, 1]); without one, per-class min-max normalised
    cosines. Images whose longer side exceeds ``max_side`` are scaled down for the network.

    Args:
        model: Segmentor config (``EncoderDecoder`` with ``FrozenCLIPImageEncoder`` + ``PACLHead``).
        checkpoint: mmengine checkpoint of that model, or None (untrained e_v; with
            ``init='clip_proj'`` this is raw CLIP's dense embedding).
        device: torch device or ``'auto'``.
        cam_scale: Softmax scale of the cosines (default: CLIP's 100).
        max_side: Longer-side cap in pixels, or None.
    """

    def __init__(self, model: Mapping[str, Any], checkpoint: Optional[str] = None, device: str = 'auto',
                 cam_scale: float = 100.0, max_side: Optional[int] = 1024) -> None:
        from mmengine.registry import DefaultScope
        self.device = resolve_device(device)
        with DefaultScope.overwrite_default_scope('mmseg'):  # the pseudo-label job sets no scope
            self.model = MODELS.build(dict(model))
        if checkpoint is not None:
            from mmengine.runner import load_checkpoint
            load_checkpoint(self.model, checkpoint, map_location='cpu', strict=True)
        self.model.to(self.device).eval()
        head = self.model.decode_head
        if not isinstance(head, PACLHead):
            raise ValueError(f'PACLGenerator needs a model with a PACLHead, got {type(head).__name__}')
        self.head = head
        self.cam_scale = float(cam_scale)
        self.max_side = max_side

    @property
    def class_names(self) -> List[str]:
        """Class names (label id ``i`` -> ``class_names[i]``, mask value ``i + 1``)."""
        return list(self.head.class_names)

    def _normalise(self, img: np.ndarray) -> torch.Tensor:
        """The network input the model's data preprocessor makes of this image.

        mmseg feeds BGR images (``LoadImageFromFile``); the preprocessor swaps them to RGB when
        ``bgr_to_rgb=True`` and then normalises with mean/std given in *that* order. The generator
        gets RGB, so it reverses the channels exactly when the preprocessor does not.
        """
        from .maskclip_plus import _swaps_channels
        pre = self.model.data_preprocessor
        x = torch.from_numpy(np.array(img, dtype=np.float32)).permute(2, 0, 1)[None].to(self.device)
        if not _swaps_channels(pre):
            x = x.flip(1)  # the model was trained on BGR tensors
        mean = getattr(pre, 'mean', None)
        std = getattr(pre, 'std', None)
        if mean is not None and std is not None and bool(getattr(pre, '_enable_normalize', True)):
            x = (x - mean.view(1, -1, 1, 1).to(x)) / std.view(1, -1, 1, 1).to(x)
        return x

    @torch.no_grad()
    def class_maps(self, img_rgb_uint8: np.ndarray) -> torch.Tensor:
        """Cosine maps of all output classes at the original size: ``(K, H0, W0)``."""
        img = np.asarray(img_rgb_uint8)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f'expected an (H, W, 3) uint8 RGB image, got shape {img.shape} dtype {img.dtype}')
        h0, w0 = img.shape[:2]
        x = self._normalise(img)
        if self.max_side is not None and max(h0, w0) > self.max_side:
            s = self.max_side / max(h0, w0)
            x = F.interpolate(x, size=(max(1, round(h0 * s)), max(1, round(w0 * s))), mode='bilinear',
                              align_corners=False)
        h, w = x.shape[-2:]
        feats = self.model.extract_feat(x)
        emb, (gh, gw) = self.head.embed_patches(feats)
        cos = self.head.class_cosines(emb).reshape(1, -1, gh, gw)
        stride = int(getattr(self.model.backbone, 'stride', max(1, -(-h // gh))))
        cos = F.interpolate(cos, size=(gh * stride, gw * stride), mode='bilinear', align_corners=False)
        cos = cos[..., :h, :w]
        return F.interpolate(cos, size=(h0, w0), mode='bilinear', align_corners=False)[0]

    def generate_one(self, img_rgb_uint8: np.ndarray, label_ids: Sequence[int]) -> Dict[str, Optional[np.ndarray]]:
        """Class maps of the labelled classes of one image.

        Args:
            img_rgb_uint8: ``(H0, W0, 3)`` uint8 RGB image.
            label_ids: Class indices (into :attr:`class_names`), ``K >= 1``, already validated and
                de-duplicated by the input preparer (:meth:`generate_image`, the pseudo-label job).

        Returns:
            ``keys`` int64 ``(K,)``, ``cam`` float32 ``(K, H0, W0)`` in ``[0, 1]``, ``cam_refined`` None.
        """
        keys = np.asarray(list(label_ids), dtype=np.int64)
        cos = self.class_maps(img_rgb_uint8)
        off = 1 if self.head.with_bg_class else 0
        sel = cos[torch.as_tensor(keys + off, device=cos.device)]
        if off:
            probs = torch.softmax(torch.cat([cos[:1], sel]) * self.cam_scale, dim=0)[1:]
        else:
            lo = sel.flatten(1).amin(1)[:, None, None]
            hi = sel.flatten(1).amax(1)[:, None, None]
            probs = (sel - lo) / (hi - lo).clamp(min=1e-12)
        return dict(keys=keys, cam=probs.clamp(0, 1).float().cpu().numpy(), cam_refined=None)
