"""Tests of :mod:`wsss_mmseg.utils.atomic` (the caches' atomic writer)."""
import os

import pytest

from wsss_mmseg.utils import atomic
from wsss_mmseg.utils.atomic import atomic_replace


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith('.tmp'))


def test_writes_new_file_and_replaces_old_content(tmp_path):
    path = tmp_path / 'cache.json'
    atomic_replace(path, lambda f: f.write(b'first'))
    assert path.read_bytes() == b'first'
    atomic_replace(path, lambda f: f.write(b'second, longer'))
    assert path.read_bytes() == b'second, longer'
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize('error', [OSError('disk full'), KeyboardInterrupt()])
def test_failed_write_keeps_old_file_and_removes_temp(tmp_path, error):
    path = tmp_path / 'cache.json'
    path.write_bytes(b'old')
    seen = []

    def write(f):
        f.write(b'half of the new')
        seen.append(_leftovers(tmp_path))  # the temp file, next to the final name
        raise error

    with pytest.raises(type(error)):
        atomic_replace(path, write)
    assert path.read_bytes() == b'old'
    assert _leftovers(tmp_path) == []
    # while writing, the temp file lived in the final name's folder (same file system)
    assert len(seen[0]) == 1 and seen[0][0].startswith('.cache.json.')


def test_fsync_before_rename_unless_disabled(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, 'fsync', lambda fd: (events.append('fsync'), real_fsync(fd)))
    monkeypatch.setattr(atomic.os, 'replace', lambda a, b: (events.append('replace'), real_replace(a, b)))
    atomic_replace(tmp_path / 'a', lambda f: f.write(b'x'))
    assert events == ['fsync', 'replace']
    events.clear()
    atomic_replace(tmp_path / 'b', lambda f: f.write(b'y'), fsync=False)
    assert events == ['replace']
    assert (tmp_path / 'b').read_bytes() == b'y'


def test_missing_folder_is_an_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_replace(tmp_path / 'no_such_dir' / 'x', lambda f: f.write(b''))
