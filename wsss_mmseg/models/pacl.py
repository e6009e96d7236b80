"""Registered PACL components (spec maskclip_pacl.md §3, §6 item 8): head, losses, generator.

Thin wrappers over :mod:`wsss_mmseg.pacl` (pure math):

* :class:`PACLHead` -- decode head holding the trainable vision embedder e_v on top of a frozen
  CLIP backbone (:class:`~wsss_mmseg.models.clip_encoders.FrozenCLIPImageEncoder`) and the frozen
  class text embeddings; ``predict`` = per-class patch-text cosine maps (whole/slide inference),
  ``loss`` = label-PACL (§3.8) and/or caption-PACL (§3.2) depending on ``loss_decode``.
* :class:`PACLMultiLabelLoss`, :class:`PACLInfoNCELoss`, :class:`PACLDensePriorLoss`,
  :class:`PACLNegativeSuppressionLoss` -- losses owning their learnable scale/bias.
* :class:`PACLTokenBackbone` -- frozen CLIP ViT giving the token map e_v reads, from the last
  block, layer L-1, or a locality-preserving last block (MaskCLIP/SCLIP/ClearCLIP/NACLIP surgery).
* :class:`PACLGenerator` -- pseudo-label source (``generate(img, label_ids)``) from a trained
  PACL segmentor checkpoint.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from torch import nn

from ..clip import CLIPViT, get_tokenizer
from ..pacl.compat_fn import compatibility, patch_text_similarity
from ..pacl.distributed import caption_compatibility
from ..pacl.embedder import VisionEmbedder
from ..pacl.losses import (clamp_log_scale_, clamped_scale, dense_prior_loss, multi_positive_contrastive_loss,
                           multilabel_sigmoid_loss,
                           negative_suppression_loss, symmetric_info_nce)
from ..text import class_embeddings, class_names as table_class_names
from .clip_encoders import _DEFAULT_CLIP, build_clip_from_cfg
from .generators import resolve_device

__all__ = ['PACLTokenBackbone', 'PACLHead', 'PACLMultiLabelLoss', 'PACLContrastiveLabelLoss', 'PACLInfoNCELoss',
           'PACLDensePriorLoss', 'PACLNegativeSuppressionLoss', 'PACLGenerator']

INPUT_NORMS = ('ln_post', 'none')
INITS = ('clip_proj', 'random')
#: Token sources of :class:`PACLTokenBackbone`: plain blocks, or a last-block surgery mode.
TOKEN_SOURCES = ('last', 'penultimate', 'maskclip', 'sclip', 'clearclip', 'naclip')


# ---------------------------------------------------------------------------------- backbone
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
        model = build_clip_from_cfg(clip)
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


# ------------------------------------------------------------------------------------ losses
class _LearnableScalar(nn.Module):
    """Holds a scalar as a parameter (learnable) or a buffer (fixed)."""

    def __init__(self, name: str, value: float, learnable: bool) -> None:
        super().__init__()
        tensor = torch.tensor(float(value))
        if learnable:
            self.register_parameter(name, nn.Parameter(tensor))
        else:
            self.register_buffer(name, tensor)


@MODELS.register_module()
class PACLMultiLabelLoss(nn.Module):
    """Label-PACL loss (§3.8 a): ``sum_c BCE(sigma(phi_c * scale + bias), y_c)``, mean over images.

    Absent classes are negatives; with ``use_background`` the head's background prompts are
    always-negative classes. Scale (stored as its log) and bias are learnable.

    Args:
        init_scale: Initial logit scale (SigLIP: 10).
        init_bias: Initial logit bias (SigLIP: -10).
        learnable: Learn scale and bias (else fixed).
        use_background: Add the background prompts as negatives.
        background_weight: Weight of the background terms.
        loss_weight: Multiplier of the loss.
        loss_name: Key in the loss dict (must start with ``loss_``).
    """

    kind = 'label'

    def __init__(self, *, init_scale: float = 10.0, init_bias: float = -10.0, learnable: bool = True,
                 use_background: bool = True, background_weight: float = 1.0, loss_weight: float = 1.0,
                 loss_name: str = 'loss_pacl_label') -> None:
        super().__init__()
        if not init_scale > 0:
            raise ValueError(f'init_scale must be > 0, got {init_scale}')
        self.params = _LearnableScalar('log_scale', math.log(init_scale), learnable)
        self.bias_holder = _LearnableScalar('bias', init_bias, learnable)
        self.use_background = bool(use_background)
        self.background_weight = float(background_weight)
        self.loss_weight = float(loss_weight)
        self._loss_name = loss_name

    @property
    def scale(self) -> torch.Tensor:
        """Current logit scale."""
        return self.params.log_scale.exp()

    @property
    def bias(self) -> torch.Tensor:
        """Current logit bias."""
        return self.bias_holder.bias

    def forward(self, phi: torch.Tensor, targets: torch.Tensor,
                phi_background: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Weighted loss from ``phi (B, C)``, ``targets (B, C)`` and optional ``phi_background (B, M)``."""
        bg = phi_background if self.use_background else None
        return self.loss_weight * multilabel_sigmoid_loss(
            phi, targets, scale=self.scale, bias=self.bias, phi_background=bg,
            background_weight=self.background_weight)

    @property
    def loss_name(self) -> str:
        """Loss dict key."""
        return self._loss_name


@MODELS.register_module()
class PACLInfoNCELoss(nn.Module):
    """Caption-PACL loss (§3.2): symmetric InfoNCE on the ``B x B`` compatibility matrix.

    Args:
        init_logit_scale: Initial ``1 / tau`` (CLIP: 100).
        max_logit_scale: Clamp of the scale (CLIP: 100), or None.
        learnable: Learn the scale (``False`` with ``init_logit_scale=1/0.07`` = fixed tau 0.07).
        noun_prompt_prob: Spec §3.3 text augmentation in training: with this probability a caption is
            replaced by one of its nouns in a random template of ``noun_templates``
            (:func:`wsss_mmseg.pacl.caption_nouns.noun_prompt`; 0 = captions only).
        noun_templates: Template set name or list (the 7 CLIP templates, ``'pacl7'``).
        loss_weight: Multiplier of the loss.
        loss_name: Key in the loss dict.
    """

    kind = 'caption'

    def __init__(self, *, init_logit_scale: float = 100.0, max_logit_scale: Optional[float] = 100.0,
                 learnable: bool = True, noun_prompt_prob: float = 0.0,
                 noun_templates: Union[str, Sequence[str]] = 'pacl7', loss_weight: float = 1.0,
                 loss_name: str = 'loss_pacl_nce') -> None:
        super().__init__()
        if not init_logit_scale > 0:
            raise ValueError(f'init_logit_scale must be > 0, got {init_logit_scale}')
        if not 0.0 <= float(noun_prompt_prob) <= 1.0:
            raise ValueError(f'noun_prompt_prob must be in [0, 1], got {noun_prompt_prob}')
        self.noun_prompt_prob = float(noun_prompt_prob)
        self.noun_templates = None
        self.noun_vocabulary = None
        if self.noun_prompt_prob > 0:
            from ..pacl.caption_nouns import default_noun_vocabulary
            from ..text.encoder import resolve_templates
            self.noun_templates = list(resolve_templates(noun_templates))
            self.noun_vocabulary = default_noun_vocabulary()
        self.params = _LearnableScalar('log_scale', math.log(init_logit_scale), learnable)
        self.max_logit_scale = max_logit_scale
        self.loss_weight = float(loss_weight)
        self._loss_name = loss_name

    @property
    def scale(self) -> torch.Tensor:
        """Current logit scale, capped at ``max_logit_scale`` (value for logging)."""
        return clamped_scale(self.params.log_scale, max_scale=self.max_logit_scale)

    def forward(self, phi: torch.Tensor) -> torch.Tensor:
        """Weighted loss of a ``(B_rows, B)`` compatibility matrix (image rows, caption columns).

        The learnable log scale is first clamped in place to ``log(max_logit_scale)`` (what
        CLIP does after each optimiser step); the loss then uses ``exp(log_scale)`` without a
        clamp in the graph, so the gradient never vanishes on the bound.
        """
        log_scale = self.params.log_scale
        if isinstance(log_scale, nn.Parameter):
            clamp_log_scale_(log_scale, max_scale=self.max_logit_scale)
            scale = log_scale.exp()
        else:
            scale = clamped_scale(log_scale, max_scale=self.max_logit_scale)
        return self.loss_weight * symmetric_info_nce(phi, logit_scale=scale)

    @property
    def loss_name(self) -> str:
        """Loss dict key."""
        return self._loss_name


@MODELS.register_module()
class PACLContrastiveLabelLoss(nn.Module):
    """Contrastive label-PACL (§3.8 b): image->class softmax with multiple positives plus
    class->image SupCon over the batch (:func:`~wsss_mmseg.pacl.losses.multi_positive_contrastive_loss`).

    The logit scale is learnable with CLIP's rule (clamped in place to ``max_logit_scale``).

    Args:
        init_logit_scale: Initial scale.
        max_logit_scale: Bound of the scale, or None.
        learnable: Learn the scale.
        use_background: The head's background prompts are extra negatives of every image.
        loss_weight: Multiplier.
        loss_name: Key in the loss dict.
    """

    kind = 'contrast'

    def __init__(self, *, init_logit_scale: float = 10.0, max_logit_scale: Optional[float] = 100.0,
                 learnable: bool = True, use_background: bool = True, loss_weight: float = 1.0,
                 loss_name: str = 'loss_pacl_contrast') -> None:
        super().__init__()
        if not init_logit_scale > 0:
            raise ValueError(f'init_logit_scale must be > 0, got {init_logit_scale}')
        self.params = _LearnableScalar('log_scale', math.log(init_logit_scale), learnable)
        self.max_logit_scale = max_logit_scale
        self.use_background = bool(use_background)
        self.loss_weight = float(loss_weight)
        self._loss_name = loss_name

    @property
    def scale(self) -> torch.Tensor:
        """Current logit scale (capped, for logging)."""
        return clamped_scale(self.params.log_scale, max_scale=self.max_logit_scale)

    def forward(self, phi: torch.Tensor, targets: torch.Tensor,
                phi_background: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Weighted loss from ``phi (B, C)``, ``targets (B, C)`` and optional ``phi_background (B, M)``."""
        log_scale = self.params.log_scale
        if isinstance(log_scale, nn.Parameter):
            clamp_log_scale_(log_scale, max_scale=self.max_logit_scale)
            scale = log_scale.exp()
        else:
            scale = clamped_scale(log_scale, max_scale=self.max_logit_scale)
        bg = phi_background if self.use_background else None
        return self.loss_weight * multi_positive_contrastive_loss(phi, targets, scale=scale, phi_background=bg)

    @property
    def loss_name(self) -> str:
        """Loss dict key."""
        return self._loss_name


@MODELS.register_module()
class PACLDensePriorLoss(nn.Module):
    """Dense prior (§3.8 c): CE of ``softmax_c(S_c(i) / tau_s)`` vs another generator's label map.

    The label map is the data sample's ``gt_sem_seg`` (e.g. MaskCLIP / CLIP-ES pseudo masks loaded
    with ``LoadPseudoLabel``: 0 background, ``c + 1`` class c, 255 ignore); per image only the
    classes of its label set plus background compete. Confidence filtering happens when the masks
    are made (``PseudoMaskMaker(ignore_below=...)``: low-confidence pixels are 255).

    Args:
        temperature: ``tau_s`` of the class softmax over cosines.
        loss_weight: Weight (spec: 0.1-1).
        ignore_index: Ignored label.
        loss_name: Key in the loss dict.
    """

    kind = 'dense'

    def __init__(self, *, temperature: float = 0.01, loss_weight: float = 0.1, ignore_index: int = 255,
                 loss_name: str = 'loss_pacl_dense') -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f'temperature must be > 0, got {temperature}')
        self.temperature = float(temperature)
        self.loss_weight = float(loss_weight)
        self.ignore_index = int(ignore_index)
        self._loss_name = loss_name

    def forward(self, cosines: torch.Tensor, target: torch.Tensor, allowed: Optional[torch.Tensor]) -> torch.Tensor:
        """``cosines (B, K, H, W)``, ``target (B, H, W)``, ``allowed (B, K)`` -> weighted loss."""
        return self.loss_weight * dense_prior_loss(cosines / self.temperature, target, allowed=allowed,
                                                   ignore_index=self.ignore_index)

    @property
    def loss_name(self) -> str:
        """Loss dict key."""
        return self._loss_name


@MODELS.register_module()
class PACLNegativeSuppressionLoss(nn.Module):
    """Negative suppression (§3.8 d): mean top-k patch cosine of the classes absent from the image.

    Args:
        top_k: Patches averaged per absent class.
        loss_weight: Weight.
        loss_name: Key in the loss dict.
    """

    kind = 'suppress'

    def __init__(self, *, top_k: int = 1, loss_weight: float = 0.1, loss_name: str = 'loss_pacl_neg') -> None:
        super().__init__()
        self.top_k = int(top_k)
        self.loss_weight = float(loss_weight)
        self._loss_name = loss_name

    def forward(self, similarity: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``similarity (B, C, T)``, ``targets (B, C)`` -> weighted loss."""
        return self.loss_weight * negative_suppression_loss(similarity, targets, top_k=self.top_k)

    @property
    def loss_name(self) -> str:
        """Loss dict key."""
        return self._loss_name


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
        clip_cfg = dict(_DEFAULT_CLIP)
        clip_cfg.update(clip or {})
        model = build_clip_from_cfg(clip_cfg)
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
class PACLGenerator:
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

    def generate(self, img_rgb_uint8: np.ndarray, label_ids: Sequence[int]) -> Dict[str, Optional[np.ndarray]]:
        """Class maps of the labelled classes of one image.

        Args:
            img_rgb_uint8: ``(H0, W0, 3)`` uint8 RGB image.
            label_ids: Class indices (into :attr:`class_names`), ``K >= 1``.

        Returns:
            ``keys`` int64 ``(K,)``, ``cam`` float32 ``(K, H0, W0)`` in ``[0, 1]``, ``cam_refined`` None.
        """
        keys = np.asarray(list(label_ids), dtype=np.int64)
        n = len(self.head.class_names)
        if keys.size == 0:
            raise ValueError('label_ids is empty: an image needs at least one label')
        if keys.min() < 0 or keys.max() >= n:
            raise ValueError(f'label ids {keys.tolist()} out of range for {n} classes')
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
