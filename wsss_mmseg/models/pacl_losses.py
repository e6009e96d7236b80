"""Registered PACL losses (spec maskclip_pacl.md §3.2, §3.3, §3.8): thin wrappers over
:mod:`wsss_mmseg.pacl.losses` owning their learnable scale / bias (re-exported by
:mod:`wsss_mmseg.models.pacl`). ``PACLHead`` dispatches on each loss's ``kind``."""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from mmseg.registry import MODELS
from torch import nn

from ..pacl.losses import (clamp_log_scale_, clamped_scale, dense_prior_loss, multi_positive_contrastive_loss,
                           multilabel_sigmoid_loss, negative_suppression_loss, symmetric_info_nce)

__all__ = ['PACLMultiLabelLoss', 'PACLInfoNCELoss', 'PACLContrastiveLabelLoss', 'PACLDensePriorLoss',
           'PACLNegativeSuppressionLoss']


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


