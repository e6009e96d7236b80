"""Registered pseudo-label generators: CLIP-ES CAMs and the pseudo-mask maker.

Thin wrappers that read their config and call :class:`wsss_mmseg.cam.clip_es.CLIPESCAM`,
:mod:`wsss_mmseg.postprocess` and :mod:`wsss_mmseg.pseudo.mask`.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmseg.registry import MODELS

from ..cam.clip_es import CLIPESCAM
from ..clip.factory import DEFAULT_CLIP as _DEFAULT_CLIP
from ..clip.factory import build_clip, get_tokenizer
from ..pseudo.mask import make_pseudo_mask
from ..text import class_embeddings, class_names as table_class_names

__all__ = ['CLIPESGenerator', 'PseudoMaskMaker']



def resolve_device(device: Union[str, torch.device]) -> torch.device:
    """``'auto'`` -> the current CUDA device if CUDA is available, else the CPU."""
    if str(device) == 'auto':
        return torch.device('cuda', torch.cuda.current_device()) if torch.cuda.is_available() \
            else torch.device('cpu')
    return torch.device(device)


@MODELS.register_module()
class CLIPESGenerator:
    """CLIP-ES CAM generator: frozen CLIP + text embeddings + Softmax-GradCAM + CAA.

    Config example (VOC)::

        dict(type='CLIPESGenerator', clip=dict(model_name='ViT-B-16', pretrained='/path/ViT-B-16.pt'),
             class_table='voc20', synonyms='clip_es', templates='clip_es', background='clip_es',
             box_threshold=0.4, attn_layers=8, caa=True, fidelity=True, device='cpu')

    Args:
        clip: keyword arguments of :func:`wsss_mmseg.clip.factory.build_clip` (``model_name``,
            ``pretrained``, ``precision``, ...; ``device`` is taken from ``device``).
        class_table: class-name table (``'voc20'``, ``'coco80'``, ...); label ids index it.
        synonyms: synonym set name/alias (``'clip_es'``) or None.
        templates: template set name or list (``'clip_es'`` = ``'a clean origami {}.'``).
        background: background word set name/alias (``'clip_es'`` resolves per table) or list, or None.
        box_threshold: CAA box threshold (0.4 VOC, 0.7 COCO).
        attn_layers: number of final blocks averaged for CAA.
        caa: compute CAA-refined maps.
        fidelity: reproduce the official quirks (see :mod:`wsss_mmseg.cam.clip_es`).
        device: torch device, or ``'auto'`` (the current CUDA device when CUDA is available —
            under a distributed launcher each rank's own GPU — else the CPU).
        max_side: downscale policy bounding memory: an image whose longer side exceeds
            ``max_side`` is scaled down (aspect ratio kept) for the network, and its maps are
            resized back to the original size. Default 1024 px (at most 64x64 = 4096 ViT-B/16
            tokens); VOC and COCO images (<= 640 px) are never affected, so the default keeps
            fidelity. ``None`` disables the cap.
        batched_grad: ``True`` one vmapped backward for all labels, ``False`` one backward per
            label (last block only), ``None`` (default) = vmapped on CUDA, per label on CPU.

    Fidelity (``fidelity=True``, default; spec clip_es.md §11) reproduces the official quirks:
    the bilinear positional-embedding interpolation rounded to float16 on every call; CAA boxes
    from the uint8-truncated CAM with a strict ``> int(lambda * max)`` threshold, hole contours,
    and the ``min(x1, w-1)``/``min(y1, h-1)`` clamp (last patch row/column never in the mask).
    ``fidelity=False`` keeps the embedding in float32 and uses float-threshold, unclamped boxes.
    The CRF quirks (mean-subtracted BGR image with uint8 wrap-around, float16 unnormalised
    probabilities and unary) are switched by ``DenseCRF(fidelity=...)``.
    """

    def __init__(self, clip: Optional[Mapping[str, Any]] = None, class_table: str = 'voc20',
                 synonyms: Optional[str] = 'clip_es', templates: Union[str, Sequence[str]] = 'clip_es',
                 background: Union[None, str, Sequence[str]] = 'clip_es', box_threshold: float = 0.4,
                 attn_layers: int = 8, caa: bool = True, fidelity: bool = True, device: str = 'auto',
                 max_side: Optional[int] = 1024, batched_grad: Optional[bool] = None) -> None:
        clip_cfg = dict(_DEFAULT_CLIP if clip is None else clip)
        if 'device' in clip_cfg:
            raise ValueError("give the device with CLIPESGenerator(device=...), not inside clip=dict(...)")
        self.device = resolve_device(device)
        self.class_table = class_table
        self._class_names = list(table_class_names(class_table))
        model = build_clip(device=self.device, **clip_cfg)
        tokenizer = get_tokenizer(clip_cfg.get('model_name', _DEFAULT_CLIP['model_name']))
        fg, bg = class_embeddings(model, tokenizer, table=class_table, synonyms=synonyms, templates=templates,
                                  background=background, device=self.device)
        self.cam = CLIPESCAM(model.visual, fg, bg, logit_scale=model.logit_scale.exp(),
                             box_threshold=box_threshold, attn_layers=attn_layers, caa=caa, fidelity=fidelity,
                             batched_grad=batched_grad, max_side=max_side)

    @property
    def class_names(self) -> List[str]:
        """Class names of the table (label id ``i`` -> ``class_names[i]``, mask value ``i + 1``)."""
        return list(self._class_names)

    def generate(self, img_rgb_uint8: np.ndarray, label_ids: Sequence[int]) -> Dict[str, np.ndarray]:
        """CAMs of one image at its original size.

        Args:
            img_rgb_uint8: ``(H0, W0, 3)`` uint8 RGB image.
            label_ids: class indices (into :attr:`class_names`) present in the image, ``K >= 1``.

        Returns:
            dict with ``keys`` int64 ``(K,)``, ``cam`` float32 ``(K, H0, W0)`` (initial
            Softmax-GradCAM) and, with ``caa``, ``cam_refined`` float32 ``(K, H0, W0)``; values in ``[0, 1]``.
        """
        img = np.asarray(img_rgb_uint8)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f'expected an (H, W, 3) uint8 RGB image, got shape {img.shape} dtype {img.dtype}')
        x = self.cam.preprocess(img)
        out = self.cam(x, label_ids, img.shape[:2])
        return {k: out[k] for k in ('keys', 'cam', 'cam_refined') if k in out}


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
        if not bg_power > 0:
            raise ValueError(f'bg_power must be > 0, got {bg_power}')
        self.bg_power = float(bg_power)
        self.crf = MODELS.build(dict(crf)) if crf is not None else None
        self.ignore_below = ignore_below
        self.ignore_index = int(ignore_index)

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
