"""``PseudoLabelDataPreProcessor``: mmseg's data preprocessor plus confidence padding.

mmseg's :class:`SegDataPreProcessor` stacks the images of a training batch and
pads images and ``gt_sem_seg`` at the right and bottom (``stack_batch``; labels
with ``seg_pad_val``, normally 255). It does not know ``gt_confidence``. This
subclass runs the parent unchanged and then, in training mode:

1. pads each sample's ``gt_confidence`` (``(1, h, w)``, from
   ``PackSegInputsWithConfidence``) at the right and bottom with **0** to the
   padded label size, checking that the padding equals the one applied to the
   label (``padding_size`` in the sample's metainfo);
2. stacks them to ``(B, H, W)`` and publishes the tensor in
   :mod:`wsss_mmseg.models.batch_context` for ``CGLLoss``.

In evaluation mode (``training=False``) and for batches whose samples carry no
``gt_confidence`` the context is cleared (``CGLLoss`` then raises unless
``mu == 0`` and ``soft=False``). A batch where only some samples carry a
confidence is an error. ``batch_augments`` are refused: they would move the
labels without the confidence.
"""
from __future__ import annotations

from typing import Any, Dict

import torch
import torch.nn.functional as F
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.registry import MODELS

from . import batch_context

__all__ = ['PseudoLabelDataPreProcessor']


@MODELS.register_module()
class PseudoLabelDataPreProcessor(SegDataPreProcessor):
    """``SegDataPreProcessor`` that also pads ``gt_confidence`` and publishes it for ``CGLLoss``.

    Args:
        **kwargs: Arguments of mmseg's ``SegDataPreProcessor`` (``mean``, ``std``,
            ``size``, ``size_divisor``, ``pad_val``, ``seg_pad_val``,
            ``bgr_to_rgb``, ``test_cfg`` ...); ``batch_augments`` must be None.
    """

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get('batch_augments') is not None:
            raise ValueError('PseudoLabelDataPreProcessor does not support batch_augments: they '
                             'would transform gt_sem_seg without gt_confidence')
        super().__init__(**kwargs)

    def forward(self, data: dict, training: bool = False) -> Dict[str, Any]:
        """Run ``SegDataPreProcessor`` then pad/publish the batch confidence.

        Args:
            data: A batch from the dataloader.
            training: Training mode (publish the confidence) or not (clear it).

        Returns:
            ``dict(inputs=..., data_samples=...)`` as the parent; in training
            mode each ``gt_confidence`` is padded to its ``gt_sem_seg`` size.

        Raises:
            ValueError: Mixed batch, a confidence without label, or a confidence
                whose padding would not match the label's.
        """
        batch_context.clear()
        out = super().forward(data, training)
        if not training:
            return out
        samples = out['data_samples']
        has_conf = ['gt_confidence' in s for s in samples]
        if not any(has_conf):
            return out
        if not all(has_conf):
            raise ValueError(f'{sum(has_conf)} of {len(samples)} samples of the batch carry '
                             'gt_confidence; all or none must')
        confs = []
        for i, sample in enumerate(samples):
            if 'gt_sem_seg' not in sample:
                raise ValueError(f'sample {i} has gt_confidence but no gt_sem_seg')
            label_hw = tuple(sample.gt_sem_seg.shape)
            conf = sample.gt_confidence.data
            if conf.ndim != 3 or conf.shape[0] != 1:
                raise ValueError(f'sample {i}: gt_confidence must have shape (1, H, W), got '
                                 f'{tuple(conf.shape)}')
            pad_h = label_hw[0] - conf.shape[1]
            pad_w = label_hw[1] - conf.shape[2]
            expected = sample.metainfo.get('padding_size')
            if pad_h < 0 or pad_w < 0 or (
                    expected is not None and tuple(expected) != (0, pad_w, 0, pad_h)):
                raise ValueError(
                    f'sample {i} ({sample.metainfo.get("img_path")}): gt_confidence '
                    f'{tuple(conf.shape[1:])} does not pad to gt_sem_seg {label_hw} with the '
                    f'label padding {expected} (right, bottom)')
            if pad_h or pad_w:
                conf = F.pad(conf, (0, pad_w, 0, pad_h), value=0.0)
                # PixelData checks new fields against the old shape: drop it first.
                del sample.gt_confidence.data
                sample.gt_confidence.data = conf
            confs.append(conf[0])
        batch_context.set_confidence(torch.stack(confs, dim=0))
        return out
