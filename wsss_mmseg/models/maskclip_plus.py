"""MaskCLIP+ (spec maskclip_pacl.md §2): a DeepLab student trained on on-the-fly MaskCLIP labels.

* :class:`MaskCLIPPlusSegmentor` (an mmseg ``EncoderDecoder``): any mmseg backbone + decode head
  (``ASPPV2Head`` = DeepLabV2, or mmseg's ``DepthwiseSeparableASPPHead`` = DeepLabV3+) whose
  classifier is the frozen CLIP text embeddings (:class:`TextEmbeddingClassifier`, optional
  learnable background vector as class 0). A frozen teacher (a ``MaskCLIPSegmentor`` config) is
  built inside, kept out of the module tree (never trained, never in a checkpoint, ignored by DDP)
  and labels every training batch on the very augmented crop the student sees.
* :class:`ASPPV2Head`: DeepLabV2's ASPP, the sum of four dilated 3x3 branches (not in mmseg 1.x).
* The phase (``'teacher'`` / ``'self'``) is set from ``runner.iter`` by
  ``wsss_mmseg.hooks.maskclip_plus_phase.MaskCLIPPlusPhaseHook``: no internal counters.

The label maths are the small pure functions at the top (tensors in, tensors out).
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from torch import Tensor, nn

from ..cam.maskclip import cosine_logits, merge_background
from ..cam.maskclip_plus import (assign_pseudo_labels, phase_at, renormalize,  # noqa: F401
                                 text_classifier_logits)

__all__ = ['PHASES', 'renormalize', 'text_classifier_logits', 'assign_pseudo_labels', 'phase_at',
           'TextEmbeddingClassifier', 'ASPPV2Head', 'MaskCLIPPlusSegmentor']

PHASES = ('teacher', 'self')
#: Pixels a ``conf_thresh`` may ignore: every pixel (official, spec §2.2) or only the pseudo-labelled ones.
CONF_SCOPES = ('all', 'unlabeled')



class TextEmbeddingClassifier(nn.Module):
    """The MaskCLIP+ classifier replacing a decode head's ``conv_seg``: frozen text embeddings
    (buffer ``text_embeddings``, saved with the student) and an optional learnable background
    vector ``bg_embedding`` (class 0).

    Args:
        text: ``(K, D)`` frozen class embeddings.
        learn_bg: Add the learnable background class 0.
    """

    def __init__(self, text: Tensor, *, learn_bg: bool = False, filled: bool = True) -> None:
        super().__init__()
        self.register_buffer('text_embeddings', text.detach().float().clone())
        self.bg_embedding = nn.Parameter(torch.randn(1, text.shape[1]) * 0.02) if learn_bg else None
        #: whether ``text_embeddings`` holds real embeddings (from the teacher or a checkpoint)
        self.filled = bool(filled)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: D401 - torch hook
        """A checkpoint that carries the text embeddings fills the classifier (no teacher needed)."""
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + 'text_embeddings' in state_dict:
            self.filled = True

    @property
    def num_classes(self) -> int:
        """``K`` (+1 with the background vector)."""
        return int(self.text_embeddings.shape[0]) + (1 if self.bg_embedding is not None else 0)

    def forward(self, feat: Tensor) -> Tensor:
        """``(B, num_classes, h, w)`` logits of ``(B, D, h, w)`` features."""
        return text_classifier_logits(feat, self.text_embeddings, background=self.bg_embedding)


@MODELS.register_module()
class ASPPV2Head(BaseDecodeHead):
    """DeepLabV2 ASPP head: the sum of four 3x3 ConvModules with dilations ``dilations``
    (6, 12, 18, 24), each ``in_channels -> channels``, then ``cls_seg``.

    Args:
        dilations: Dilation of each branch.
        **kwargs: ``BaseDecodeHead`` arguments (``in_channels``, ``channels``, ``num_classes``...).
    """

    def __init__(self, dilations: Sequence[int] = (6, 12, 18, 24), **kwargs) -> None:
        super().__init__(**kwargs)
        if not dilations:
            raise ValueError('ASPPV2Head needs at least one dilation')
        self.dilations = tuple(int(d) for d in dilations)
        self.branches = nn.ModuleList(
            ConvModule(self.in_channels, self.channels, 3, padding=d, dilation=d, conv_cfg=self.conv_cfg,
                       norm_cfg=self.norm_cfg, act_cfg=self.act_cfg) for d in self.dilations)

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        """Logits ``(B, num_classes, h, w)``."""
        x = self._transform_inputs(inputs)
        feat = sum(branch(x) for branch in self.branches)
        return self.cls_seg(feat)


def _swaps_channels(preprocessor: nn.Module) -> bool:
    """Whether a ``SegDataPreProcessor`` reverses BGR/RGB (attribute name differs between mmseg forks)."""
    for name in ('_channel_conversion', 'channel_conversion'):
        value = getattr(preprocessor, name, None)
        if value is not None:
            return bool(value)
    return False


def _build_without_touching_rng(cfg: Mapping[str, Any]) -> nn.Module:
    """Build a model while keeping the torch / numpy / python random states unchanged, so that a
    teacher built on first use does not shift the random stream of the training run."""
    import random

    import numpy as np
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        model = MODELS.build(cfg)
    random.setstate(py_state)
    np.random.set_state(np_state)
    return model


def _teacher_head_classes(teacher_cfg: Mapping[str, Any]) -> Tuple[int, bool]:
    """``(number of foreground classes, has background words)`` of a teacher config, without
    building CLIP (the same resolution as ``MaskCLIPHead``: ``classes`` or ``class_table``)."""
    from ..text import class_names as table_class_names, resolve_background
    head = dict(teacher_cfg.get('decode_head') or {})
    classes, table = head.get('classes'), head.get('class_table')
    if classes is not None:
        num_fg = len(classes)
    elif table is not None:
        num_fg = len(table_class_names(table))
    else:
        raise ValueError('teacher.decode_head needs class_table=... and/or classes=[...]')
    return num_fg, bool(resolve_background(head.get('background'), table=table))


def clip_text_width(clip_cfg: Optional[Mapping[str, Any]]) -> int:
    """Joint-embedding (text) width of a ``build_clip`` config without building the model.

    Named models: open_clip's architecture config; ``model_name=None``: the ``text_projection``
    of the OpenAI-format file ``pretrained``.

    Args:
        clip_cfg: ``build_clip`` arguments (defaults: ViT-B-16).

    Returns:
        The width (512 for ViT-B/16, 1024 for RN50, 768 for RN50x16).

    Raises:
        ValueError: The width cannot be found (then give ``decode_head.channels``).
    """
    from ..clip.config import merge_clip_cfg
    cfg = merge_clip_cfg(clip_cfg)
    name, pretrained = cfg.get('model_name'), cfg.get('pretrained')
    if name is not None:
        import open_clip
        arch = open_clip.get_model_config(str(name))
        if arch is None or 'embed_dim' not in arch:
            raise ValueError(f"unknown CLIP model_name {name!r}: cannot derive decode_head.channels; set it")
        return int(arch['embed_dim'])
    import os
    if isinstance(pretrained, (str, os.PathLike)) and os.path.isfile(pretrained):
        from ..clip.checkpoint import load_checkpoint_file
        sd = load_checkpoint_file(pretrained, allow_unsafe_pickle=bool(cfg.get('allow_unsafe_pickle', False)))
        proj = sd.state_dict.get('text_projection')
        if proj is not None and proj.dim() == 2:
            return int(proj.shape[1])
    raise ValueError(f'cannot derive the CLIP text width from clip={dict(cfg)!r} (model_name=None and '
                     f'pretrained is not a readable OpenAI-format file); set decode_head.channels')


def _teacher_classes(student_ids: Sequence[int], *, student_bg: bool, teacher_bg: bool) -> Tuple[List[int], bool]:
    """Teacher foreground indices of the student's non-background pseudo classes, and whether the
    background (student class 0 with ``learn_bg``) is a pseudo class (then the teacher needs words)."""
    fg, bg = [], False
    for s in student_ids:
        if student_bg and s == 0:
            if not teacher_bg:
                raise ValueError('pseudo_classes contains the background class 0 but the teacher has no '
                                 'background words (teacher.decode_head.background=...)')
            bg = True
        else:
            fg.append(s - (1 if student_bg else 0))
    return fg, bg


@MODELS.register_module()
class MaskCLIPPlusSegmentor(EncoderDecoder):
    """MaskCLIP+ student with a frozen MaskCLIP teacher (spec §2; ``EncoderDecoder`` subclass).

    Classes: the teacher head's foreground classes, in its order, preceded by a learnable
    background class 0 when ``learn_bg=True`` (VOC-21, Context-60). The decode head's
    ``conv_seg`` becomes a :class:`TextEmbeddingClassifier` on the teacher's text embeddings, so
    ``decode_head.channels`` must equal the CLIP embedding width (512 for ViT-B/16).

    Training (``loss``): the GT may mark pixels ``unlabeled_index`` (254, ``MarkUnlabeled``
    transform). In phase ``'teacher'`` the teacher runs on the same augmented, padded batch
    (re-normalised from the student's mean/std to its own), its logits are upsampled to the
    crop and the argmax over ``pseudo_classes`` is written into those pixels (optionally only
    where the best score >= ``conf_thresh``); in phase ``'self'`` the student's own detached
    logits give the labels (no threshold). With ``use_gt_void_mask=False`` every pixel of the
    un-padded crop is labelled (annotation-free mode that ignores the GT completely). Remaining
    254 pixels become ``ignore_index``. The losses dict also logs ``pseudo.self_training``
    (0/1) and ``pseudo.labelled`` (fraction of pixels given a pseudo label).

    Args:
        teacher: ``MaskCLIPSegmentor`` config (``type`` optional): CLIP, surgery mode, classes,
            templates, background words, KS/PD. Built once, frozen, eval mode, never saved.
        pseudo_classes: Student class ids the pseudo labels may take; ``None`` = all classes
            except a learnable background.
        learn_bg: Learnable background vector as class 0 (official ``cls_bg``).
        unlabeled_index: GT marker of pixels to pseudo-label (254).
        use_gt_void_mask: ``True``: label only ``unlabeled_index`` pixels (official behaviour);
            ``False``: label every pixel inside the image (``img_shape``), GT ignored.
        conf_thresh: Optional threshold on the teacher's best raw score (``None`` = off).
        phase: Initial phase, ``'teacher'`` or ``'self'`` (the phase hook sets it per iteration).
        decode_head: Student head config; ``num_classes`` is filled in.
        **kwargs: Other ``EncoderDecoder`` arguments (``backbone``, ``data_preprocessor``...).
    """

    def __init__(self, *, teacher: Mapping[str, Any], decode_head: Mapping[str, Any],
                 pseudo_classes: Optional[Sequence[int]] = None, learn_bg: bool = False,
                 unlabeled_index: int = 254, use_gt_void_mask: bool = True, conf_thresh: Optional[float] = None,
                 conf_thresh_scope: str = 'all', phase: str = 'teacher',
                 auxiliary_head: Optional[Mapping[str, Any]] = None, **kwargs) -> None:
        if not isinstance(teacher, Mapping):
            raise ValueError('MaskCLIPPlusSegmentor needs teacher=dict(type=\'MaskCLIPSegmentor\', ...)')
        if conf_thresh_scope not in CONF_SCOPES:
            raise ValueError(f'conf_thresh_scope must be one of {CONF_SCOPES}, got {conf_thresh_scope!r}')
        teacher_cfg = dict(teacher)
        teacher_cfg.setdefault('type', 'MaskCLIPSegmentor')
        num_fg, teacher_bg = _teacher_head_classes(teacher_cfg)
        num_classes = num_fg + (1 if learn_bg else 0)
        decode_head = dict(decode_head)
        if decode_head.get('num_classes', num_classes) != num_classes:
            raise ValueError(f"decode_head.num_classes={decode_head['num_classes']} but the teacher gives "
                             f'{num_fg} classes{" + learnable background" if learn_bg else ""} = {num_classes}')
        decode_head['num_classes'] = num_classes
        if decode_head.get('channels') is None:  # derived from the teacher's CLIP (issue #17.6)
            decode_head['channels'] = clip_text_width(teacher_cfg.get('clip'))
        if auxiliary_head is not None:
            auxiliary_head = dict(auxiliary_head, num_classes=num_classes)
        super().__init__(decode_head=decode_head, auxiliary_head=auxiliary_head, **kwargs)
        width = int(self.decode_head.channels)
        # the classifier is filled from the teacher on first use in training, or by a checkpoint at
        # test time: testing a trained student never builds the CLIP teacher
        self.decode_head.conv_seg = TextEmbeddingClassifier(torch.zeros(num_fg, width), learn_bg=learn_bg,
                                                            filled=False)
        ids = list(range(1 if learn_bg else 0, num_classes)) if pseudo_classes is None \
            else [int(c) for c in pseudo_classes]
        if not ids or len(set(ids)) != len(ids) or min(ids) < 0 or max(ids) >= num_classes:
            raise ValueError(f'pseudo_classes {ids} must be distinct class ids in [0, {num_classes})')
        self.pseudo_classes = ids
        self.teacher_fg, self.teacher_bg = _teacher_classes(ids, student_bg=learn_bg, teacher_bg=teacher_bg)
        if not 0 <= int(unlabeled_index) <= 255 or int(unlabeled_index) == int(self.decode_head.ignore_index):
            raise ValueError(f'unlabeled_index={unlabeled_index} must be in [0, 255] and differ from '
                             f'ignore_index={self.decode_head.ignore_index}')
        self.unlabeled_index = int(unlabeled_index)
        self.use_gt_void_mask = bool(use_gt_void_mask)
        self.conf_thresh = None if conf_thresh is None else float(conf_thresh)
        self.conf_thresh_scope = conf_thresh_scope
        self.learn_bg = bool(learn_bg)
        self.set_phase(phase)
        self._teacher_cfg = teacher_cfg

    # -- teacher plumbing
    @property
    def teacher_built(self) -> bool:
        """Whether the frozen teacher exists (it is built on first use)."""
        return self.__dict__.get('_teacher') is not None

    @property
    def teacher(self) -> nn.Module:
        """The frozen ``MaskCLIPSegmentor`` (outside the module tree), built on first access."""
        teacher = self.__dict__.get('_teacher')
        if teacher is None:
            teacher = _build_without_touching_rng(self._teacher_cfg)
            thead = teacher.decode_head
            text = thead.text_embeddings[:int(thead.num_fg)].detach().float()
            cls = self.decode_head.conv_seg
            if tuple(text.shape) != tuple(cls.text_embeddings.shape):
                raise ValueError(f'the teacher gives text embeddings of shape {tuple(text.shape)}, the student '
                                 f'classifier expects {tuple(cls.text_embeddings.shape)} (decode_head.channels='
                                 f'{self.decode_head.channels} must equal the CLIP text width {text.shape[1]})')
            teacher.requires_grad_(False)
            teacher.eval()
            try:
                device = next(self.parameters()).device
            except StopIteration:  # pragma: no cover - a student always has parameters
                device = torch.device('cpu')
            teacher.to(device)
            object.__setattr__(self, '_teacher', teacher)  # not a submodule: no state_dict, no DDP
            if not cls.filled:
                cls.text_embeddings.copy_(text.to(cls.text_embeddings))
                cls.filled = True
        return teacher

    def _ensure_classifier(self) -> None:
        """Fill the text classifier from the teacher unless a checkpoint already did."""
        if not self.decode_head.conv_seg.filled:
            self.teacher  # noqa: B018 - builds the teacher and copies its text embeddings

    def _apply(self, fn, recurse: bool = True):  # behind .to()/.cuda()/.half()
        """Also move/cast the hidden teacher."""
        teacher = self.__dict__.get('_teacher')
        if teacher is not None:
            teacher._apply(fn)
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True) -> 'MaskCLIPPlusSegmentor':
        """The teacher always stays in eval mode."""
        super().train(mode)
        teacher = self.__dict__.get('_teacher')
        if teacher is not None:
            teacher.eval()
        return self

    def encode_decode(self, inputs: Tensor, batch_img_metas: List[dict]) -> Tensor:
        """mmseg's ``encode_decode`` with the classifier filled first."""
        self._ensure_classifier()
        return super().encode_decode(inputs, batch_img_metas)

    def _forward(self, inputs: Tensor, data_samples: Any = None) -> Tensor:
        """mmseg's tensor mode with the classifier filled first."""
        self._ensure_classifier()
        return super()._forward(inputs, data_samples)

    def set_phase(self, phase: str) -> None:
        """Select where the pseudo labels come from: ``'teacher'`` or ``'self'``."""
        if phase not in PHASES:
            raise ValueError(f'phase must be one of {PHASES}, got {phase!r}')
        self.phase = phase

    def teacher_inputs(self, inputs: Tensor) -> Tensor:
        """The student's batch re-normalised with the teacher's mean/std (and channel order)."""
        sp, tp = self.data_preprocessor, self.teacher.data_preprocessor
        normalised = bool(getattr(sp, '_enable_normalize', False))
        return renormalize(inputs, src_mean=sp.mean if normalised else None, src_std=sp.std if normalised else None,
                           dst_mean=tp.mean, dst_std=tp.std,
                           swap_channels=_swaps_channels(sp) != _swaps_channels(tp))

    @torch.no_grad()
    def teacher_scores(self, inputs: Tensor) -> Tensor:
        """Teacher logits ``(B, C, H, W)`` of the student's batch, in the student's class order.

        As the official ``assign_label``: cosine logits with the text embeddings of the pseudo
        classes only (+ the background words when the background is one), the teacher head's
        prompt denoising / key smoothing on that subset, background words merged by max,
        upsampled to the batch size. Channels that are not pseudo classes are ``-inf``.
        """
        t = self.teacher
        head = t.decode_head
        dense, keys = t.extract_feat(self.teacher_inputs(inputs))[:2]
        text = head.text_embeddings
        sub = text[self.teacher_fg]
        if self.teacher_bg:
            sub = torch.cat([sub, text[head.num_fg:]])
        logits = cosine_logits(dense, sub)
        if head.pd is not None:
            logits = head.pd(logits)
        if head.ks is not None:
            logits = head.ks(logits, keys=keys)
        if self.teacher_bg:
            logits = merge_background(logits, num_fg=len(self.teacher_fg))  # [bg, fg subset...]
        h, w = inputs.shape[-2:]
        logits = head.predict_by_feat(logits, [dict(img_shape=(h, w), pad_shape=(h, w))])
        out = logits.new_full((logits.shape[0], self.num_classes, h, w), float('-inf'))
        fg_ids = [c for c in self.pseudo_classes if not (self.learn_bg and c == 0)]
        out[:, fg_ids] = logits[:, 1:] if self.teacher_bg else logits
        if self.teacher_bg:
            out[:, 0] = logits[:, 0]
        return out

    # -- training
    def _head_logits(self, x: List[Tensor]) -> Tuple[Tensor, Tensor]:
        """``(logits for the loss, detached logits without dropout)`` from one head forward.

        The classifier input is captured before the head's dropout (``cls_seg`` = dropout ->
        ``conv_seg``), so the self-training targets are the deterministic eval-mode prediction of
        the very same features (with ``dropout_ratio=0``, as the official configs, both coincide).
        """
        head = self.decode_head
        captured: List[Tensor] = []
        tap = head.dropout if getattr(head, 'dropout', None) is not None else head.conv_seg
        handle = tap.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            seg_logits = head.forward(x)
        finally:
            handle.remove()
        if len(captured) != 1:
            raise RuntimeError(f'{type(head).__name__}: expected one classifier call per forward, got {len(captured)}')
        with torch.no_grad():
            clean = head.conv_seg(captured[0].detach())
        return seg_logits, clean

    def _writable(self, data_samples: List[Any], shape: Tuple[int, int], device: torch.device) -> Tensor:
        mask = torch.zeros((len(data_samples),) + tuple(shape), dtype=torch.bool, device=device)
        for i, sample in enumerate(data_samples):
            h, w = sample.metainfo.get('img_shape', shape)[:2]
            mask[i, :h, :w] = True
        return mask

    def loss(self, inputs: Tensor, data_samples: List[Any]) -> Dict[str, Tensor]:
        """Pseudo-label the batch (teacher or self), then the usual decode/auxiliary losses."""
        self._ensure_classifier()
        x = self.extract_feat(inputs)
        seg_logits, clean_logits = self._head_logits(x)
        gt = torch.stack([s.gt_sem_seg.data for s in data_samples])  # (B, 1, H, W)
        if gt.shape[-2:] != inputs.shape[-2:]:
            raise ValueError(f'labels {tuple(gt.shape[-2:])} and images {tuple(inputs.shape[-2:])} differ in size')
        if self.phase == 'teacher':
            scores = self.teacher_scores(inputs)
            thresh = self.conf_thresh
        else:
            # the deterministic prediction of this step (no dropout), as the official head's
            # ``feat.detach()`` taken before its dropout
            scores = F.interpolate(clean_logits, size=gt.shape[-2:], mode='bilinear',
                                   align_corners=self.decode_head.align_corners)
            thresh = None
        writable = None if self.use_gt_void_mask else self._writable(data_samples, gt.shape[-2:], gt.device)
        new = assign_pseudo_labels(gt, scores.to(gt.device), pseudo_classes=self.pseudo_classes,
                                   unlabeled_index=self.unlabeled_index, ignore_index=self.decode_head.ignore_index,
                                   conf_thresh=thresh, writable=writable,
                                   conf_scope=self.conf_thresh_scope)
        target = (gt[:, 0] == self.unlabeled_index) if writable is None else writable
        for sample, labels in zip(data_samples, new):
            sample.gt_sem_seg.data = labels.to(sample.gt_sem_seg.data.dtype)
        losses: Dict[str, Tensor] = {}
        for k, v in self.decode_head.loss_by_feat(seg_logits, data_samples).items():
            losses[f'decode.{k}'] = v
        if self.with_auxiliary_head:
            losses.update(self._auxiliary_head_forward_train(x, data_samples))
        labelled = (target & (new[:, 0] != self.decode_head.ignore_index)).float().mean()
        losses['pseudo.self_training'] = torch.tensor(float(self.phase == 'self'), device=inputs.device)
        losses['pseudo.labelled'] = labelled.detach()
        return losses
