"""The pseudo-label generator contract: prepared inputs in, class maps out, by batch.

Every generator (CLIP-ES, MaskCLIP, PACL, the classic CAM generators, test fakes)
implements :class:`PseudoLabelGenerator`. The pseudo-label job talks to generators
only through it:

1. ``prepare = generator.input_preparer()`` -- a small picklable callable run in the
   data-loading workers: ``prepare(img, label_ids) -> item`` validates the labels
   (:func:`validate_labels`, the one label check of the package; the CLIP-ES pipeline class
   :class:`wsss_mmseg.cam.CLIPESCAM` calls it too, for its direct callers), and returns the item dict
   with at least

   * ``image``     ``(h, w, 3)`` uint8 RGB at the **working size** (see below),
   * ``label_ids`` the de-duplicated labels (first-occurrence order, ``K >= 1``),
   * ``image_hw``  ``(H0, W0)`` of the decoded image, ``work_hw`` ``(h, w)``,

   plus generator-specific inputs (CLIP-ES: the network input tensor).
2. ``generator.generate(items) -> results``: one result per item, in order, for a
   batch of items of mixed sizes. A result is
   ``dict(keys int64 (K,), cam float32 (K, h, w) in [0, 1], cam_refined (K, h, w) or None)``
   at the item's working size; generators may add extras. A batch gives the same
   results as its items one at a time (up to float rounding of batched kernels;
   the contract test checks 1e-5 on the CPU).

Working size: ``work_size(H0, W0, max_side)`` is the image size, scaled down (aspect
ratio kept) only when the longer side exceeds the generator's ``max_side``. All
per-pixel work after the network (maps, CRF, confidence) happens at the working
size and only the final label and confidence maps are upsampled to ``(H0, W0)``,
so memory per image is bounded whatever the photo size. VOC and COCO images
(<= 640 px) are never scaled with the default ``max_side=1024``.

Per-image generators implement :meth:`PseudoLabelGenerator.generate_one`; batched
ones override :meth:`PseudoLabelGenerator.generate` (and usually
:meth:`input_preparer`). :meth:`generate_image` is the convenience entry point for
one image. This module is pure (no mmseg import).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ['PseudoLabelGenerator', 'InputPreparer', 'validate_image', 'validate_labels',
           'work_size', 'resize_rgb']


def work_size(h0: int, w0: int, max_side: Optional[int]) -> Tuple[int, int]:
    """Working size of an ``h0 x w0`` image under a longer-side cap.

    Args:
        h0: Image height.
        w0: Image width.
        max_side: Cap of the longer side in pixels, or None (no cap).

    Returns:
        ``(h0, w0)`` when ``max(h0, w0) <= max_side`` (or no cap), else
        ``(max(1, round(h0 * s)), max(1, round(w0 * s)))`` with ``s = max_side / max(h0, w0)``.
    """
    if h0 < 1 or w0 < 1:
        raise ValueError(f'image size must be positive, got {h0}x{w0}')
    if max_side is None or max(h0, w0) <= max_side:
        return int(h0), int(w0)
    s = max_side / max(h0, w0)
    return max(1, int(round(h0 * s))), max(1, int(round(w0 * s)))


def resize_rgb(img: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
    """PIL bilinear (antialiased) resize of a uint8 RGB image to ``(h, w)``; identity at its size."""
    if tuple(img.shape[:2]) == tuple(hw):
        return img
    from PIL import Image
    pil = Image.fromarray(np.ascontiguousarray(img), mode='RGB')
    return np.asarray(pil.resize((int(hw[1]), int(hw[0])), Image.BILINEAR))


def validate_image(img: Any) -> np.ndarray:
    """Check an ``(H, W, 3)`` uint8 RGB image.

    Args:
        img: The image.

    Returns:
        It as a numpy array.

    Raises:
        ValueError: Wrong shape or dtype.
    """
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f'expected an (H, W, 3) uint8 RGB image, got shape {arr.shape} dtype {arr.dtype}')
    return arr


def validate_labels(label_ids: Sequence[Any], num_classes: int) -> List[int]:
    """De-duplicate image-level labels in first-occurrence order and check their range.

    Args:
        label_ids: Class indices present in the image (0-based, background excluded).
        num_classes: Number of foreground classes of the generator.

    Returns:
        The unique labels (``K >= 1``).

    Raises:
        ValueError: No label, a non-integer label, or one outside ``0..num_classes-1``.
    """
    out: List[int] = []
    for lab in label_ids:
        if isinstance(lab, (bool, np.bool_)) or not isinstance(lab, (int, np.integer, float, np.floating)) \
                or int(lab) != lab:
            raise ValueError(f'label ids must be integers, got {lab!r}')
        lab = int(lab)
        if not 0 <= lab < num_classes:
            raise ValueError(f'label id {lab} out of range for {num_classes} classes')
        if lab not in out:
            out.append(lab)
    if not out:
        raise ValueError('an image needs at least one image-level label (got none)')
    return out


class InputPreparer:
    """Default :meth:`PseudoLabelGenerator.input_preparer`: validate, scale to the working size.

    Picklable and free of model state, so data-loading workers can run it.

    Args:
        num_classes: Number of foreground classes.
        max_side: Longer-side cap of the working size (None: the image size).
    """

    def __init__(self, num_classes: int, max_side: Optional[int] = None) -> None:
        if max_side is not None and (isinstance(max_side, bool) or int(max_side) != max_side or max_side < 1):
            raise ValueError(f'max_side must be a positive integer or None, got {max_side!r}')
        self.num_classes = int(num_classes)
        self.max_side = None if max_side is None else int(max_side)

    def __call__(self, img: np.ndarray, label_ids: Sequence[int]) -> Dict[str, Any]:
        """Validated item at the working size (see the module docstring)."""
        img = validate_image(img)
        labels = validate_labels(label_ids, self.num_classes)
        h0, w0 = img.shape[:2]
        hw = work_size(h0, w0, self.max_side)
        return dict(image=resize_rgb(img, hw), label_ids=labels, image_hw=(h0, w0), work_hw=hw)


class PseudoLabelGenerator:
    """Base class of every pseudo-label generator (contract in the module docstring).

    Subclasses set :attr:`class_names` (via ``_class_names`` or by overriding the
    property) and implement :meth:`generate_one` or :meth:`generate`.

    Attributes:
        max_side: Longer-side cap of the working size (None: maps at the image size).
        batch_size: How many images the job hands to :meth:`generate` at once.
    """

    max_side: Optional[int] = None
    batch_size: int = 1

    @property
    def class_names(self) -> List[str]:
        """Class names (label id ``i`` -> ``class_names[i]``, mask value ``i + 1``)."""
        names = getattr(self, '_class_names', None)
        if names is None:
            raise NotImplementedError(f'{type(self).__name__} defines no class_names')
        return list(names)

    @property
    def num_classes(self) -> int:
        """Number of foreground classes."""
        return len(self.class_names)

    def input_preparer(self) -> InputPreparer:
        """Picklable ``prepare(img, label_ids) -> item`` for the data-loading workers."""
        return InputPreparer(self.num_classes, self.max_side)

    def prepare(self, img: np.ndarray, label_ids: Sequence[int]) -> Dict[str, Any]:
        """One prepared item (``input_preparer()(img, label_ids)``)."""
        return self.input_preparer()(img, label_ids)

    def generate(self, items: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """Results of a batch of prepared items (default: :meth:`generate_one` per item).

        Args:
            items: Items made by :meth:`input_preparer`.

        Returns:
            One result per item, in order.
        """
        return [self.generate_one(it['image'], it['label_ids']) for it in items]

    def generate_one(self, img_rgb_uint8: np.ndarray, label_ids: Sequence[int]) -> Dict[str, Any]:
        """Maps of one image at its (working-size) resolution; per-image generators implement it.

        Args:
            img_rgb_uint8: ``(h, w, 3)`` uint8 RGB image.
            label_ids: Labels already validated and de-duplicated by :meth:`input_preparer`
                (implementations do not check them again).

        Returns:
            ``dict(keys, cam, cam_refined)`` at ``(h, w)``.
        """
        raise NotImplementedError(f'{type(self).__name__} implements neither generate nor generate_one')

    def generate_image(self, img_rgb_uint8: np.ndarray, label_ids: Sequence[int]) -> Dict[str, Any]:
        """Convenience: prepare and generate one image; maps at its working size.

        Args:
            img_rgb_uint8: ``(H0, W0, 3)`` uint8 RGB image.
            label_ids: Class indices present in the image.

        Returns:
            The result dict (see the module docstring).
        """
        return self.generate([self.prepare(img_rgb_uint8, label_ids)])[0]
