"""``SegmenterGenerator`` (MODELS): pseudo labels from a trained mmseg segmenter (e.g. SEC's).

Generator interface of ``tools/generate_pseudo.py`` (``generate(img, label_ids)``,
``class_names``). The segmenter's softmax ``p`` (channel 0 background) is restricted to the
image's labelled classes and returned as ``cam_k = p_k / (p_bg + max_j p_j)``: with
``PseudoMaskMaker(bg_power=1)`` (no CRF) the mask is exactly
``argmax(p_bg, p_labelled)``; a CRF sees ``(1 - max cam)`` as the background score.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmseg.registry import MODELS

from .generators import resolve_device
from .trained_model import build_trained_model
from ..generators import PseudoLabelGenerator

__all__ = ['SegmenterGenerator', 'probs_to_cams']


def probs_to_cams(probs: torch.Tensor, labels: Sequence[int], *, eps: float = 1e-8) -> torch.Tensor:
    """``(1 + C, H, W)`` softmax -> ``(K, H, W)`` maps ``p_k / (p_bg + max_j p_j)`` of ``labels``.

    Args:
        probs: Softmax with channel 0 = background, channel ``c + 1`` = class ``c``.
        labels: Class indices of the image.
        eps: Denominator epsilon.

    Returns:
        Maps in ``[0, 1]``.
    """
    fg = probs[[int(c) + 1 for c in labels]]
    return fg / (probs[0:1] + fg.amax(dim=0, keepdim=True) + eps)


@MODELS.register_module()
class SegmenterGenerator(PseudoLabelGenerator):
    """Pseudo labels from a trained mmseg segmenter with ``1 + K`` output channels.

    Args:
        checkpoint: Checkpoint path.
        model: The segmenter config, or
        config: a training config file whose ``model`` is used.
        max_side: Down-scale the input so that its longer side is at most this.
        class_table: Class table of the ``K`` foreground classes, or
        classes: explicit class names.
        device: torch device or ``'auto'``.
    """

    def __init__(self, checkpoint: str, model: Optional[Mapping] = None,
                 config: Optional[str] = None, max_side: Optional[int] = None,
                 class_table: Optional[str] = 'voc20', classes: Optional[Sequence[str]] = None,
                 device: str = 'auto') -> None:
        self.device = resolve_device(device)
        self.model = build_trained_model(checkpoint, model=model, config=config,
                                         device=self.device, what='segmenter')
        head = getattr(self.model, 'decode_head', None)
        if head is None or not hasattr(head, 'num_classes'):
            raise TypeError(f'{type(self.model).__name__} has no decode_head.num_classes; '
                            'SegmenterGenerator needs an mmseg EncoderDecoder')
        if classes is not None:
            names = [str(c) for c in classes]
        elif class_table is not None:
            from ..text import class_names as table_class_names
            names = list(table_class_names(class_table))
        else:
            names = [f'class_{i}' for i in range(head.num_classes - 1)]
        if len(names) + 1 != head.num_classes:
            raise ValueError(f'the segmenter has {head.num_classes} channels (background + '
                             f'{head.num_classes - 1}) but {len(names)} class names were given')
        self._class_names = names
        if max_side is not None and int(max_side) < 1:
            raise ValueError(f'max_side must be >= 1 or None, got {max_side}')
        self.max_side = None if max_side is None else int(max_side)

    @property
    def class_names(self) -> List[str]:
        """Foreground class names (label id ``i`` -> mask value ``i + 1``)."""
        return list(self._class_names)

    def generate_one(self, img_rgb_uint8: np.ndarray, label_ids: Sequence[int]) -> Dict[str, Any]:
        """Maps of the labelled classes at the image size.

        Args:
            img_rgb_uint8: ``(H0, W0, 3)`` uint8 RGB image.
            label_ids: Class indices present in the image (``K >= 1``), already validated and
                de-duplicated by the input preparer (:meth:`generate_image`, the pseudo-label job).

        Returns:
            ``dict(keys, cam (K, H0, W0) float32, cam_refined=None)``.
        """
        from .classic_cam_generator import _model_input
        img = np.asarray(img_rgb_uint8)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f'expected an (H, W, 3) uint8 RGB image, got {img.shape} {img.dtype}')
        labels = [int(c) for c in label_ids]
        h0, w0 = img.shape[:2]
        x = _model_input(self.model, img, self.device)[None]
        if self.max_side is not None and max(h0, w0) > self.max_side:
            s = self.max_side / max(h0, w0)
            x = F.interpolate(x, size=(max(1, round(h0 * s)), max(1, round(w0 * s))),
                              mode='bilinear', align_corners=False)
        meta = dict(img_shape=tuple(x.shape[2:]), ori_shape=tuple(x.shape[2:]),
                    pad_shape=tuple(x.shape[2:]))
        with torch.no_grad():
            logits = self.model.encode_decode(x, [meta])
            logits = F.interpolate(logits, size=(h0, w0), mode='bilinear', align_corners=False)
        cams = probs_to_cams(torch.softmax(logits[0].float(), dim=0), labels)
        return dict(keys=np.asarray(labels, dtype=np.int64),
                    cam=cams.cpu().numpy().astype(np.float32), cam_refined=None)
