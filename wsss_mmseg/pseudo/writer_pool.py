"""A small fork-based process pool for the post-processing stage of the job.

``concurrent.futures.ProcessPoolExecutor`` can hang in ``shutdown`` when a worker is
killed while a large task is in its queue (CPython's broken-pool path joins a feeder
thread blocked on a full pipe); a killed worker must instead stop the job at once. Here
each worker has its own pipe and gets a task only when it is idle, so a send never
waits on a busy worker, and a dead worker is seen as EOF on its pipe.

Workers are forked once, before the generator is built (no torch thread pool exists
yet); they close the parent's work-dir lock descriptors first and never run torch.
"""
from __future__ import annotations

import multiprocessing as mp
from multiprocessing.connection import wait
from typing import Any, Callable, List, Tuple

from . import io as _io
from .workdir import close_inherited_locks

__all__ = ['WriterPool', 'WorkerDiedError']


class WorkerDiedError(RuntimeError):
    """A post-processing worker ended without answering (killed, out of memory)."""


def _worker_loop(conn: Any, fn: Callable[[Any], Any], parent_ends: List[Any]) -> None:
    # the job's ends of the pipes, inherited through fork: closed, so that the job's death
    # (even SIGKILL) is EOF here and the worker ends instead of waiting forever
    for end in parent_ends:
        end.close()
    close_inherited_locks()
    _io.FAULT_KILLS_PARENT = True  # test-only fault injection: a kill here is the job's kill
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        conn.send(fn(task))


class WriterPool:
    """``n`` forked workers running ``fn(task)``; one task at a time per worker.

    Args:
        n: Number of workers (>= 1).
        fn: Picklable-free callable (inherited through ``fork``).
    """

    def __init__(self, n: int, fn: Callable[[Any], Any]) -> None:
        ctx = mp.get_context('fork')
        self._workers: List[List[Any]] = []  # [process, connection, key or None]
        for _ in range(int(n)):
            parent, child = ctx.Pipe()
            parent_ends = [parent] + [w[1] for w in self._workers]
            proc = ctx.Process(target=_worker_loop, args=(child, fn, parent_ends), daemon=True)
            proc.start()
            child.close()
            self._workers.append([proc, parent, None])

    def has_idle(self) -> bool:
        """Whether a worker can take a task now."""
        return any(w[2] is None for w in self._workers)

    def busy(self) -> int:
        """Number of tasks in flight."""
        return sum(w[2] is not None for w in self._workers)

    def submit(self, key: Any, task: Any) -> None:
        """Give ``task`` to an idle worker (call :meth:`has_idle` first)."""
        for w in self._workers:
            if w[2] is None:
                try:
                    w[1].send(task)
                except OSError as exc:
                    raise WorkerDiedError(f'post-processing worker pid {w[0].pid} is gone '
                                          f'(exit code {w[0].exitcode})') from exc
                w[2] = (key,)
                return
        raise RuntimeError('no idle post-processing worker')

    def collect(self, *, block: bool) -> List[Tuple[Any, Any]]:
        """``(key, result)`` of finished tasks (waits for at least one when ``block``)."""
        busy = {w[1]: w for w in self._workers if w[2] is not None}
        if not busy:
            return []
        ready = wait(list(busy), timeout=None if block else 0)
        out = []
        for conn in ready:
            w = busy[conn]
            try:
                result = conn.recv()
            except (EOFError, OSError) as exc:
                w[0].join(timeout=1)
                raise WorkerDiedError(
                    f'a post-processing worker (pid {w[0].pid}) died while handling {w[2][0]!r} '
                    f'(exit code {w[0].exitcode}); rerun the same command to resume '
                    '(finished images are kept)') from exc
            out.append((w[2][0], result))
            w[2] = None
        return out

    def close(self) -> None:
        """Stop the workers (ask, then terminate what does not end within 5 s)."""
        for proc, conn, _ in self._workers:
            try:
                conn.send(None)
            except OSError:
                pass
        for proc, conn, _ in self._workers:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
            conn.close()
        self._workers = []


