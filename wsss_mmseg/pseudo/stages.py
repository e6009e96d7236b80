"""The two per-image stages of the pseudo-label job that run outside the model process.

* :class:`ImageLoader` -- in the data-loading workers: record -> decoded image ->
  memory estimate -> the generator's prepared item (working-size image, network input).
* :class:`OutputWriter` -- in the post-processing pool (or inline): generator result ->
  mask maker (CRF) at the working size -> label/confidence upsampled to the image size ->
  PNG/NPY encoding -> atomic writes; returns the files' ``[size, crc32]`` for the
  provenance record.

Both return plain dicts (``ok`` or ``stage``/``reason``) instead of raising, so a bad
image is recorded and the job goes on; a write error (disk full, read-only folder) is
returned as ``write_error`` and stops the job in the main process. Neither imports mmseg.
"""
from __future__ import annotations

import errno
import io
import time
import traceback
from typing import Any, Callable, Dict, Mapping, Optional

import numpy as np

from .io import atomic_write_bytes, build_cam_record, encode_confidence_png, encode_mask_png
from .workdir import OutputLayout, file_record

__all__ = ['ImageLoader', 'OutputWriter', 'estimate_image_memory', 'upsample_outputs']

#: Bytes per pixel of the full-size work of one image: decoded RGB (3), label (1),
#: confidence float32 (4) and its 16-bit copy (2), PNG encoders' buffers (~6). Measured
#: (benchmarks/bench_generate.py --parts bigphoto, 24 Mpx photo): ~9 B/px in the inline job,
#: ~8 B/px in a post-processing worker, since the confidence is quantised in bounded chunks.
_BYTES_PER_FULL_PIXEL = 16
#: Bytes per working-size pixel and map channel: float32 maps, CRF probabilities,
#: unary, posterior and temporaries (~8 float32 arrays).
_BYTES_PER_WORK_PIXEL_CHANNEL = 32


def estimate_image_memory(h0: int, w0: int, work_hw: tuple, num_labels: int, *,
                          save_cams: bool = False) -> int:
    """Rough upper estimate of the bytes one image needs outside the model.

    Args:
        h0: Image height.
        w0: Image width.
        work_hw: Working size ``(h, w)``.
        num_labels: ``K``.
        save_cams: CAM files (``2 K`` maps at the working size, float16 + float32 copies).

    Returns:
        Bytes.
    """
    full = h0 * w0 * _BYTES_PER_FULL_PIXEL
    work = work_hw[0] * work_hw[1] * (num_labels + 1) * _BYTES_PER_WORK_PIXEL_CHANNEL
    if save_cams:
        work += work_hw[0] * work_hw[1] * num_labels * 12
    return int(full + work)


class ImageLoader:
    """Worker-side stage: load, check and prepare one image (picklable).

    Args:
        dataset: Label source with ``dataset[idx] -> dict(id, img_path, label_ids, ...)``.
        preparer: The generator's ``input_preparer()``.
        num_classes: Number of foreground classes (label range check).
        max_side: Working-size cap (for the memory estimate).
        exif_transpose: Apply EXIF orientation.
        max_image_pixels: Decompression-bomb limit (``'pil'``, None or an int).
        max_image_memory: Refuse images whose estimate exceeds this (bytes), None: no cap.
        save_cams: CAM files are written (memory estimate).
    """

    def __init__(self, dataset: Any, preparer: Callable, *, num_classes: int, max_side: Optional[int],
                 exif_transpose: bool = False, max_image_pixels: Any = 'pil',
                 max_image_memory: Optional[int] = None, save_cams: bool = False) -> None:
        self.dataset = dataset
        self.preparer = preparer
        self.num_classes = int(num_classes)
        self.max_side = max_side
        self.exif_transpose = bool(exif_transpose)
        self.max_image_pixels = max_image_pixels
        self.max_image_memory = max_image_memory
        self.save_cams = bool(save_cams)

    def _pixel_limit(self) -> Optional[int]:
        if self.max_image_pixels == 'pil':
            from PIL import Image
            return Image.MAX_IMAGE_PIXELS
        return self.max_image_pixels

    def __call__(self, idx: int, image_id: str) -> Dict[str, Any]:
        """``dict(idx, id, img_path, item, load_s)`` or ``dict(idx, id, img_path, stage, reason)``."""
        from ..generators import validate_labels, work_size
        from ..utils.images import load_rgb, read_image_size
        out: Dict[str, Any] = dict(idx=idx, id=image_id, img_path=None)
        t = time.perf_counter()
        try:
            record = self.dataset[idx]
        except (OSError, ValueError, KeyError) as exc:
            return dict(out, stage='record', reason=f'{type(exc).__name__}: {exc}')
        out['img_path'] = record.get('img_path')
        try:
            labels = validate_labels(list(record.get('label_ids') or []), self.num_classes)
        except ValueError as exc:
            reason = str(exc)
            if 'out of range' in reason:
                reason += f" (the generator's classes are 0..{self.num_classes - 1})"
            if 'at least one' in reason:
                reason = 'no image-level labels'
            return dict(out, stage='labels', reason=reason)
        if self.max_image_memory is not None:
            try:
                w0, h0 = read_image_size(out['img_path'])
            except (OSError, ValueError):
                w0 = h0 = 0  # unreadable header: load_rgb below says why
            limit = self._pixel_limit()
            if w0 and (limit is None or w0 * h0 <= limit):  # bombs: load_rgb refuses them
                need = estimate_image_memory(h0, w0, work_size(h0, w0, self.max_side), len(labels),
                                             save_cams=self.save_cams)
                if need > self.max_image_memory:
                    return dict(out, stage='memory', reason=(
                        f'{w0}x{h0} pixels with {len(labels)} labels need about {need / 2**30:.2f} GiB, '
                        f'above pseudo_job.max_image_memory={self.max_image_memory / 2**30:.2f} GiB; '
                        'raise it or lower generator.max_side'))
        try:
            kwargs: Dict[str, Any] = dict(exif_transpose=self.exif_transpose)
            if self.max_image_pixels != 'pil':
                kwargs['max_image_pixels'] = self.max_image_pixels
            img = load_rgb(out['img_path'], **kwargs)
        except (OSError, ValueError) as exc:
            return dict(out, stage='load', reason=f'{type(exc).__name__}: {exc}')
        try:
            item = self.preparer(img, labels)
        except Exception as exc:  # noqa: BLE001 - this image's problem
            return dict(out, stage='prepare', reason=f'{type(exc).__name__}: {exc}')
        del img
        return dict(out, item=item, load_s=time.perf_counter() - t)


def upsample_outputs(mask: np.ndarray, confidence: np.ndarray, image_hw: tuple):
    """Label map (nearest) and confidence (bilinear, clipped to [0, 1]) at the image size."""
    import cv2
    h0, w0 = int(image_hw[0]), int(image_hw[1])
    if mask.shape == (h0, w0):
        return mask, confidence
    mask = cv2.resize(np.ascontiguousarray(mask), (w0, h0), interpolation=cv2.INTER_NEAREST)
    confidence = cv2.resize(np.ascontiguousarray(confidence, dtype=np.float32), (w0, h0),
                            interpolation=cv2.INTER_LINEAR)
    return mask, np.clip(confidence, 0.0, 1.0, out=confidence)  # in place: no second full-size copy


def _as_numpy(x: Any) -> Optional[np.ndarray]:
    if x is None:
        return None
    if hasattr(x, 'detach'):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


class OutputWriter:
    """Pool-side stage: mask maker + upsampling + encoding + atomic writes (picklable).

    Args:
        mask_maker: ``(result, image) -> (mask, confidence)`` at the working size.
        layout: Output file names.
        cam_dtype: Storage dtype of CAM files.
        fsync: fsync each file before its rename.
    """

    def __init__(self, mask_maker: Callable, layout: OutputLayout, *, cam_dtype: str = 'float16',
                 fsync: bool = True) -> None:
        self.mask_maker = mask_maker
        self.layout = layout
        self.cam_dtype = cam_dtype
        self.fsync = bool(fsync)

    def __call__(self, task: Mapping[str, Any]) -> Dict[str, Any]:
        """``dict(id, files, timings)``, ``dict(id, stage, reason)`` or ``dict(id, write_error)``."""
        image_id = task['id']
        try:
            return self._run(task)
        except Exception as exc:  # noqa: BLE001 - reported back, never lost in a worker
            return dict(id=image_id, stage='unexpected', reason=f'{type(exc).__name__}: {exc}',
                        traceback=traceback.format_exc())

    def _run(self, task: Mapping[str, Any]) -> Dict[str, Any]:
        image_id = task['id']
        result, image = task['result'], task['image']
        labels = list(task['label_ids'])
        work_hw = tuple(task['work_hw'])
        timings: Dict[str, float] = {}
        try:
            keys = np.asarray(result['keys']).astype(np.int64).reshape(-1)
            cam = _as_numpy(result['cam'])
            refined = _as_numpy(result.get('cam_refined'))
            k = len(labels)
            if keys.tolist() != labels:
                raise ValueError(f'keys {keys.tolist()} differ from the labels {labels}')
            for name, arr in (('cam', cam), ('cam_refined', refined)):
                if arr is not None and arr.shape != (k,) + work_hw:
                    raise ValueError(f'{name} has shape {arr.shape}, expected {(k,) + work_hw}')
        except (KeyError, ValueError, TypeError) as exc:
            return dict(id=image_id, stage='generate',
                        reason=f'invalid generator output: {type(exc).__name__}: {exc}')
        t = time.perf_counter()
        try:
            mask, confidence = self.mask_maker(result, image)
            mask, confidence = np.asarray(mask), np.asarray(confidence)
            if mask.shape != work_hw or confidence.shape != work_hw:
                raise ValueError(f'mask {mask.shape} / confidence {confidence.shape} do not '
                                 f'match the image size {work_hw}')
            mask, confidence = upsample_outputs(mask, confidence, task['image_hw'])
            mask_png = encode_mask_png(mask)
            conf_png = encode_confidence_png(confidence)
            cam_npy = None
            if self.layout.save_cams:
                buf = io.BytesIO()
                np.save(buf, build_cam_record(keys, cam, refined, dtype=self.cam_dtype), allow_pickle=True)
                cam_npy = buf.getvalue()
        except Exception as exc:  # noqa: BLE001
            return dict(id=image_id, stage='mask', reason=f'{type(exc).__name__}: {exc}')
        timings['mask'] = time.perf_counter() - t
        t = time.perf_counter()
        layout = self.layout
        files: Dict[str, list] = {}
        try:
            layout.make_dirs(image_id)
            writes = []
            if cam_npy is not None:
                writes.append((layout.cam_path(image_id), cam_npy))
            writes.append((layout.confidence_path(image_id), conf_png))
            writes.append((layout.mask_path(image_id), mask_png))  # last: the mask "looks done"
            for path, data in writes:
                atomic_write_bytes(path, data, fsync=self.fsync)
                files[path.relative_to(layout.work_dir).as_posix()] = file_record(path, data)
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                return dict(id=image_id, stage='write', reason=f'output file name too long: {exc}')
            return dict(id=image_id, write_error=dict(errno=exc.errno, strerror=exc.strerror or str(exc),
                                                       filename=exc.filename or str(layout.work_dir)))
        timings['write'] = time.perf_counter() - t
        return dict(id=image_id, files=files, timings=timings)


