"""Tests of :mod:`wsss_mmseg.pseudo.writer_pool` (the job's post-processing processes)."""
import os
import signal
import time

import pytest

from wsss_mmseg.pseudo.writer_pool import WorkerDiedError, WriterPool


def _square(x):
    return x * x, os.getpid()


def _gone(pid):
    """True once ``pid`` has exited (a zombie not yet reaped counts as gone)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] in ('Z', 'X')
    except FileNotFoundError:
        return True


def test_tasks_run_in_the_workers_one_at_a_time_each():
    pool = WriterPool(2, _square)
    try:
        results = {}
        for key in range(5):
            while not pool.has_idle():
                results.update(dict(pool.collect(block=True)))
            pool.submit(key, key + 1)
            assert pool.busy() <= 2
        while pool.busy():
            results.update(dict(pool.collect(block=True)))
    finally:
        pool.close()
    assert {k: v[0] for k, v in results.items()} == {k: (k + 1) ** 2 for k in range(5)}
    assert os.getpid() not in {v[1] for v in results.values()}


def test_a_killed_worker_is_reported_with_its_task():
    pool = WriterPool(1, lambda x: time.sleep(30))
    try:
        pool.submit('img07', 0)
        os.kill(pool._workers[0][0].pid, signal.SIGKILL)
        with pytest.raises(WorkerDiedError, match=r"died while handling 'img07'.*rerun the same command"):
            pool.collect(block=True)
    finally:
        pool.close()


@pytest.mark.parametrize('n', [1, 3])
def test_workers_end_when_the_job_is_killed(n):
    """SIGKILL of the job process must not leave its workers waiting forever (orphans)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the "job"
        try:
            os.close(read_end)
            pool = WriterPool(n, _square)
            os.write(write_end, ' '.join(str(w[0].pid) for w in pool._workers).encode() + b'\n')
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        workers = [int(p) for p in f.readline().split()]
    assert len(workers) == n
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(_gone(p) for p in workers):
        time.sleep(0.05)
    alive = [p for p in workers if not _gone(p)]
    for p in alive:  # do not leave them behind if the assertion fails
        os.kill(p, signal.SIGKILL)
    assert not alive, f'post-processing workers {alive} outlived the killed job'
