"""Registered pseudo-label generators: CLIP-ES CAMs and the pseudo-mask maker.

Thin wrappers that read their config and call :class:`wsss_mmseg.cam.clip_es.CLIPESCAM`,
:mod:`wsss_mmseg.postprocess` and :mod:`wsss_mmseg.pseudo.mask`.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmseg.registry import MODELS

from ..cam.clip_es import CLIPESCAM, clip_es_preprocess
from ..clip.config import merge_clip_cfg
from ..clip.factory import build_clip, get_tokenizer
from ..generators import InputPreparer, PseudoLabelGenerator
from ..pseudo.mask import make_pseudo_mask
from ..pseudo.options import PseudoConfigError, check_fraction, check_int, check_number
from ..text import class_embeddings, class_names as table_class_names

__all__ = ['CLIPESGenerator', 'CLIPESInputPreparer', 'PseudoMaskMaker', 'is_out_of_memory']



def resolve_device(device: Union[str, torch.device]) -> torch.device:
    """``'auto'`` -> the current CUDA device if CUDA is available, else the CPU."""
    if str(device) == 'auto':
        return torch.device('cuda', torch.cuda.current_device()) if torch.cuda.is_available() \
            else torch.device('cpu')
    return torch.device(device)


class CLIPESInputPreparer(InputPreparer):
    """CLIP-ES item: the network input from the full image (official bicubic resize), and the
    working-size image for the CRF. Picklable (runs in data-loading workers).

    Args:
        num_classes: Number of foreground classes.
        max_side: Longer-side cap of the network input and the working size.
        patch: ViT patch size.
    """

    def __init__(self, num_classes: int, max_side: Optional[int], patch: int) -> None:
        super().__init__(num_classes, max_side)
        self.patch = int(patch)

    def __call__(self, img: np.ndarray, label_ids: Sequence[int]) -> Dict[str, Any]:
        item = super().__call__(img, label_ids)
        item['net_input'] = clip_es_preprocess(np.asarray(img), patch=self.patch, max_side=self.max_side)
        return item


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a CUDA (or other accelerator) out-of-memory error."""
    oom = getattr(torch.cuda, 'OutOfMemoryError', None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and 'out of memory' in str(exc).lower()


_AUTOCAST = {None: None, 'fp16': torch.float16, 'bf16': torch.bfloat16}


@MODELS.register_module()
class CLIPESGenerator(PseudoLabelGenerator):
    """CLIP-ES CAM generator: frozen CLIP + text embeddings + Softmax-GradCAM + CAA, by batch.

    Config example (VOC)::

        dict(type='CLIPESGenerator', clip=dict(model_name='ViT-B-16', pretrained='/path/ViT-B-16.pt'),
             class_table='voc20', synonyms='clip_es', templates='clip_es', background='clip_es',
             box_threshold=0.4, attn_layers=8, caa=True, fidelity=True, device='auto',
             batch_size=8, max_tokens_per_batch=16384)

    Args:
        clip: keyword arguments of :func:`wsss_mmseg.clip.factory.build_clip` (``model_name``,
            ``pretrained``, ``precision``, ...; ``device`` is taken from ``device``).
        class_table: class-name table (``'voc20'``, ``'coco80'``, ...); label ids index it. The job
            checks that the dataset's class names match these by name (spellings included).
        synonyms: synonym set name/alias (``'clip_es'``) or None.
        templates: template set name or list (``'clip_es'`` = ``'a clean origami {}.'``).
        background: background word set name/alias (``'clip_es'`` resolves per table) or list, or None.
        box_threshold: CAA box threshold (0.4 VOC, 0.7 COCO).
        attn_layers: number of final blocks averaged for CAA.
        caa: compute CAA-refined maps.
        fidelity: reproduce the official quirks (see :mod:`wsss_mmseg.cam.clip_es`).
        device: torch device, or ``'auto'`` (the current CUDA device when CUDA is available —
            under a distributed launcher each rank's own GPU — else the CPU).
        max_side: bounds memory: an image whose longer side exceeds ``max_side`` is scaled down
            (aspect ratio kept) for the network, and its maps, the CRF and the confidence are
            computed at that working size; only the final label and confidence maps are
            upsampled to the image size. Default 1024 px (at most 64x64 = 4096 ViT-B/16
            tokens); VOC and COCO images (<= 640 px) are never affected. ``None`` disables it.
        batched_grad: ``True`` one vmapped backward for all labels, ``False`` one backward per
            label round (last block only), ``None`` (default) = vmapped on CUDA, per round on CPU.
        batch_size: most images per forward pass (the job hands batches of this size). ``None``
            (default): 8 on CUDA, 1 on the CPU -- measured on a 2-core CPU with ViT-B/16, a batch
            of 2-3 VOC images made the trunk 10-20 % slower per image (larger attention matrices
            fall out of cache; the CPU's matrix units are already busy with one image).
        max_tokens_per_batch: token budget of one pass: ``len(group) * max tokens <= budget``
            (an image above it runs alone). Bounds memory for mixed sizes.
        max_pad_ratio: images are grouped by token count; a group pads its images to the
            longest one only while ``longest <= max_pad_ratio * shortest``. The default 1.0 groups
            equal token counts only (VOC's 500x375 and 375x500 photos both have 768 patches):
            results equal one image at a time exactly on the CPU. Above 1, padded images differ
            by float rounding, which CAA's min-max normalisation can amplify (measured up to
            2e-5 in ``cam_refined`` with a tiny random CLIP; ``cam`` within 1e-6).
        autocast: ``None`` (fp32), ``'fp16'`` or ``'bf16'``: mixed precision for the frozen
            trunk and the last block (CAM normalisation and CAA stay fp32).

    Fidelity (``fidelity=True``, default; spec clip_es.md §11) reproduces the official quirks:
    the bilinear positional-embedding interpolation rounded to float16 on every call; CAA boxes
    from the uint8-truncated CAM with a strict ``> int(lambda * max)`` threshold, hole contours,
    and the ``min(x1, w-1)``/``min(y1, h-1)`` clamp (last patch row/column never in the mask).
    ``fidelity=False`` keeps the embedding in float32 and uses float-threshold, unclamped boxes.
    The CRF quirks (mean-subtracted BGR image with uint8 wrap-around, float16 unnormalised
    probabilities and unary) are switched by ``DenseCRF(fidelity=...)``.

    Batches: images are bucketed by token count and run through
    :meth:`wsss_mmseg.cam.clip_es.CLIPESCAM.forward_batch`; a CUDA out-of-memory error
    splits the group in halves and retries (an image alone that still does not fit raises).
    """

    def __init__(self, clip: Optional[Mapping[str, Any]] = None,
                 class_table: str = 'voc20',
                 synonyms: Optional[str] = 'clip_es', templates: Union[str, Sequence[str]] = 'clip_es',
                 background: Union[None, str, Sequence[str]] = 'clip_es', box_threshold: float = 0.4,
                 attn_layers: int = 8, caa: bool = True, fidelity: bool = True, device: str = 'auto',
                 max_side: Optional[int] = 1024, batched_grad: Optional[bool] = None,
                 batch_size: Optional[int] = None, max_tokens_per_batch: int = 16384, max_pad_ratio: float = 1.0,
                 autocast: Optional[str] = None) -> None:
        box_threshold = check_number('generator.box_threshold', box_threshold, lo=0.0, hi=1.0, hi_open=True)
        attn_layers = check_int('generator.attn_layers', attn_layers, lo=1)
        if max_side is not None:
            max_side = check_int('generator.max_side', max_side, lo=16)
        if batch_size is not None:
            batch_size = check_int('generator.batch_size', batch_size, lo=1)
        self.max_tokens_per_batch = check_int('generator.max_tokens_per_batch', max_tokens_per_batch, lo=1)
        self.max_pad_ratio = check_number('generator.max_pad_ratio', max_pad_ratio, lo=1.0)
        if autocast not in _AUTOCAST:
            raise ValueError(f"generator.autocast must be None, 'fp16' or 'bf16', got {autocast!r}")
        self.autocast = autocast
        clip_cfg = merge_clip_cfg(clip)
        if 'device' in clip_cfg:
            raise ValueError("give the device with CLIPESGenerator(device=...), not inside clip=dict(...)")
        self.device = resolve_device(device)
        self.batch_size = batch_size if batch_size is not None else (8 if self.device.type == 'cuda' else 1)
        self.class_table = class_table
        self._class_names = list(table_class_names(class_table))
        model = build_clip(device=self.device, config_key='generator.clip.pretrained', **clip_cfg)
        tokenizer = get_tokenizer(clip_cfg.get('model_name'))
        from ..clip.weights_id import weights_content_id
        wid = weights_content_id(clip_cfg.get('pretrained'), clip_cfg.get('model_name'))
        fg, bg = class_embeddings(model, tokenizer, table=class_table, synonyms=synonyms, templates=templates,
                                  background=background, device=self.device, weights_id=wid,
                                  model_name=clip_cfg.get('model_name'))
        self.max_side = max_side
        self.cam = CLIPESCAM(model.visual, fg, bg, logit_scale=model.logit_scale.exp(),
                             box_threshold=box_threshold, attn_layers=attn_layers, caa=caa, fidelity=fidelity,
                             batched_grad=batched_grad, max_side=max_side)

    def input_preparer(self) -> CLIPESInputPreparer:
        """Picklable preparer: network input (full image, bicubic) + working-size image."""
        return CLIPESInputPreparer(self.num_classes, self.max_side, int(self.cam.vit.patch_size))

    def _tokens(self, item: Mapping[str, Any]) -> int:
        x = item['net_input']
        p = int(self.cam.vit.patch_size)
        return 1 + (int(x.shape[-2]) // p) * (int(x.shape[-1]) // p)

    def buckets(self, items: Sequence[Mapping[str, Any]]) -> List[List[int]]:
        """Group item indices by token count under ``batch_size``/``max_tokens_per_batch``/padding."""
        order = sorted(range(len(items)), key=lambda i: -self._tokens(items[i]))
        groups: List[List[int]] = []
        cur: List[int] = []
        t_max = 0
        for i in order:
            t = self._tokens(items[i])
            if cur and (len(cur) + 1 > self.batch_size or (len(cur) + 1) * t_max > self.max_tokens_per_batch
                        or t_max > self.max_pad_ratio * t):
                groups.append(cur)
                cur = []
            if not cur:
                t_max = t
            cur.append(i)
        if cur:
            groups.append(cur)
        return groups

    def _forward_group(self, items: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
        dtype = _AUTOCAST[self.autocast]
        ctx = torch.autocast(device_type=self.device.type, dtype=dtype) if dtype is not None \
            else contextlib.nullcontext()
        try:
            with ctx:
                return self.cam.forward_batch([it['net_input'] for it in items],
                                              [it['label_ids'] for it in items],
                                              [tuple(it['work_hw']) for it in items])
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled
            if len(items) == 1 or not is_out_of_memory(exc):
                raise
        if self.device.type == 'cuda':
            torch.cuda.empty_cache()
        half = len(items) // 2
        return self._forward_group(items[:half]) + self._forward_group(items[half:])

    def generate(self, items: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
        """CAMs of a batch of prepared items at their working sizes.

        Args:
            items: Items of :meth:`input_preparer` (any mix of sizes).

        Returns:
            Per item ``dict(keys int64 (K,), cam float32 (K, h, w), cam_refined float32 (K, h, w) or
            None)`` in ``[0, 1]``, in input order.
        """
        out: List[Optional[Dict[str, Any]]] = [None] * len(items)
        for group in self.buckets(items):
            for i, res in zip(group, self._forward_group([items[i] for i in group])):
                res.setdefault('cam_refined', None)
                out[i] = res
        return out  # type: ignore[return-value]


@MODELS.register_module()
class PseudoMaskMaker:
    """Pseudo mask + confidence from a generator result (CLIP-ES §7-8).

    Uses ``result['cam_refined']`` when present, else ``result['cam']``.

    Args:
        bg_power: background exponent without CRF (``(1 - max_k cam_k) ** bg_power``).
        crf: None or a config of a registered CRF (``dict(type='DenseCRF', ...)``).
        ignore_below: confidence threshold (0.95 with the CRF = official CGL masks) or None.
        ignore_index: label of ignored pixels (255).
    """

    def __init__(self, bg_power: float = 1.0, crf: Optional[Mapping[str, Any]] = None,
                 ignore_below: Optional[float] = None, ignore_index: int = 255) -> None:
        self.bg_power = check_number('mask_maker.bg_power', bg_power, lo=0.0, lo_open=True)
        if crf is not None and not isinstance(crf, Mapping):
            raise PseudoConfigError(f"mask_maker.crf must be None or a dict(type='DenseCRF', ...), got {crf!r}")
        self.crf = MODELS.build(dict(crf)) if crf is not None else None
        self.ignore_below = None if ignore_below is None else check_fraction('mask_maker.ignore_below',
                                                                            ignore_below)
        self.ignore_index = check_int('mask_maker.ignore_index', ignore_index, lo=0, hi=255)

    def __call__(self, result_dict: Mapping[str, Any], img_rgb_uint8: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Make the mask.

        Args:
            result_dict: output of :meth:`CLIPESGenerator.generate` (``keys``, ``cam``[, ``cam_refined``]).
            img_rgb_uint8: ``(H0, W0, 3)`` uint8 RGB image (used by the CRF).

        Returns:
            ``(mask (H0, W0) uint8, confidence (H0, W0) float32)``.
        """
        for key in ('keys', 'cam'):
            if key not in result_dict:
                raise KeyError(f'result_dict lacks {key!r} (has {sorted(result_dict)})')
        cams = result_dict.get('cam_refined')
        if cams is None:
            cams = result_dict['cam']
        if isinstance(cams, torch.Tensor):
            cams = cams.detach().float().cpu().numpy()
        img = np.asarray(img_rgb_uint8)
        if np.asarray(cams).shape[1:] != img.shape[:2]:
            raise ValueError(f'maps of shape {np.asarray(cams).shape} do not match the image {img.shape}')
        q = self.crf(cams, img) if self.crf is not None else None
        return make_pseudo_mask(cams, result_dict['keys'], bg_power=self.bg_power, crf_Q=q,
                                ignore_below=self.ignore_below, ignore_index=self.ignore_index)
