"""Dense CRF post-processing of CLIP-ES (spec ``clip_es.md`` §7) via ``pydensecrf2``.

``pydensecrf2`` (import name ``pydensecrf``) is an optional dependency; it is
imported lazily and a clear :class:`ImportError` is raised when it is missing.

Official parameters (deeplab-pytorch ``voc12.yaml``): 10 mean-field iterations,
Gaussian kernel ``sxy=1, compat=3``, bilateral kernel ``sxy=67, srgb=3, compat=4``;
unary ``-log(clip(p, 1e-5, 1))`` of ``p = concat((1 - max_k cam_k) ** 1, cams)``.

Fidelity (``fidelity=True``, default) reproduces three quirks of the official
``eval_cam_with_crf.py``:
    * CRF image: ``(BGR - mean_bgr(104.008, 116.669, 122.675))`` cast to uint8
      WITH wrap-around of negative values (x86 behaviour of the float->uint8
      cast: truncation toward zero, then modulo 256).  The wrap is done
      explicitly with int64 arithmetic, so it is platform independent.
      Corrected: the plain RGB uint8 image (the bilateral kernel is symmetric
      in the channel order).
    * Probabilities: the CAMs are rounded to float16 (the official maps are
      stored as float16), the background ``(1 - max_k cam_k) ** bg_power`` is
      computed in float16 and the vector is NOT normalised.  Corrected: float32
      and normalised to sum 1 per pixel.
    * Unary: ``-log(clip(p, 1e-5, 1))`` evaluated in float16 (``1e-5`` becomes
      the subnormal 1.0014e-5, max unary 11.51), then cast to float32.
      Corrected: the same formula in float32.
"""
from __future__ import annotations

from typing import Any, Tuple

import numpy as np

__all__ = [
    'MEAN_BGR',
    'CRF_DEFAULTS',
    'require_pydensecrf',
    'crf_image',
    'crf_probs',
    'crf_unary',
    'dense_crf',
    'crf_refine',
]

#: deeplab-pytorch / CLIP-ES BGR mean subtracted from the CRF image in fidelity mode.
MEAN_BGR: Tuple[float, float, float] = (104.008, 116.669, 122.675)

#: Official dense CRF parameters.
CRF_DEFAULTS = dict(iters=10, pos_xy_std=1.0, pos_w=3.0, bi_xy_std=67.0, bi_rgb_std=3.0, bi_w=4.0)

_UNARY_CLIP = 1e-5


def require_pydensecrf() -> Any:
    """Import ``pydensecrf.densecrf`` or raise a helpful :class:`ImportError`.

    Returns:
        The ``pydensecrf.densecrf`` module.
    """
    try:
        import pydensecrf.densecrf as dcrf  # type: ignore[import-not-found]
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError('dense CRF post-processing needs the optional package "pydensecrf2" '
                          '(import name "pydensecrf"): pip install pydensecrf2') from err
    return dcrf


def _check_image(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f'expected an (H, W, 3) uint8 RGB image, got shape {img.shape} dtype {img.dtype}')
    return img


def crf_image(img_rgb: np.ndarray, *, fidelity: bool = True) -> np.ndarray:
    """Image given to the bilateral kernel.

    Args:
        img_rgb: ``(H, W, 3)`` uint8 RGB image.
        fidelity: official garbled image (BGR minus mean, uint8 wrap-around) or the plain image.

    Returns:
        ``(H, W, 3)`` C-contiguous uint8 image.
    """
    img = _check_image(img_rgb)
    if not fidelity:  # writable copy: pydensecrf refuses read-only buffers (e.g. from load_rgb)
        return np.require(img, dtype=np.uint8, requirements=['C', 'W', 'O'])
    bgr = img[:, :, ::-1].astype(np.float32)
    bgr -= np.asarray(MEAN_BGR)  # float64 arithmetic stored back to float32, as the official in-place op
    wrapped = np.trunc(bgr).astype(np.int64) % 256  # x86 float->uint8 cast: truncate, keep the low byte
    return np.ascontiguousarray(wrapped.astype(np.uint8))


def crf_probs(cams: np.ndarray, *, bg_power: float = 1.0, fidelity: bool = True) -> np.ndarray:
    """CRF input probabilities ``concat((1 - max_k cam_k) ** bg_power, cams)``.

    Args:
        cams: ``(K, H, W)`` foreground maps in ``[0, 1]``.
        bg_power: exponent of the background score (1 in the official CRF).
        fidelity: float16 and unnormalised (official) or float32 normalised to sum 1.

    Returns:
        ``(K + 1, H, W)`` array (float16 with fidelity, else float32), channel 0 = background.
    """
    c = np.asarray(cams)
    if c.ndim != 3 or c.shape[0] < 1:
        raise ValueError(f'cams must be (K, H, W) with K >= 1, got shape {c.shape}')
    if fidelity:
        c = c.astype(np.float16)
        bg = np.power(np.float16(1) - c.max(axis=0, keepdims=True), np.float16(bg_power))
        return np.concatenate([bg.astype(np.float16), c], axis=0)
    c = np.clip(c.astype(np.float32), 0.0, 1.0)
    bg = np.power(1.0 - c.max(axis=0, keepdims=True), np.float32(bg_power))
    p = np.concatenate([bg, c], axis=0).astype(np.float32)
    return p / np.maximum(p.sum(axis=0, keepdims=True), np.float32(1e-12))


def crf_unary(probs: np.ndarray, *, fidelity: bool = True) -> np.ndarray:
    """Unary energy ``-log(clip(p, 1e-5, 1))``, flattened to ``(C, H * W)`` float32.

    Args:
        probs: ``(C, H, W)`` probabilities.
        fidelity: evaluate in float16 as the official code (else float32).

    Returns:
        ``(C, H * W)`` C-contiguous float32 unary.
    """
    p = np.asarray(probs)
    if p.ndim != 3:
        raise ValueError(f'probs must be (C, H, W), got shape {p.shape}')
    dt = np.float16 if fidelity else np.float32
    p = np.clip(p.astype(dt), dt(_UNARY_CLIP), dt(1.0))
    u = -np.log(p)
    return np.ascontiguousarray(u.reshape(p.shape[0], -1).astype(np.float32))


def dense_crf(unary: np.ndarray, image_u8: np.ndarray, *, iters: int = 10, pos_xy_std: float = 1.0,
              pos_w: float = 3.0, bi_xy_std: float = 67.0, bi_rgb_std: float = 3.0,
              bi_w: float = 4.0) -> np.ndarray:
    """Mean-field inference of the fully connected CRF (Krähenbühl & Koltun).

    Args:
        unary: ``(C, H * W)`` float32 unary energy.
        image_u8: ``(H, W, 3)`` uint8 image for the bilateral kernel.
        iters: mean-field iterations.
        pos_xy_std: Gaussian kernel spatial std.
        pos_w: Gaussian kernel weight (Potts compatibility).
        bi_xy_std: bilateral kernel spatial std.
        bi_rgb_std: bilateral kernel colour std.
        bi_w: bilateral kernel weight.

    Returns:
        ``(C, H, W)`` float32 posterior ``Q``.
    """
    dcrf = require_pydensecrf()
    img = np.require(_check_image(image_u8), dtype=np.uint8, requirements=['C', 'W', 'O'])
    h, w = img.shape[:2]
    u = np.ascontiguousarray(np.asarray(unary, dtype=np.float32))
    if u.ndim != 2 or u.shape[1] != h * w:
        raise ValueError(f'unary must be (C, {h}*{w}) for a {h}x{w} image, got shape {u.shape}')
    if iters < 1:
        raise ValueError(f'iters must be >= 1, got {iters}')
    c = u.shape[0]
    d = dcrf.DenseCRF2D(w, h, c)
    d.setUnaryEnergy(u)
    d.addPairwiseGaussian(sxy=pos_xy_std, compat=pos_w)
    d.addPairwiseBilateral(sxy=bi_xy_std, srgb=bi_rgb_std, rgbim=img, compat=bi_w)
    q = d.inference(int(iters))
    return np.asarray(q, dtype=np.float32).reshape(c, h, w)


def crf_refine(cams: np.ndarray, img_rgb: np.ndarray, *, bg_power: float = 1.0, fidelity: bool = True,
               **params: float) -> np.ndarray:
    """CLIP-ES dense CRF on foreground maps: probabilities, unary, image, inference.

    Args:
        cams: ``(K, H0, W0)`` foreground maps in ``[0, 1]`` at the image size.
        img_rgb: ``(H0, W0, 3)`` uint8 RGB image.
        bg_power: background exponent (official: 1).
        fidelity: official quirks (see the module docstring) or corrected behaviour.
        **params: overrides of :data:`CRF_DEFAULTS` (``iters``, ``pos_xy_std``, ``pos_w``,
            ``bi_xy_std``, ``bi_rgb_std``, ``bi_w``).

    Returns:
        ``(K + 1, H0, W0)`` float32 posterior, channel 0 = background.
    """
    unknown = set(params) - set(CRF_DEFAULTS)
    if unknown:
        raise KeyError(f'unknown dense CRF parameter(s) {sorted(unknown)}; known: {sorted(CRF_DEFAULTS)}')
    c = np.asarray(cams)
    img = _check_image(img_rgb)
    if c.ndim != 3 or c.shape[1:] != img.shape[:2]:
        raise ValueError(f'cams {c.shape} must be (K, H, W) with the image size {img.shape[:2]}')
    kw = {**CRF_DEFAULTS, **params}
    kw['iters'] = int(kw['iters'])
    unary = crf_unary(crf_probs(c, bg_power=bg_power, fidelity=fidelity), fidelity=fidelity)
    return dense_crf(unary, crf_image(img, fidelity=fidelity), **kw)
