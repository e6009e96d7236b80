"""Atomic writers and readers for pseudo-label outputs.

Every writer follows the same protocol: the bytes are written to a temporary
file in the *same directory* as the destination (name ``.<final name>.<random>``
``.wsss-tmp``), flushed and ``fsync``-ed, then moved over the final name with
``os.replace`` (atomic on POSIX and Windows for files on one file system), and
the directory entry is ``fsync``-ed where the platform allows it. A final name
therefore only ever appears complete; a killed job leaves at most a stale
``*.wsss-tmp`` file, which :func:`cleanup_stale_temps` removes at the start of
the next run. If the writer raises, the temporary file is deleted and the
exception propagates; an existing final file is left untouched.

File formats (all deterministic: same array -> same bytes):

* **Masks** (``write_mask_png``): 8-bit palette PNG (PIL mode ``'P'``), pixel
  value = label (0 background, ``c + 1`` for class index ``c``, 255 ignore),
  with the PASCAL VOC colour map as palette, so the files open as coloured
  images and :func:`read_mask_png` (or ``PIL.Image.open`` + ``np.asarray``,
  or mmseg's ``LoadAnnotations``) returns the label values.
* **Confidence** (``write_confidence_png``): 16-bit grayscale PNG holding
  ``round(conf * 65535)`` for ``conf`` in ``[0, 1]`` (quantisation step
  1.5e-5). :func:`read_confidence_png` returns ``float32`` ``v / 65535``.
* **CAMs** (``save_cam_npy``): ``np.save`` of a Python dict (load with
  ``np.load(path, allow_pickle=True).item()``) in the layout of the official
  CLIP-ES ``attn_highres`` files, extended::

      {'keys':         int64   (K,)        class indices (0-based) in label order,
       'cam':          float16 (K, H0, W0) initial CAM at the original size,
       'cam_refined':  float16 (K, H0, W0) CAM after CAA (only if available),
       'attn_highres': float16 (K, H0, W0) = cam_refined, or cam without CAA}

  ``attn_highres`` is the *same array object* as ``cam_refined`` (or ``cam``),
  so pickle stores it once; the official ``eval_cam.py`` /
  ``eval_cam_with_crf.py`` read these files unchanged. Reading a pickled file
  executes code from it: only load CAM files you wrote yourself.

Write errors (a full disk, a read-only or vanished folder, an I/O error) come
back as ``OSError`` whose ``filename`` is the final path being written, so the
message always says *which* file could not be written.

Fault injection (test-only): when the environment variable
``WSSS_MMSEG_FAULT`` is set to ``POINT[:N[:ACTION]]``, the N-th (default 1st)
time the code passes the named point -- counting only paths that contain
``WSSS_MMSEG_FAULT_PATH`` when that is set -- the process kills itself with
``SIGKILL`` (``ACTION=kill``, the default) or, for ``ACTION=enospc``, raises
``OSError(ENOSPC)`` there and at every later pass (a disk stays full). Points
of this module: ``write`` (data written to the temp file, before flush/fsync),
``before_rename`` (temp file complete, final name not yet replaced),
``after_rename``; the job adds ``between_images``, ``evaluate`` and
``before_summary`` (see :mod:`wsss_mmseg.pseudo.job`). Unset (the normal
case) it costs one environment lookup per file. The crash-safety tests in
``tests/test_reliability`` use it to kill the job at exact points.
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
import secrets
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np
from PIL import Image

PathLike = Union[str, os.PathLike]

__all__ = [
    'TMP_SUFFIX', 'atomic_open', 'atomic_write_bytes', 'voc_palette',
    'encode_mask_png', 'write_mask_png', 'read_mask_png',
    'encode_confidence_png', 'quantize_confidence', 'write_confidence_png', 'read_confidence_png',
    'build_cam_record', 'save_cam_npy', 'load_cam_npy', 'cleanup_stale_temps',
    'check_output_id', 'fault_point', 'FAULT_ENV',
]  # the work-dir layout is wsss_mmseg.pseudo.workdir.OutputLayout

#: Suffix of temporary files; anything ending in it is removable debris.
TMP_SUFFIX = '.wsss-tmp'
#: Label value of ignored pixels.
IGNORE_INDEX = 255
_CONF_SCALE = 65535
_QUANTIZE_CHUNK = 1 << 18  # pixels per float64 chunk of quantize_confidence (2 MiB)


#: Environment variable of the test-only fault injection (module docstring).
FAULT_ENV = 'WSSS_MMSEG_FAULT'
_FAULT_STATE: Dict[str, object] = {}
#: Set in the job's post-processing workers: a ``kill`` fault there kills the job (the
#: parent) too, as a real SIGKILL of the job would.
FAULT_KILLS_PARENT = False


def fault_point(point: str, path: Optional[PathLike] = None) -> None:
    """Test-only fault injection hook (see the module docstring); no-op when unset.

    Args:
        point: Name of the place in the code.
        path: The file (or image id) being handled, matched against
            ``WSSS_MMSEG_FAULT_PATH``.

    Raises:
        OSError: ``ENOSPC`` when the active spec asks for it.
    """
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    parts = spec.split(':')
    if parts[0] != point:
        return
    substr = os.environ.get(FAULT_ENV + '_PATH')
    if substr and (path is None or substr not in os.fspath(path)):
        return
    nth = int(parts[1]) if len(parts) > 1 and parts[1] else 1
    action = parts[2] if len(parts) > 2 else 'kill'
    key = f'{spec}|{substr}'
    count = int(_FAULT_STATE.get(key, 0)) + 1  # type: ignore[arg-type]
    _FAULT_STATE[key] = count
    if count < nth:
        return
    if action == 'kill' and count == nth:
        if FAULT_KILLS_PARENT:
            os.kill(os.getppid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == 'enospc':
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path or point))
    elif action not in ('kill', 'enospc'):
        raise ValueError(f'{FAULT_ENV}={spec!r}: unknown action {action!r} (kill, enospc)')


# ----------------------------------------------------------------- atomicity
def _fsync_dir(directory: Path) -> None:
    """Flush a directory entry to disk (no-op where directories can't be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: PathLike, *, fsync: bool = True) -> Iterator[io.BufferedWriter]:
    """Open a binary temp file that replaces ``path`` only on success.

    Args:
        path: Final destination. Its parent directory must exist.
        fsync: ``fsync`` the data (and the directory entry) before/after the
            rename. Disable only for throwaway outputs.

    Yields:
        A binary file object opened for writing.

    Raises:
        FileNotFoundError: The parent directory does not exist.
        PermissionError: The directory is not writable (message names it).
    """
    path = Path(path)
    directory = path.parent
    name = path.name
    if len(os.fsencode(name)) > 100:  # keep temp names short: a 255-byte final name must work
        name = hashlib.sha1(os.fsencode(name)).hexdigest()[:16]
    tmp = directory / f'.{name}.{secrets.token_hex(6)}{TMP_SUFFIX}'
    try:
        f = open(tmp, 'xb')
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f'cannot write {path}: directory {directory} does not exist') from exc
    except PermissionError as exc:
        raise PermissionError(
            f'cannot write {path}: directory {directory} is not writable') from exc
    try:
        try:
            with f:
                yield f
                fault_point('write', path)
                f.flush()
                if fsync:
                    os.fsync(f.fileno())
            fault_point('before_rename', path)
            os.replace(tmp, path)
        except OSError as exc:
            if exc.errno is not None and exc.filename is None:
                # e.g. ENOSPC from write/flush: name the file the user cares about
                raise OSError(exc.errno, exc.strerror, str(path)) from exc
            raise
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    fault_point('after_rename', path)
    if fsync:
        _fsync_dir(directory)


def atomic_write_bytes(path: PathLike, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`).

    Args:
        path: Destination file.
        data: Bytes to write.
        fsync: Flush to disk before the rename.
    """
    with atomic_open(path, fsync=fsync) as f:
        f.write(data)


def cleanup_stale_temps(directories: Iterable[PathLike]) -> List[Path]:
    """Delete temporary files left by a killed writer.

    Only names ending in :data:`TMP_SUFFIX` are touched; sub-directories are
    searched recursively. Call this when no writer is active on the folders.

    Args:
        directories: Folders to clean; missing ones are skipped.

    Returns:
        The removed paths, sorted.
    """
    removed: List[Path] = []
    for d in directories:
        d = Path(d)
        if not d.is_dir():
            continue
        for p in d.rglob(f'*{TMP_SUFFIX}'):
            if p.is_file():
                try:
                    p.unlink()
                except FileNotFoundError:
                    continue
                removed.append(p)
    return sorted(removed)


# ---------------------------------------------------------------------- masks
def voc_palette(num_entries: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (label 0 black, 1 dark red, 2 dark green, ...).

    Bits 0/1/2 of the label go to the top bits of R/G/B, then bits 3/4/5 to the
    next bits, and so on.

    Args:
        num_entries: Number of palette entries (at most 256).

    Returns:
        ``uint8`` array ``(num_entries, 3)``.
    """
    if not 0 < num_entries <= 256:
        raise ValueError(f'num_entries must be in 1..256, got {num_entries}')
    palette = np.zeros((num_entries, 3), dtype=np.uint8)
    for label in range(num_entries):
        value = label
        r = g = b = 0
        for shift in range(7, -1, -1):
            r |= ((value >> 0) & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[label] = (r, g, b)
    return palette


_VOC_PALETTE_FLAT: List[int] = voc_palette(256).reshape(-1).tolist()


def _check_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f'mask must be 2-D (H, W), got shape {mask.shape}')
    if mask.dtype != np.uint8:
        if not np.issubdtype(mask.dtype, np.integer):
            raise ValueError(f'mask must hold integer labels, got dtype {mask.dtype}')
        if mask.size and (mask.min() < 0 or mask.max() > 255):
            raise ValueError(f'mask values must lie in 0..255, got '
                             f'{mask.min()}..{mask.max()}')
        mask = mask.astype(np.uint8)
    if mask.size == 0:
        raise ValueError(f'mask is empty (shape {mask.shape})')
    return np.ascontiguousarray(mask)


def encode_mask_png(mask: np.ndarray) -> bytes:
    """Encode a label mask as a palette PNG (see the module docstring).

    Args:
        mask: Integer array ``(H, W)`` with values 0..255.

    Returns:
        PNG bytes (deterministic).
    """
    mask = _check_mask(mask)
    img = Image.frombytes('P', (mask.shape[1], mask.shape[0]), mask.tobytes())
    img.putpalette(_VOC_PALETTE_FLAT)
    buf = io.BytesIO()
    img.save(buf, format='PNG', optimize=False, compress_level=6)
    return buf.getvalue()


def write_mask_png(path: PathLike, mask: np.ndarray, *, fsync: bool = True) -> None:
    """Atomically write a label mask as a VOC-palette PNG.

    Args:
        path: Destination ``.png``.
        mask: Integer array ``(H, W)`` with values 0..255 (255 = ignore).
        fsync: Flush to disk before the rename.
    """
    atomic_write_bytes(path, encode_mask_png(mask), fsync=fsync)


def read_mask_png(path: PathLike) -> np.ndarray:
    """Read a label mask (palette or 8-bit grayscale PNG) as label values.

    Args:
        path: Mask file.

    Returns:
        ``uint8`` array ``(H, W)`` of label values (palette indices for mode
        ``'P'``, gray values for mode ``'L'``).

    Raises:
        FileNotFoundError: Missing file.
        ValueError: The image is not a single-channel 8-bit label image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'mask file not found: {path}')
    with Image.open(path) as img:
        if img.mode not in ('P', 'L'):
            raise ValueError(f'mask {path} has mode {img.mode!r}; expected a '
                             f"palette ('P') or 8-bit grayscale ('L') PNG")
        img.load()
        arr = np.array(img, dtype=np.uint8)
    return arr


# ----------------------------------------------------------------- confidence
def quantize_confidence(conf: np.ndarray) -> np.ndarray:
    """``round(clip(c, 0, 1) * 65535)`` as uint16, in float64, a bounded chunk at a time.

    Working in chunks of :data:`_QUANTIZE_CHUNK` pixels keeps the float64 temporaries at a
    few MiB whatever the image size (a 24 Mpx photo would otherwise need ~600 MiB of them);
    the values are those of the whole-array expression (element-wise operations).

    Args:
        conf: Floating ``(H, W)`` array.

    Returns:
        ``(H, W)`` uint16 array.

    Raises:
        ValueError: NaN or infinite values, or values outside ``[0, 1]`` (beyond 1e-6).
    """
    flat = conf.reshape(-1)
    q = np.empty(flat.shape, dtype=np.uint16)
    lo, hi = np.inf, -np.inf
    for start in range(0, flat.size, _QUANTIZE_CHUNK):
        c = flat[start:start + _QUANTIZE_CHUNK].astype(np.float64)
        if not np.isfinite(c).all():
            raise ValueError('confidence contains NaN or infinite values')
        lo, hi = min(lo, float(c.min())), max(hi, float(c.max()))
        np.clip(c, 0.0, 1.0, out=c)
        c *= _CONF_SCALE
        np.rint(c, out=c)
        q[start:start + c.size] = c
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f'confidence values must lie in [0, 1], got {lo}..{hi}')
    return q.reshape(conf.shape)


def encode_confidence_png(confidence: np.ndarray) -> bytes:
    """Encode a confidence map as a 16-bit grayscale PNG of ``round(c * 65535)``.

    Args:
        confidence: Float array ``(H, W)`` with values in ``[0, 1]``.

    Returns:
        PNG bytes (deterministic).

    Raises:
        ValueError: Wrong shape, NaN, or values outside ``[0, 1]`` (beyond a
            1e-6 rounding tolerance, which is clipped).
    """
    conf = np.asarray(confidence)
    if conf.ndim != 2 or conf.size == 0:
        raise ValueError(f'confidence must be a non-empty 2-D array, got shape {conf.shape}')
    if not np.issubdtype(conf.dtype, np.floating):
        raise ValueError(f'confidence must be floating point, got dtype {conf.dtype}')
    q = quantize_confidence(conf)
    img = Image.fromarray(np.ascontiguousarray(q))  # mode 'I;16'
    buf = io.BytesIO()
    img.save(buf, format='PNG', optimize=False, compress_level=6)
    return buf.getvalue()


def write_confidence_png(path: PathLike, confidence: np.ndarray, *,
                         fsync: bool = True) -> None:
    """Atomically write a confidence map (16-bit PNG, see the module docstring).

    Args:
        path: Destination ``.png``.
        confidence: Float array ``(H, W)`` in ``[0, 1]``.
        fsync: Flush to disk before the rename.
    """
    atomic_write_bytes(path, encode_confidence_png(confidence), fsync=fsync)


def read_confidence_png(path: PathLike) -> np.ndarray:
    """Read a confidence map written by :func:`write_confidence_png`.

    Args:
        path: Confidence file.

    Returns:
        ``float32`` array ``(H, W)`` equal to ``stored / 65535``.

    Raises:
        FileNotFoundError: Missing file.
        ValueError: The PNG is not 16-bit grayscale.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'confidence file not found: {path}')
    with Image.open(path) as img:
        if img.mode not in ('I;16', 'I;16B', 'I;16L', 'I'):
            raise ValueError(f'confidence map {path} has mode {img.mode!r}; '
                             'expected a 16-bit grayscale PNG')
        img.load()
        raw = np.array(img)
    if raw.min() < 0 or raw.max() > _CONF_SCALE:
        raise ValueError(f'confidence map {path} holds values outside 0..65535')
    return (raw.astype(np.float64) / _CONF_SCALE).astype(np.float32)


# ----------------------------------------------------------------------- CAMs
def _check_cam(name: str, cam: np.ndarray, k: int) -> np.ndarray:
    cam = np.asarray(cam)
    if cam.ndim != 3 or cam.shape[0] != k:
        raise ValueError(f'{name} must have shape (K={k}, H0, W0), got {cam.shape}')
    if not np.issubdtype(cam.dtype, np.floating):
        raise ValueError(f'{name} must be floating point, got dtype {cam.dtype}')
    return cam


def build_cam_record(keys: Sequence[int], cam: np.ndarray,
                     cam_refined: Optional[np.ndarray] = None, *,
                     dtype: Union[str, np.dtype] = 'float16') -> Dict[str, np.ndarray]:
    """Assemble the dict stored in a CAM ``.npy`` file.

    Args:
        keys: Class indices (0-based), one per CAM channel.
        cam: Initial CAM ``(K, H0, W0)``.
        cam_refined: Refined CAM ``(K, H0, W0)`` or None.
        dtype: Storage dtype of the maps (``float16`` like the official files).

    Returns:
        ``{'keys', 'cam', ['cam_refined'], 'attn_highres'}``; ``attn_highres``
        is the same object as ``cam_refined`` (or ``cam``).
    """
    keys_arr = np.asarray(keys, dtype=np.int64).reshape(-1)
    k = int(keys_arr.shape[0])
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f'CAM storage dtype must be floating point, got {dtype}')
    record: Dict[str, np.ndarray] = {'keys': keys_arr}
    record['cam'] = np.ascontiguousarray(_check_cam('cam', cam, k).astype(dtype))
    if cam_refined is not None:
        refined = _check_cam('cam_refined', cam_refined, k)
        if refined.shape != record['cam'].shape:
            raise ValueError(f'cam_refined shape {refined.shape} differs from cam '
                             f'shape {record["cam"].shape}')
        record['cam_refined'] = np.ascontiguousarray(refined.astype(dtype))
        record['attn_highres'] = record['cam_refined']
    else:
        record['attn_highres'] = record['cam']
    return record


def save_cam_npy(path: PathLike, keys: Sequence[int], cam: np.ndarray,
                 cam_refined: Optional[np.ndarray] = None, *,
                 dtype: Union[str, np.dtype] = 'float16', fsync: bool = True) -> None:
    """Atomically save CAMs in the (extended) official ``attn_highres`` layout.

    Args:
        path: Destination ``.npy``.
        keys: Class indices (0-based), one per channel.
        cam: Initial CAM ``(K, H0, W0)``.
        cam_refined: CAM after CAA ``(K, H0, W0)`` or None.
        dtype: Storage dtype (default ``float16``, as the official files).
        fsync: Flush to disk before the rename.
    """
    record = build_cam_record(keys, cam, cam_refined, dtype=dtype)
    buf = io.BytesIO()
    np.save(buf, record, allow_pickle=True)
    atomic_write_bytes(path, buf.getvalue(), fsync=fsync)


def load_cam_npy(path: PathLike) -> Dict[str, np.ndarray]:
    """Load a CAM file written by :func:`save_cam_npy` or the official scripts.

    Official files hold only ``keys`` and ``attn_highres``; they load fine.
    Uses ``allow_pickle=True``: load only files you trust.

    Args:
        path: ``.npy`` file.

    Returns:
        The stored dict.

    Raises:
        FileNotFoundError: Missing file.
        ValueError: Not a dict with ``keys`` and ``attn_highres`` of matching
            leading dimension.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'CAM file not found: {path}')
    obj = np.load(path, allow_pickle=True)
    if not (isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ()):
        raise ValueError(f'CAM file {path} does not hold a pickled dict')
    record = obj.item()
    if not isinstance(record, dict) or 'keys' not in record or 'attn_highres' not in record:
        raise ValueError(f'CAM file {path} must hold a dict with "keys" and '
                         f'"attn_highres", got {type(record).__name__} '
                         f'{sorted(record) if isinstance(record, dict) else ""}')
    k = np.asarray(record['keys']).shape[0]
    for name in ('cam', 'cam_refined', 'attn_highres'):
        if name in record and np.asarray(record[name]).shape[:1] != (k,):
            raise ValueError(f'CAM file {path}: {name} has shape '
                             f'{np.asarray(record[name]).shape}, expected ({k}, H0, W0)')
    return record


# --------------------------------------------------------------------- layout
def check_output_id(image_id: str) -> str:
    """Validate an image id used to build output paths.

    Ids may contain ``/`` (sub-folders) but no empty, ``.`` or ``..`` parts,
    no backslashes or NUL, and must not be absolute.

    Args:
        image_id: The id.

    Returns:
        The id unchanged.

    Raises:
        ValueError: Unsafe id.
    """
    if not isinstance(image_id, str) or not image_id:
        raise ValueError(f'image id must be a non-empty str, got {image_id!r}')
    parts = image_id.split('/')
    if (image_id.startswith('/') or '\\' in image_id or '\x00' in image_id
            or any(p in ('', '.', '..') for p in parts)):
        raise ValueError(f'image id {image_id!r} cannot be used as an output '
                         'file name (absolute, empty part, "." / ".." or backslash)')
    return image_id
