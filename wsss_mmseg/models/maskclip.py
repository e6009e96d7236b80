"""Registered MaskCLIP model pieces: zero-shot segmentor, its backbone and head.

Thin wrappers over :mod:`wsss_mmseg.cam.maskclip`, :mod:`wsss_mmseg.postprocess.key_smoothing`
and :mod:`wsss_mmseg.postprocess.prompt_denoising`:

* ``MaskCLIPSegmentor`` (an mmseg ``EncoderDecoder``) + ``MaskCLIPBackbone`` + ``MaskCLIPHead``:
  training-free zero-shot segmentation evaluated by mmseg's own ``tools/test.py`` /
  ``mim test`` (whole or sliding-window inference from ``test_cfg``). The segmentor has no
  persistent state (the frozen CLIP comes from ``clip=dict(pretrained=...)``, the text
  embeddings are non-persistent buffers), so the checkpoint that mmseg's test tool insists
  on may be empty: :func:`write_empty_checkpoint`.
* ``KeySmoothing`` / ``PromptDenoising``: registered post-processors usable on any class-wise
  maps (MaskCLIP logits, CLIP-ES CAMs given the last-block keys), re-exported from
  :mod:`wsss_mmseg.models.dense_postprocessors`.

The pseudo-label source ``MaskCLIPGenerator`` (same interface as ``CLIPESGenerator``) is built
from these pieces in :mod:`wsss_mmseg.models.maskclip_generator`.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.model import BaseModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from torch import Tensor

from ..cam.clip_es import CLIP_MEAN, CLIP_STD
from ..cam.maskclip import cosine_logits, dense_features, merge_background
from ..clip import CLIPResNet, CLIPViT, build_clip, get_tokenizer
from ..text import class_embeddings
from ..text.encoder import TextEmbeddingCache
from ..clip.config import merge_clip_cfg
from .dense_postprocessors import KeySmoothing, PromptDenoising  # noqa: F401  (registered there, re-exported)

__all__ = ['MaskCLIPBackbone', 'MaskCLIPHead', 'MaskCLIPSegmentor', 'KeySmoothing',
           'PromptDenoising', 'write_empty_checkpoint', 'IMAGENET_MEAN_255', 'IMAGENET_STD_255',
           'CLIP_MEAN_255', 'CLIP_STD_255']

CLIP_MEAN_255 = [round(m * 255, 3) for m in CLIP_MEAN]   # 122.771, 116.746, 104.094
CLIP_STD_255 = [round(s * 255, 3) for s in CLIP_STD]     # 68.501, 66.632, 70.323
IMAGENET_MEAN_255 = [123.675, 116.28, 103.53]
IMAGENET_STD_255 = [58.395, 57.12, 57.375]


def _clip_cfg(clip: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    cfg = merge_clip_cfg(clip)
    if 'device' in cfg:
        raise ValueError('give no device inside clip=dict(...): the runner (segmentor) or the '
                         "generator's device=... places the model")
    return cfg


def _build_tower(model: torch.nn.Module, pos_interp: str) -> Union[CLIPViT, CLIPResNet]:
    visual = model.visual
    if hasattr(visual, 'transformer') and hasattr(visual, 'conv1'):
        return CLIPViT(visual, pos_interp=pos_interp)
    return CLIPResNet(visual)


def write_empty_checkpoint(path: Union[str, 'os.PathLike[str]']) -> str:
    """Write the (empty) checkpoint of a MaskCLIP segmentor for mmseg's ``tools/test.py``.

    mmseg's test tool and ``mim test`` require a checkpoint argument; the segmentor has no
    persistent parameters, so an empty state dict is its complete checkpoint.

    Args:
        path: Output file (parent folders are created).

    Returns:
        The path written.
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save({'state_dict': {}, 'meta': {'note': 'MaskCLIP is training-free: no weights to load'}}, path)
    return path


def _build_post(cfg: Union[None, Mapping[str, Any], Any], kind: str) -> Any:
    if cfg is None or cfg is False:
        return None
    if isinstance(cfg, Mapping):
        cfg = dict(cfg)
        cfg.setdefault('type', kind)
        return MODELS.build(cfg)
    if cfg is True:
        return MODELS.build(dict(type=kind))
    return cfg


# ----------------------------------------------------------------------------- segmentor parts
@MODELS.register_module()
class MaskCLIPBackbone(BaseModule):
    """Frozen CLIP image tower giving MaskCLIP dense embeddings and last-block keys.

    Returns ``(dense (B, E, h, w), keys (B, C, h, w))``. Inputs of any size: they are
    zero-padded right/bottom to a multiple of :attr:`stride` and the grid is cropped to
    ``ceil(H / stride) x ceil(W / stride)``. The CLIP model is *not* a registered submodule:
    it moves with the backbone (``.to()``/``.cuda()``) but stays out of ``state_dict()``, so
    checkpoints of the segmentor stay empty.

    Args:
        clip: ``build_clip`` arguments (``model_name``, ``pretrained``, ``precision``...).
        mode: ViT last-block surgery: ``'maskclip'`` (default), ``'vanilla'``, ``'sclip'``,
            ``'clearclip'``, ``'naclip'``.
        residual: ViT: keep the last block's residual (``None`` = the mode's default).
        ffn: ViT: keep the last block's FFN (``None`` = the mode's default).
        sigma: ViT ``'naclip'`` Gaussian std in patches (``None`` = 5).
        legacy_maskclip_keys: ViT: keys through ``out_proj`` as the official MaskCLIP code.
        pos_embed: ResNet only: add the attention pool's positional embedding (MaskCLIP: no).
        pos_interp: ViT positional-table interpolation (``'bicubic'``, MaskCLIP).
        init_cfg: Unused (weights come from ``clip``).
    """

    def __init__(self, *, clip: Optional[Mapping[str, Any]] = None, mode: Optional[str] = None,
                 residual: Optional[bool] = None, ffn: Optional[bool] = None, sigma: Optional[float] = None,
                 legacy_maskclip_keys: Optional[bool] = None, pos_embed: Optional[bool] = None,
                 pos_interp: str = 'bicubic', init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        model = build_clip(config_key='model.clip.pretrained', **_clip_cfg(clip))
        tower = _build_tower(model, pos_interp)
        self.options = dict(mode=mode, residual=residual, ffn=ffn, sigma=sigma,
                            legacy_maskclip_keys=legacy_maskclip_keys, pos_embed=pos_embed)
        # validate the options against the tower kind now (clear error at build time)
        probe = 32 if isinstance(tower, CLIPResNet) else tower.patch_size
        with torch.no_grad():
            dense_features(tower, torch.zeros(1, 3, probe, probe, dtype=torch.float32,
                                              device=next(model.visual.parameters()).device), **self.options)
        object.__setattr__(self, '_tower', tower)  # not a submodule: not in state_dict()
        self.stride = int(tower.patch_size if isinstance(tower, CLIPViT) else CLIPResNet.stride)
        self.is_vit = isinstance(tower, CLIPViT)

    @property
    def tower(self) -> Union[CLIPViT, CLIPResNet]:
        """The wrapped frozen tower."""
        return self._tower

    def _apply(self, fn, recurse: bool = True):  # torch's hook behind .to()/.cuda()/.half()
        """Also move/cast the hidden CLIP tower."""
        self._tower._apply(fn)
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True) -> 'MaskCLIPBackbone':
        """The tower always stays in eval mode."""
        super().train(mode)
        self._tower.eval()
        return self

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        """``(dense (B, E, h, w), keys (B, C, h, w))`` of normalised images ``(B, 3, H, W)``."""
        h, w = images.shape[-2:]
        s = self.stride
        ph, pw = (-h) % s, (-w) % s
        if ph or pw:
            images = F.pad(images, (0, pw, 0, ph))
        out = dense_features(self._tower, images, **self.options)
        return out['dense'], out['keys']


@MODELS.register_module()
class MaskCLIPHead(BaseDecodeHead):
    """Training-free MaskCLIP classifier: cosine of dense embeddings with class text embeddings.

    ``forward`` returns ``(B, num_classes, h, w)`` raw cosine logits at feature resolution
    (after optional prompt denoising and key smoothing, applied per forward call, i.e. per
    window in slide mode); ``predict`` resizes them bilinearly to the input (aligned with the
    padded grid when ``feature_stride`` is known), so mmseg's whole/slide inference works.
    With ``background`` words, their channels are reduced by a max into class 0 and the
    foreground classes follow (``num_classes = 1 + K``), matching datasets whose class 0 is
    background (VOC-21).

    Args:
        clip: ``build_clip`` arguments (the segmentor fills in its own).
        class_table: Class-name table of the prompts (``'voc20_readable'``, ``'context59_readable'``...).
        classes: Subset of ``class_table`` (names/indices) or free-form names without a table.
        templates: Prompt templates (``'maskclip85'``: 80 ImageNet + 5 scene templates).
        synonyms: Optional synonym set / mapping (see :func:`wsss_mmseg.text.class_embeddings`).
        background: ``None`` or background words (set name such as ``'maskclip_demo'`` or a list).
        prompt_denoising: ``None`` or a ``PromptDenoising`` config (``dict(thresh=0.5)``).
        key_smoothing: ``None`` or a ``KeySmoothing`` config (``dict(thresh=1.0, key_norm='legacy_dim1')``).
        prob_background: ``None`` or a ``ProbBackground`` config: background class 0 where the best class
            probability is below its ``thresh`` (``apply_softmax=False`` after key smoothing, whose output
            is already probabilities).
        area_background: ``None`` or an ``AreaBackground`` config (needs a background class 0).
        feature_stride: Input pixels per feature cell (the segmentor sets it from the backbone).
        text_cache_dir: Optional on-disk text-embedding cache.
        align_corners: Of the bilinear resize.
        **kwargs: Other ``BaseDecodeHead`` arguments (``ignore_index``...).
    """

    def __init__(self, *, clip: Optional[Mapping[str, Any]] = None, class_table: Optional[str] = None,
                 classes: Optional[Sequence[Union[str, int]]] = None,
                 templates: Union[str, Sequence[str]] = 'maskclip85',
                 synonyms: Union[None, str, Mapping[str, str]] = None,
                 background: Union[None, str, Sequence[str]] = None,
                 prompt_denoising: Optional[Mapping[str, Any]] = None,
                 key_smoothing: Optional[Mapping[str, Any]] = None, feature_stride: Optional[int] = None,
                 text_cache_dir: Optional[str] = None, align_corners: bool = False,
                 prob_background: Optional[Mapping[str, Any]] = None,
                 area_background: Optional[Mapping[str, Any]] = None, **kwargs) -> None:
        if classes is not None and len(classes) == 0:
            raise ValueError('MaskCLIPHead: the class list is empty; give class names (or class_table=...).')
        if class_table is None and classes is None:
            raise ValueError('MaskCLIPHead needs class_table=... and/or classes=[...].')
        cfg = _clip_cfg(clip)
        model = build_clip(config_key='model.clip.pretrained', **cfg)
        tokenizer = get_tokenizer(cfg.get('model_name'))
        cache = TextEmbeddingCache(text_cache_dir) if text_cache_dir else None
        fg, bg = class_embeddings(model, tokenizer, classes=list(classes) if classes is not None else None,
                                  table=class_table, synonyms=synonyms, templates=templates,
                                  background=background, cache=cache, model_name=str(cfg.get('model_name')),
                                  device='cpu')
        num_fg, num_bg = int(fg.shape[0]), int(bg.shape[0])
        prob_bg = _build_post(prob_background, 'ProbBackground')
        area_bg = _build_post(area_background, 'AreaBackground')
        if prob_bg is not None and num_bg:
            raise ValueError('MaskCLIPHead: give either background words (background=...) or prob_background, '
                             'not both (each makes class 0)')
        if area_bg is not None and not (num_bg or prob_bg is not None):
            raise ValueError('MaskCLIPHead: area_background needs a background class 0 (background words or '
                             'prob_background)')
        num_classes = num_fg + (1 if num_bg or prob_bg is not None else 0)
        emb = int(fg.shape[1])
        for key in ('in_channels', 'channels', 'num_classes', 'init_cfg', 'dropout_ratio'):
            if key in kwargs:
                raise ValueError(f'MaskCLIPHead sets {key} itself (from the text embeddings); do not pass it.')
        kwargs.setdefault('loss_decode', dict(type='CrossEntropyLoss', avg_non_ignore=True))  # never used
        super().__init__(in_channels=emb, channels=emb, num_classes=num_classes, dropout_ratio=0.0,
                         align_corners=align_corners, init_cfg=None, **kwargs)
        self.conv_seg = None  # no trainable classifier: the text embeddings are the classifier
        self.register_buffer('text_embeddings', torch.cat([fg, bg]).float(), persistent=False)
        self.num_fg = num_fg
        self.num_bg = num_bg
        self.feature_stride = feature_stride
        self.pd = _build_post(prompt_denoising, 'PromptDenoising')
        self.ks = _build_post(key_smoothing, 'KeySmoothing')
        self.prob_bg = prob_bg
        self.area_bg = area_bg

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        """``(B, num_classes, h, w)`` logits from ``(dense, keys)``."""
        dense, keys = inputs[0], inputs[1]
        logits = cosine_logits(dense, self.text_embeddings)
        if self.pd is not None:
            logits = self.pd(logits)
        if self.ks is not None:
            logits = self.ks(logits, keys=keys)
        if self.num_bg:
            logits = merge_background(logits, num_fg=self.num_fg)
        if self.prob_bg is not None:  # spec §6.4: class 0 where the best probability is below thresh
            logits = self.prob_bg(logits)
        if self.area_bg is not None:
            logits = self.area_bg(logits)
        return logits

    def predict_by_feat(self, seg_logits: Tensor, batch_img_metas: List[dict]) -> Tensor:
        """Resize feature-resolution logits to the network input size (see the class doc)."""
        meta = batch_img_metas[0]
        if isinstance(meta['img_shape'], torch.Size):
            size = tuple(meta['img_shape'])  # slide inference
        elif 'pad_shape' in meta:
            size = tuple(meta['pad_shape'][:2])
        else:
            size = tuple(meta['img_shape'][:2])
        s = self.feature_stride
        if s:
            h, w = seg_logits.shape[-2:]
            full = F.interpolate(seg_logits, size=(h * s, w * s), mode='bilinear', align_corners=self.align_corners)
            return full[..., :size[0], :size[1]]
        return F.interpolate(seg_logits, size=size, mode='bilinear', align_corners=self.align_corners)

    def loss(self, *args, **kwargs):
        """MaskCLIP is training-free: there is nothing to train in this head."""
        raise NotImplementedError('MaskCLIPHead is training-free (zero-shot); use it with tools/test.py only.')


#: Where ``MaskCLIPSegmentor`` runs the head's post-processors in slide mode.
SLIDE_POST = ('window', 'image')


@MODELS.register_module()
class MaskCLIPSegmentor(EncoderDecoder):
    """Zero-shot MaskCLIP segmentor for mmseg's test tools (``EncoderDecoder`` subclass).

    Wires ``clip`` into the backbone and head, sets the data preprocessor's normalisation
    (CLIP mean/std, or ImageNet's with ``legacy_imagenet_norm=True`` as the official MaskCLIP
    configs), and refuses a sliding window larger than the image unless ``slide_clamp=True``
    (then mmseg's behaviour: the window shrinks to the image).

    Args:
        clip: ``build_clip`` arguments shared by backbone and head.
        backbone: ``MaskCLIPBackbone`` config (``type`` optional).
        decode_head: ``MaskCLIPHead`` config (``type`` optional).
        legacy_imagenet_norm: Normalise with ImageNet mean/std instead of CLIP's.
        slide_clamp: Allow windows larger than the image in slide mode (clamped).
        slide_post: Where the head's post-processors (PD, KS, background rules) run in slide mode
            (spec §1.8/§6.4): ``'window'`` (each window's logits, mmseg's slide inference) or
            ``'image'`` (dense features and keys of the windows are averaged on the image's feature
            grid, then the head runs once on the whole image; crop size and stride must be
            multiples of the backbone stride).
        data_preprocessor: ``SegDataPreProcessor`` config WITHOUT mean/std (set here).
        test_cfg: mmseg test config, ``dict(mode='whole')`` or
            ``dict(mode='slide', crop_size=(h, w), stride=(sh, sw))``.
        **kwargs: Other ``EncoderDecoder`` arguments.
    """

    def __init__(self, *, clip: Optional[Mapping[str, Any]] = None, backbone: Optional[Mapping[str, Any]] = None,
                 decode_head: Optional[Mapping[str, Any]] = None, legacy_imagenet_norm: bool = False,
                 slide_clamp: bool = False, slide_post: str = 'window',
                 data_preprocessor: Optional[Mapping[str, Any]] = None,
                 test_cfg: Optional[Mapping[str, Any]] = None, **kwargs) -> None:
        if decode_head is None:
            raise ValueError('MaskCLIPSegmentor needs decode_head=dict(class_table=... or classes=[...]).')
        clip_cfg = _clip_cfg(clip)
        backbone = dict(backbone or {})
        backbone.setdefault('type', 'MaskCLIPBackbone')
        backbone.setdefault('clip', clip_cfg)
        decode_head = dict(decode_head)
        decode_head.setdefault('type', 'MaskCLIPHead')
        decode_head.setdefault('clip', clip_cfg)
        dp = dict(data_preprocessor or dict(type='SegDataPreProcessor', bgr_to_rgb=True, pad_val=0,
                                            seg_pad_val=255))
        if 'mean' in dp or 'std' in dp:
            raise ValueError('MaskCLIPSegmentor sets the normalisation itself (CLIP mean/std, or ImageNet with '
                             'legacy_imagenet_norm=True); remove mean/std from data_preprocessor.')
        dp['mean'] = list(IMAGENET_MEAN_255 if legacy_imagenet_norm else CLIP_MEAN_255)
        dp['std'] = list(IMAGENET_STD_255 if legacy_imagenet_norm else CLIP_STD_255)
        super().__init__(backbone=backbone, decode_head=decode_head, data_preprocessor=dp,
                         test_cfg=ConfigDict(test_cfg or dict(mode='whole')), **kwargs)
        self.legacy_imagenet_norm = bool(legacy_imagenet_norm)
        self.slide_clamp = bool(slide_clamp)
        if slide_post not in SLIDE_POST:
            raise ValueError(f'MaskCLIPSegmentor slide_post must be one of {SLIDE_POST}, got {slide_post!r}')
        self.slide_post = slide_post
        if getattr(self.decode_head, 'feature_stride', None) is None:
            self.decode_head.feature_stride = int(getattr(self.backbone, 'stride', 0)) or None

    def slide_inference(self, inputs: Tensor, batch_img_metas: List[dict]) -> Tensor:
        """mmseg's sliding window, with a clear error for a window larger than the image."""
        h_crop, w_crop = self.test_cfg.crop_size
        h_img, w_img = inputs.shape[-2:]
        if (h_crop > h_img or w_crop > w_img) and not self.slide_clamp:
            raise ValueError(
                f'sliding window crop_size=({h_crop}, {w_crop}) is larger than the network input '
                f'({h_img}, {w_img}) of {batch_img_metas[0].get("img_path", "this image")}; use a smaller '
                "crop_size, test_cfg=dict(mode='whole'), or model.slide_clamp=True to shrink the window.")
        if self.slide_post == 'image':
            return self._slide_stitched_features(inputs)
        return super().slide_inference(inputs, batch_img_metas)

    def _slide_stitched_features(self, inputs: Tensor) -> Tensor:
        """Slide windows over the image, average their dense features and keys on the image's
        feature grid, run the head once (``slide_post='image'``)."""
        s = int(self.backbone.stride)
        h_stride, w_stride = self.test_cfg.stride
        h_crop, w_crop = self.test_cfg.crop_size
        if any(int(v) % s for v in (h_stride, w_stride, h_crop, w_crop)):
            raise ValueError(f"slide_post='image' needs test_cfg.crop_size ({h_crop}, {w_crop}) and stride "
                             f'({h_stride}, {w_stride}) that are multiples of the backbone stride {s}')
        b, _, h_img, w_img = inputs.shape
        x = F.pad(inputs, (0, (-w_img) % s, 0, (-h_img) % s))
        hp, wp = x.shape[-2:]
        h_crop, w_crop = min(h_crop, hp), min(w_crop, wp)
        h_grids = max(hp - h_crop + h_stride - 1, 0) // h_stride + 1
        w_grids = max(wp - w_crop + w_stride - 1, 0) // w_stride + 1
        dense_sum = keys_sum = None
        count = x.new_zeros((1, 1, hp // s, wp // s))
        for hi in range(h_grids):
            for wi in range(w_grids):
                y2, x2 = min(hi * h_stride + h_crop, hp), min(wi * w_stride + w_crop, wp)
                y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
                dense, keys = self.extract_feat(x[:, :, y1:y2, x1:x2])[:2]
                if dense_sum is None:
                    dense_sum = x.new_zeros((b, dense.shape[1], hp // s, wp // s))
                    keys_sum = x.new_zeros((b, keys.shape[1], hp // s, wp // s))
                win = (slice(None), slice(None), slice(y1 // s, y2 // s), slice(x1 // s, x2 // s))
                dense_sum[win] += dense
                keys_sum[win] += keys
                count[win] += 1
        logits = self.decode_head.forward([dense_sum / count, keys_sum / count])
        full = F.interpolate(logits, size=(hp, wp), mode='bilinear', align_corners=self.decode_head.align_corners)
        return full[..., :h_img, :w_img]
