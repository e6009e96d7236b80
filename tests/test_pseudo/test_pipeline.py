"""Tests of :mod:`wsss_mmseg.pseudo.pipeline` set-up pieces (the job-level flow is in test_job.py)."""
import ctypes

import pytest
import torch

from wsss_mmseg.pseudo import pipeline
from wsss_mmseg.utils import heap


def test_loader_worker_init_drops_locks_and_fixes_the_mmap_threshold(monkeypatch):
    calls = []
    monkeypatch.setattr(pipeline, 'close_inherited_locks', lambda: calls.append('locks'))
    monkeypatch.setattr(heap, 'use_fixed_mmap_threshold', lambda *a, **k: calls.append('heap') or True)
    pipeline._init_loader_worker(0)
    assert calls == ['locks', 'heap']


class _MmappedBlocksAfterThresholdRaise:
    """In the worker: does an 8 MiB block get its own mapping after a 16 MiB one was freed?"""

    def __len__(self):
        return 1

    def __getitem__(self, _):
        libc = ctypes.CDLL('libc.so.6')

        class MallInfo2(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd',
                                                       'usmblks', 'fsmblks', 'uordblks', 'fordblks',
                                                       'keepcost')]

        libc.mallinfo2.restype = MallInfo2
        libc.malloc.restype = ctypes.c_void_p
        libc.malloc.argtypes = [ctypes.c_size_t]
        libc.free.argtypes = [ctypes.c_void_p]
        libc.free(libc.malloc(16 << 20))  # raises glibc's dynamic threshold to 16 MiB (if dynamic)
        before = libc.mallinfo2().hblks
        block = libc.malloc(8 << 20)
        grown = libc.mallinfo2().hblks - before
        libc.free(block)
        return grown


def _has_mallinfo2():
    libc = heap._glibc()
    return libc is not None and hasattr(libc, 'mallinfo2')


@pytest.mark.skipif(not _has_mallinfo2(), reason='glibc >= 2.33 (mallinfo2) needed to observe the allocation')
@pytest.mark.parametrize('init, expected', [(None, 0), (pipeline._init_loader_worker, 1)])
def test_loading_worker_serves_image_sized_blocks_by_mmap(init, expected):
    loader = torch.utils.data.DataLoader(_MmappedBlocksAfterThresholdRaise(), batch_size=None,
                                         num_workers=1, worker_init_fn=init)
    assert [int(x) for x in loader] == [expected]
