"""Atomic replacement of a small file (the caches' writer).

:func:`atomic_replace` writes a file next to its final name (``mkstemp`` in the same
folder, so the rename never crosses a file system), flushes and ``fsync``-s it, then
``os.replace``-s it over the final name: a reader sees the old file or the new one, never a
partial one, and a failed or interrupted write leaves no temporary file behind.

It serves the on-disk caches (:mod:`wsss_mmseg.utils.file_hash`,
:mod:`wsss_mmseg.text.feature_cache`) and the report page. The pseudo-label job's outputs go
through :func:`wsss_mmseg.pseudo.io.atomic_open` instead: same rule, plus the job's
fault-injection points (the kill-point reliability tests count them) and the directory
``fsync`` that makes a written output survive a power cut.

Pure Python (no torch, no mmseg/mmengine import).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Union

__all__ = ['atomic_replace']


def atomic_replace(path: Union[str, os.PathLike], write: Callable[[BinaryIO], None], *,
                   fsync: bool = True) -> None:
    """Write ``path`` through a temporary file in its folder and move it into place.

    Args:
        path: Final file name; its folder must exist.
        write: Called once with the temporary file opened for binary writing.
        fsync: Flush the data to disk before the rename (a crash right after the call then
            cannot leave an empty file under the final name).

    Raises:
        Whatever ``write`` or the file system raises; the temporary file is removed first
        and the previous content of ``path`` (if any) is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
