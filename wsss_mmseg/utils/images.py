"""Robust image loading for dataset-scale jobs.

Every image the pseudo-label job reads goes through :func:`load_rgb`, which turns
anything Pillow can decode into one canonical array: ``uint8``, shape
``(H, W, 3)``, RGB channel order, C-contiguous. Problems come back as
exceptions that name the file, so a job can record them and go on.

Conversions (mode as reported by Pillow -> 8-bit RGB):

* ``RGB``: unchanged.
* ``L`` / ``1`` (grayscale, bilevel): the gray value is copied to R, G and B.
* ``P`` (palette): looked up in the palette; a transparency entry is dropped.
* ``RGBA`` / ``LA`` / ``PA`` / ``RGBa`` / ``La`` / ``RGBX``: the alpha (or pad)
  channel is **dropped**, the stored colour values are kept, as
  ``PIL.Image.convert('RGB')`` does — the same result the official CLIP-ES
  scripts get from ``Image.open(path).convert('RGB')``. No compositing over a
  background colour.
* ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: Pillow's built-in ``convert('RGB')``
  (CMYK uses Pillow's naive formula; embedded ICC profiles are ignored).
* 16-bit grayscale (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``) and 32-bit integer
  ``I``: the 16-bit range is mapped linearly to 8 bits,
  ``round(v * 255 / 65535)`` (values outside ``[0, 65535]`` are clipped first),
  then copied to R, G and B.
* 16-bit-per-channel RGB(A) PNGs: Pillow's PNG decoder already reduces them to
  8-bit ``RGB``/``RGBA`` (most significant byte); they then follow the rules above.
* ``F`` (32-bit float) images have no agreed value range and are refused with
  a ``ValueError``.

Orientation: by default the EXIF ``Orientation`` tag is **ignored** and the
pixels are returned in the order they are stored. The VOC and COCO masks are
stored in that raw orientation and the official CLIP-ES code computes its CAMs
from ``PIL.Image.open`` without ``exif_transpose``, so keeping the raw
orientation is what makes pseudo masks line up with the ground truth. (Note that
``cv2.imread`` *does* apply EXIF orientation by default, so do not mix readers.) Pass
``exif_transpose=True`` for photo collections whose EXIF must be honoured (then
the mask follows the displayed orientation).

Decompression bombs: images with more than ``max_image_pixels`` pixels
(default: ``PIL.Image.MAX_IMAGE_PIXELS`` at call time, 89,478,485 in stock
Pillow) are refused *before* decoding with a ``ValueError`` naming the file and
its size; pass a larger ``max_image_pixels`` (or ``None`` to disable the check)
for legitimately huge images. Downscaling large inputs for the network is a
generator option, not something this loader does: :func:`read_image_size`
reports the size cheaply (header only) for such policies and for logs.
"""
from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

PathLike = Union[str, os.PathLike]

__all__ = ['load_rgb', 'read_image_size', 'ImageLoadError']

# Sentinel: "use PIL.Image.MAX_IMAGE_PIXELS as it is when the call happens".
_PIL_DEFAULT = object()
# Image.MAX_IMAGE_PIXELS is process-global; our temporary override is guarded.
_PIL_LIMIT_LOCK = threading.Lock()

_SIXTEEN_BIT_MODES = ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I')
_DROP_ALPHA_MODES = ('RGBA', 'RGBa', 'RGBX', 'LA', 'La', 'PA')
_PIL_CONVERT_MODES = ('L', '1', 'P', 'CMYK', 'YCbCr', 'LAB', 'HSV')


class ImageLoadError(ValueError):
    """An image file exists but cannot be turned into an RGB array.

    The message always names the file and says what is wrong with it.
    """


def _check_file(path: Path) -> None:
    """Raise a clear error when ``path`` is not a non-empty regular file."""
    if not path.exists():
        raise FileNotFoundError(f'image file not found: {path}')
    if not path.is_file():
        raise ImageLoadError(f'image path is not a regular file: {path}')
    if path.stat().st_size == 0:
        raise ImageLoadError(f'image file is empty (0 bytes): {path}')


_SIGNATURES = ((b'\x89PNG\r\n\x1a\n', 'PNG'), (b'\xff\xd8\xff', 'JPEG'), (b'GIF8', 'GIF'),
               (b'BM', 'BMP'), (b'II*\x00', 'TIFF'), (b'MM\x00*', 'TIFF'), (b'RIFF', 'WEBP'))


def _signature(path: Path) -> Optional[str]:
    """The image format announced by the first bytes of ``path`` (None if unknown)."""
    try:
        with open(path, 'rb') as f:
            head = f.read(16)
    except OSError:
        return None
    for magic, kind in _SIGNATURES:
        if head.startswith(magic):
            return kind
    return None


def _open_checked(path: Path, max_image_pixels: Optional[int]) -> Image.Image:
    """Open ``path`` lazily (header only) with our own pixel-count guard.

    Pillow's own bomb check is switched off for the duration of the ``open``
    call (under a lock) so that ``max_image_pixels`` alone decides.
    """
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', Image.DecompressionBombWarning)
                img = Image.open(path)
        except UnidentifiedImageError as exc:
            kind = _signature(path)
            if kind is not None:  # the magic bytes say it is one: a damaged file
                raise ImageLoadError(
                    f'cannot decode image file {path} (truncated or corrupt {kind} '
                    f'file: it starts like one but its header cannot be read)') from exc
            raise ImageLoadError(
                f'cannot identify image file (not an image or unsupported '
                f'format): {path}') from exc
        except OSError as exc:
            raise ImageLoadError(f'cannot open image file {path} (truncated or '
                                 f'corrupt): {exc}') from exc
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    width, height = img.size
    if max_image_pixels is not None and width * height > max_image_pixels:
        img.close()
        raise ImageLoadError(
            f'image {path} has {width}x{height} = {width * height} pixels, more '
            f'than the decompression-bomb limit of {max_image_pixels} pixels; '
            f'pass a larger max_image_pixels (or None) if the image is genuine')
    return img


def _to_rgb_array(img: Image.Image, path: Path) -> np.ndarray:
    """Convert a decoded Pillow image to ``uint8 (H, W, 3)`` RGB."""
    mode = img.mode
    if mode == 'RGB':
        arr = np.asarray(img)
    elif mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(img).astype(np.int64)
        wide = np.clip(wide, 0, 65535)
        # round(v * 255 / 65535) with integer arithmetic (exact, deterministic)
        gray = ((wide * 255 * 2 + 65535) // (2 * 65535)).astype(np.uint8)
        arr = np.repeat(gray[:, :, None], 3, axis=2)
    elif mode in _DROP_ALPHA_MODES or mode in _PIL_CONVERT_MODES:
        arr = np.asarray(img.convert('RGB'))
    elif mode == 'F':
        raise ImageLoadError(
            f'image {path} is a 32-bit floating point image (mode F); its value '
            f'range is undefined, convert it to 8-bit first')
    else:
        try:
            arr = np.asarray(img.convert('RGB'))
        except (ValueError, OSError) as exc:
            raise ImageLoadError(
                f'image {path} has unsupported mode {mode!r}: {exc}') from exc
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageLoadError(
            f'image {path} (mode {mode!r}) did not convert to 8-bit RGB '
            f'(got dtype {arr.dtype}, shape {arr.shape})')
    return np.ascontiguousarray(arr)


def load_rgb(path: PathLike,
             *,
             exif_transpose: bool = False,
             max_image_pixels: Union[Optional[int], object] = _PIL_DEFAULT
             ) -> np.ndarray:
    """Read an image file as an 8-bit RGB array.

    Args:
        path: Image file (any format Pillow decodes).
        exif_transpose: Apply the EXIF ``Orientation`` tag. Defaults to False:
            pixels are returned in stored order, which is the orientation of
            VOC/COCO masks (see the module docstring).
        max_image_pixels: Refuse images with more pixels than this before
            decoding them (decompression-bomb guard). Defaults to
            ``PIL.Image.MAX_IMAGE_PIXELS``; ``None`` disables the check.

    Returns:
        ``uint8`` array of shape ``(H, W, 3)``, RGB order, C-contiguous.

    Raises:
        FileNotFoundError: The file does not exist.
        ImageLoadError: (a ``ValueError``) the file is empty, not an image,
            truncated/corrupt, too large, or of an unsupported mode. The
            message names the file.
    """
    path = Path(path)
    _check_file(path)
    limit = Image.MAX_IMAGE_PIXELS if max_image_pixels is _PIL_DEFAULT \
        else max_image_pixels
    img = _open_checked(path, limit)  # type: ignore[arg-type]
    try:
        try:
            img.load()
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageLoadError(
                f'cannot decode image file {path} (truncated or corrupt): '
                f'{exc}') from exc
        if exif_transpose:
            transposed = ImageOps.exif_transpose(img)
            if transposed is not None:
                img = transposed
        return _to_rgb_array(img, path)
    finally:
        img.close()


def read_image_size(path: PathLike) -> Tuple[int, int]:
    """Return ``(height, width)`` of an image from its header (no decoding).

    Args:
        path: Image file.

    Returns:
        ``(height, width)`` in stored (non-EXIF-rotated) orientation.

    Raises:
        FileNotFoundError: The file does not exist.
        ImageLoadError: The file is empty or not an image.
    """
    path = Path(path)
    _check_file(path)
    img = _open_checked(path, None)
    try:
        width, height = img.size
    finally:
        img.close()
    return int(height), int(width)
