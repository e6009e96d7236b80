"""Tests of :mod:`wsss_mmseg.utils.heap` (fixed glibc mmap threshold for data-loading workers)."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wsss_mmseg.utils import heap

_PROBE = textwrap.dedent('''
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location('heap', sys.argv[2])  # the pure module alone (fast)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.path.insert(0, sys.argv[3])
    from mmap_probe import MmappedBlocksAfterThresholdRaise
    if sys.argv[1] == 'fixed':
        assert module.use_fixed_mmap_threshold() is True
    print(MmappedBlocksAfterThresholdRaise()[0])
''')


def _mmapped_blocks(mode):
    out = subprocess.run([sys.executable, '-c', _PROBE, mode, heap.__file__, str(Path(__file__).resolve().parent)],
                         capture_output=True, text=True, check=True)
    blocks = int(out.stdout.strip())
    if blocks == -1:
        pytest.skip('the fresh interpreter holds >= 22 MiB of free heap chunks: no block size tells the thresholds apart')
    return blocks


@pytest.mark.skipif(heap._glibc() is None, reason='glibc only (mallopt)')
def test_fixed_threshold_keeps_image_sized_blocks_out_of_the_heap():
    try:
        default = _mmapped_blocks('default')
    except subprocess.CalledProcessError as exc:
        if 'mallinfo2' in exc.stderr:
            pytest.skip('glibc < 2.33 has no mallinfo2 to observe the allocation')
        raise
    # after a freed 24 MiB mapping, glibc's dynamic threshold is 24 MiB: an 8+ MiB block grows the heap
    assert default == 0
    assert _mmapped_blocks('fixed') == 1  # fixed 128 KiB threshold: its own mapping, returned on free


@pytest.mark.parametrize('bad', [0, -1, 1.5, True, '128k'])
def test_bad_threshold_is_refused(bad):
    with pytest.raises(ValueError, match='threshold must be a positive number of bytes'):
        heap.use_fixed_mmap_threshold(bad)


def test_no_glibc_changes_nothing(monkeypatch):
    monkeypatch.setattr(heap, '_glibc', lambda: None)
    assert heap.use_fixed_mmap_threshold() is False
