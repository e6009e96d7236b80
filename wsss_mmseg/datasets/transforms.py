"""Pipeline transforms for training on pseudo masks with confidence maps.

``LoadPseudoLabel`` (use it instead of ``LoadAnnotations``, right after
``LoadImageFromFile``) reads

* the pseudo mask ``results['seg_map_path']`` (palette or 8-bit PNG: 0 background,
  ``k + 1`` class ``k``, 255 ignore) into ``results['gt_seg_map']`` (uint8), and
* the confidence map ``results['conf_path']`` (16-bit PNG holding
  ``round(conf * 65535)``, or a float ``.npy``) into ``results['gt_confidence']``
  (float32 in ``[0, 1]``),

and appends both keys to ``results['seg_fields']``. mmseg's geometric transforms
(``Resize`` (also inside ``RandomResize``), ``RandomCrop``, ``RandomFlip``,
``RandomRotate``, ``RandomRotFlip``, ``RandomMosaic``, ``SegRescale`` ...) loop over
``seg_fields`` and apply the same nearest-neighbour geometry to every field, so
the confidence stays aligned with the label pixel for pixel. mmcv's ``Pad`` only
pads ``gt_seg_map`` (right/bottom); ``PackSegInputsWithConfidence`` completes the
confidence with zeros there.

Transforms that only touch ``gt_seg_map`` (mmcv's own ``Resize``/``RandomFlip``,
which ``RandomResize`` builds when no ``default_scope='mmseg'`` is active, or a
custom transform) would silently misalign the two maps. To catch that,
``LoadPseudoLabel`` also stores a copy of the mask as a third seg field
(:data:`ALIGN_CHECK_KEY`) and ``PackSegInputsWithConfidence`` checks that the
label still equals it (any transform that moves the confidence moves the copy
the same way); a mismatch raises ``ValueError``. ``check_alignment=False``
disables the copy.

``PackSegInputsWithConfidence`` (use it instead of ``PackSegInputs``) packs like
mmseg's ``PackSegInputs`` and attaches ``data_sample.gt_confidence =
PixelData(data=float32 tensor (1, H, W))``, with confidence 0 wherever the label
is ``ignore_index`` (255: ignored pixels, mmcv ``Pad`` / ``RandomRotate``
borders) and values clamped to ``[0, 1]``. Without ``gt_confidence`` in the
results (e.g. validation with ``LoadAnnotations``) it behaves exactly like
``PackSegInputs``.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.structures import PixelData
from mmseg.datasets.transforms import PackSegInputs
from mmseg.registry import TRANSFORMS

from ..pseudo.io import read_confidence_png, read_mask_png

__all__ = ['ALIGN_CHECK_KEY', 'load_confidence_map', 'LoadPseudoLabel',
           'PackSegInputsWithConfidence']

#: Seg field holding a copy of the mask, used to detect misaligning transforms.
ALIGN_CHECK_KEY = 'gt_seg_map_align_check'

#: mmseg's default meta keys of PackSegInputs, plus the confidence file.
_DEFAULT_META_KEYS = tuple(
    inspect.signature(PackSegInputs.__init__).parameters['meta_keys'].default) + ('conf_path',)


def _check_confidence_array(conf: np.ndarray, path: Union[str, os.PathLike]) -> np.ndarray:
    if conf.ndim != 2:
        raise ValueError(f'confidence map {path} must be 2-D (H, W), got shape {conf.shape}')
    if not np.issubdtype(conf.dtype, np.floating):
        raise ValueError(f'confidence map {path} has dtype {conf.dtype}; expected floating point '
                         'values in [0, 1]')
    conf = conf.astype(np.float32, copy=False)
    bad = ~((conf >= 0) & (conf <= 1))  # NaN counts as bad
    if bad.any():
        finite = conf[np.isfinite(conf)]
        rng = f'{finite.min():.6g}..{finite.max():.6g}' if finite.size else 'no finite values'
        raise ValueError(f'confidence map {path} has {int(bad.sum())} value(s) outside [0, 1] '
                         f'(finite range {rng})')
    return conf


def load_confidence_map(path: Union[str, os.PathLike]) -> np.ndarray:
    """Read a confidence map.

    Args:
        path: A 16-bit PNG written by :func:`wsss_mmseg.pseudo.io.write_confidence_png`
            (value ``v`` -> ``v / 65535``), or a ``.npy`` float array ``(H, W)``.

    Returns:
        ``float32`` array ``(H, W)`` in ``[0, 1]``.

    Raises:
        FileNotFoundError: Missing file.
        ValueError: Not 2-D, not 16-bit/float, or values outside ``[0, 1]``
            (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'confidence file not found: {path}')
    if path.suffix.lower() == '.npy':
        conf = np.load(path, allow_pickle=False)
    else:
        conf = read_confidence_png(path)
    return _check_confidence_array(np.asarray(conf), path)


@TRANSFORMS.register_module()
class LoadPseudoLabel(BaseTransform):
    """Load a pseudo mask and its confidence map (see the module docstring).

    Required keys: ``img_shape`` (from ``LoadImageFromFile``), ``seg_map_path``,
    ``conf_path``, ``seg_fields``. Added keys: ``gt_seg_map`` (uint8),
    ``gt_confidence`` (float32) and, with ``check_alignment``,
    :data:`ALIGN_CHECK_KEY`.

    Args:
        check_alignment: Keep a copy of the mask in ``seg_fields`` so that
            ``PackSegInputsWithConfidence`` can detect transforms that move the
            label but not the confidence.
    """

    def __init__(self, *, check_alignment: bool = True) -> None:
        super().__init__()
        self.check_alignment = bool(check_alignment)

    def transform(self, results: dict) -> dict:
        """Load the mask and the confidence into ``results``.

        Args:
            results: Pipeline dict.

        Returns:
            The updated dict.

        Raises:
            KeyError: ``img_shape``/``seg_map_path``/``conf_path`` missing.
            FileNotFoundError: Missing mask or confidence file.
            ValueError: Image/mask/confidence sizes differ, bad confidence,
                or ``reduce_zero_label``/``label_map`` requested.
        """
        if 'img_shape' not in results:
            raise KeyError('LoadPseudoLabel must run after LoadImageFromFile (no img_shape in '
                           'results)')
        for key in ('seg_map_path', 'conf_path'):
            if not results.get(key):
                raise KeyError(f'LoadPseudoLabel needs results[{key!r}]; use a dataset that '
                               'provides it, e.g. PseudoLabelSegDataset')
        seg_path, conf_path = results['seg_map_path'], results['conf_path']
        if results.get('reduce_zero_label'):
            raise ValueError(f'reduce_zero_label is not supported for pseudo masks ({seg_path}): '
                             'label 0 is the background class')
        if results.get('label_map'):
            raise ValueError(f'label_map is not supported for pseudo masks ({seg_path}): their '
                             'values already index the dataset classes')
        mask = read_mask_png(seg_path)
        conf = load_confidence_map(conf_path)
        img_hw = tuple(int(v) for v in results['img_shape'][:2])
        if mask.shape != img_hw or conf.shape != img_hw:
            raise ValueError(
                f'size mismatch: image {results.get("img_path")} is {img_hw[0]}x{img_hw[1]}, '
                f'mask {seg_path} is {mask.shape[0]}x{mask.shape[1]}, confidence {conf_path} '
                f'is {conf.shape[0]}x{conf.shape[1]} (H x W)')
        results['gt_seg_map'] = mask
        results['gt_confidence'] = conf
        fields = results.setdefault('seg_fields', [])
        keys = ['gt_seg_map', 'gt_confidence']
        if self.check_alignment:
            results[ALIGN_CHECK_KEY] = mask.copy()
            keys.append(ALIGN_CHECK_KEY)
        for key in keys:
            if key not in fields:
                fields.append(key)
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(check_alignment={self.check_alignment})'


@TRANSFORMS.register_module()
class PackSegInputsWithConfidence(PackSegInputs):
    """``PackSegInputs`` that also packs ``gt_confidence`` (see the module docstring).

    Args:
        meta_keys: Meta keys to pack (mmseg's defaults plus ``conf_path``).
        ignore_index: Label value whose confidence is set to 0.
    """

    def __init__(self, meta_keys: Sequence[str] = _DEFAULT_META_KEYS, *,
                 ignore_index: int = 255) -> None:
        super().__init__(meta_keys=tuple(meta_keys))
        self.ignore_index = int(ignore_index)

    def _aligned_confidence(self, results: dict) -> np.ndarray:
        where = results.get('conf_path') or results.get('img_path')
        label = results.get('gt_seg_map')
        if label is None:
            raise ValueError(f'gt_confidence without gt_seg_map in results ({where})')
        label = np.asarray(label)
        conf = np.asarray(results['gt_confidence'], dtype=np.float32)
        if conf.ndim == 3 and conf.shape[2] == 1:
            conf = conf[..., 0]
        if label.ndim != 2 or conf.ndim != 2:
            raise ValueError(f'gt_seg_map {label.shape} and gt_confidence {conf.shape} must be '
                             f'2-D ({where})')
        check = results.get(ALIGN_CHECK_KEY)
        h, w = conf.shape
        if conf.shape != label.shape:
            # mmcv's Pad pads gt_seg_map (right/bottom) but no other seg field.
            pad_shape = results.get('pad_shape')
            padded = (pad_shape is not None and tuple(label.shape) == tuple(pad_shape[:2])
                      and h <= label.shape[0] and w <= label.shape[1])
            if not padded:
                raise ValueError(
                    f'gt_confidence {conf.shape} and gt_seg_map {label.shape} differ in size '
                    f'({where}): a transform resized or cropped the label but not the '
                    "confidence; use mmseg's transforms (default_scope='mmseg'), which "
                    "process every key of results['seg_fields']")
            conf = np.pad(conf, ((0, label.shape[0] - h), (0, label.shape[1] - w)),
                          constant_values=0.0)
        if check is not None and not np.array_equal(np.asarray(check), label[:h, :w]):
            raise ValueError(
                f'gt_seg_map no longer lines up with gt_confidence ({where}): a transform moved '
                "the label but not the other keys of results['seg_fields']; use mmseg's "
                "transforms (default_scope='mmseg')")
        conf = conf.copy()
        if not np.isfinite(conf).all():
            raise ValueError(f'gt_confidence contains NaN or infinite values ({where})')
        conf[label == self.ignore_index] = 0.0
        return np.clip(conf, 0.0, 1.0)

    def transform(self, results: dict) -> dict:
        """Pack like ``PackSegInputs`` and attach ``gt_confidence``.

        Args:
            results: Pipeline dict.

        Returns:
            ``dict(inputs=..., data_samples=SegDataSample)``; the sample has
            ``gt_confidence`` when ``results`` holds one.

        Raises:
            ValueError: Confidence and label cannot be aligned.
        """
        packed = super().transform(results)
        if results.get('gt_confidence') is None:
            return packed
        conf = self._aligned_confidence(results)
        packed['data_samples'].gt_confidence = PixelData(
            data=torch.from_numpy(np.ascontiguousarray(conf, dtype=np.float32))[None])
        return packed

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(meta_keys={self.meta_keys}, '
                f'ignore_index={self.ignore_index})')
