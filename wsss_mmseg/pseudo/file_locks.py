"""Advisory file locks (``flock``) that forked worker processes let go of.

The lock primitive of the work-dir rule "one job per folder", which
:mod:`wsss_mmseg.pseudo.workdir` states and applies
(:func:`~wsss_mmseg.pseudo.workdir.acquire_work_dir_lock`; it re-exports these names).
"""
from __future__ import annotations

import datetime
import os
import socket
from typing import Any, Optional, Tuple, Union

PathLike = Union[str, os.PathLike]

__all__ = ['try_flock', 'close_inherited_locks']

#: File descriptors of the locks this process holds. A ``flock`` belongs to the open file,
#: which forked children (data-loading and post-processing workers) share: they close
#: these descriptors first (:func:`close_inherited_locks`), so that a killed job's
#: orphaned workers never keep its work dir locked.
_HELD_LOCK_FDS: set = set()


class _LockFile:
    """An open lock file; ``close()`` releases the lock."""

    def __init__(self, f: Any) -> None:
        self._f = f
        _HELD_LOCK_FDS.add(f.fileno())

    def fileno(self) -> int:
        return self._f.fileno()

    def close(self) -> None:
        if not self._f.closed:
            _HELD_LOCK_FDS.discard(self._f.fileno())
            self._f.close()


def close_inherited_locks() -> None:
    """In a forked worker: drop the parent's lock descriptors (the parent keeps its lock)."""
    for fd in list(_HELD_LOCK_FDS):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_LOCK_FDS.clear()


def try_flock(path: PathLike) -> Tuple[Optional[Any], Optional[str]]:
    """Try to take an exclusive advisory ``flock`` on ``path`` without waiting.

    Args:
        path: Lock file (created if missing).

    Returns:
        ``(open file, None)`` when taken (keep it open to hold the lock), ``(None, holder)``
        when another process holds it, ``(None, None)`` where ``fcntl`` is unavailable.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory lock
        return None, None
    f = open(path, 'a+', encoding='utf-8')
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or 'holder unknown'
        f.close()
        return None, holder
    f.seek(0)
    f.truncate()
    f.write(f'pid {os.getpid()} on {socket.gethostname()} since '
            f'{datetime.datetime.now().isoformat(timespec="seconds")}\n')
    f.flush()
    return _LockFile(f), None
