"""Tests of :mod:`wsss_mmseg.utils.heap` (fixed glibc mmap threshold for data-loading workers)."""
import subprocess
import sys
import textwrap

import pytest

from wsss_mmseg.utils import heap

_PROBE = textwrap.dedent('''
    import ctypes, importlib.util, sys
    spec = importlib.util.spec_from_file_location('heap', sys.argv[2])  # the pure module alone (fast)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    libc = ctypes.CDLL('libc.so.6')

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd',
                                                   'usmblks', 'fsmblks', 'uordblks', 'fordblks', 'keepcost')]

    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    if sys.argv[1] == 'fixed':
        assert module.use_fixed_mmap_threshold() is True
    # freeing a 16 MiB mmapped block raises glibc's dynamic threshold to 16 MiB ...
    libc.free(libc.malloc(16 << 20))
    before = libc.mallinfo2().hblks
    block = libc.malloc(8 << 20)
    # ... so an 8 MiB block then grows the heap, unless the threshold is fixed
    print(libc.mallinfo2().hblks - before)
    libc.free(block)
''')


def _mmapped_blocks(mode):
    out = subprocess.run([sys.executable, '-c', _PROBE, mode, heap.__file__], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(heap._glibc() is None, reason='glibc only (mallopt)')
def test_fixed_threshold_keeps_image_sized_blocks_out_of_the_heap():
    try:
        default = _mmapped_blocks('default')
    except subprocess.CalledProcessError as exc:
        if 'mallinfo2' in exc.stderr:
            pytest.skip('glibc < 2.33 has no mallinfo2 to observe the allocation')
        raise
    assert default == 0  # glibc's dynamic threshold: the 8 MiB block is a heap chunk
    assert _mmapped_blocks('fixed') == 1  # fixed 128 KiB threshold: its own mapping, returned on free


@pytest.mark.parametrize('bad', [0, -1, 1.5, True, '128k'])
def test_bad_threshold_is_refused(bad):
    with pytest.raises(ValueError, match='threshold must be a positive number of bytes'):
        heap.use_fixed_mmap_threshold(bad)


def test_no_glibc_changes_nothing(monkeypatch):
    monkeypatch.setattr(heap, '_glibc', lambda: None)
    assert heap.use_fixed_mmap_threshold() is False
