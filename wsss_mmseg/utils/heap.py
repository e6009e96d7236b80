"""Keep a process that decodes many images of different sizes from growing (glibc malloc).

glibc serves an allocation of at least ``M_MMAP_THRESHOLD`` bytes (128 KiB by default) with
its own ``mmap`` and gives it back to the system on ``free``. But the threshold is *dynamic*:
each time such a block is freed, the threshold rises to its size (up to 32 MiB), so from then
on image-sized buffers (a decoded VOC image is ~0.5 MiB, its network input ~3 MiB) come from
the heap. A process that decodes images of many different sizes then fragments the heap and
its private memory grows with the number of images, although nothing is kept alive.

Measured (pseudo-label job, overlapped pipeline, 1 data-loading worker, tiny CLIP, CRF off,
the 60 VOC sample images and the same list ten times, 2-core CPU): the loading worker's private
dirty memory went from 39 MiB after 60 images to 231 MiB after 600 (RSS 573 -> 764 MiB); with
a fixed threshold 33 -> 35 MiB (RSS 564 -> 567 MiB). The cost is the page faults of fresh
mappings: decoding + preprocessing one VOC image took ~4 ms more in a micro-benchmark
(6.6-7.5 -> 10.4-11.0 ms), and the job's loop time did not change beyond noise (32.1 s vs
32.7 s for 600 images; the worker runs beside the model). ``malloc_trim`` every 16 images
cost ~1 ms per image but left the worker at 81 MiB.

:func:`use_fixed_mmap_threshold` sets the fixed threshold in the calling process. It is
called in the pseudo-label job's data-loading workers only: there every large buffer is an
image, while in the model process a fixed threshold would turn each activation allocation
into an ``mmap`` plus page faults.

Pure Python (``ctypes``; no torch, no mmseg/mmengine import).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Optional

__all__ = ['DEFAULT_MMAP_THRESHOLD', 'use_fixed_mmap_threshold']

#: glibc's initial ``M_MMAP_THRESHOLD`` (128 KiB); setting it explicitly also turns off the
#: dynamic adjustment.
DEFAULT_MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt parameter number (malloc.h)


def _glibc() -> Optional[ctypes.CDLL]:
    if not sys.platform.startswith('linux'):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        libc.gnu_get_libc_version  # only glibc has it (musl, bionic: no mallopt tuning)
        libc.mallopt
    except (OSError, AttributeError):
        return None
    return libc


def use_fixed_mmap_threshold(threshold: int = DEFAULT_MMAP_THRESHOLD) -> bool:
    """Serve every allocation of ``threshold`` bytes or more with ``mmap``, from now on.

    Args:
        threshold: Size in bytes (glibc accepts up to 32 MiB on 64-bit systems).

    Returns:
        True if the C library took the setting; False where it is not glibc (nothing changed).

    Raises:
        ValueError: ``threshold`` is not a positive number of bytes.
    """
    if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold <= 0:
        raise ValueError(f'threshold must be a positive number of bytes, got {threshold!r}')
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
