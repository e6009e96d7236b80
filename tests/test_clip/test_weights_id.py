"""weights_content_id: the identity of CLIP weights for fingerprints and cache keys (issue #16.2).

Expected file ids are computed independently with ``hashlib`` on the bytes written by the test.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from pathlib import Path

import pytest

from wsss_mmseg.clip import weights_id
from wsss_mmseg.clip.weights_id import HASH_CACHE_NAME, weights_content_id
from wsss_mmseg.utils import file_hash


@pytest.fixture(autouse=True)
def _fresh_memory():
    weights_id.clear_memory_cache()
    yield
    weights_id.clear_memory_cache()


@pytest.fixture
def count_hashes(monkeypatch):
    """Count the files actually read by the hasher."""
    calls = []
    real = file_hash.file_sha256

    def counting(path, **kwargs):
        calls.append(os.fspath(path))
        return real(path, **kwargs)

    monkeypatch.setattr(file_hash, 'file_sha256', counting)  # the one cached helper reads through it
    return calls


def _write(path: Path, data: bytes, mtime_ns: int | None = None) -> Path:
    path.write_bytes(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def test_file_id_is_sha256_of_content(tmp_path):
    data = b'weights \x00\x01' * 1000
    f = _write(tmp_path / 'a.pt', data)
    assert weights_content_id(f, cache_dir=tmp_path / 'c') == 'sha256:' + hashlib.sha256(data).hexdigest()
    # small chunks give the same digest as one read
    assert weights_id.file_sha256(f, chunk_size=7) == hashlib.sha256(data).hexdigest()


def test_same_content_different_path_same_id(tmp_path):
    a = _write(tmp_path / 'a.pt', b'x' * 100)
    (tmp_path / 'sub').mkdir()
    b = _write(tmp_path / 'sub' / 'b.bin', b'x' * 100)
    c = _write(tmp_path / 'c.pt', b'y' * 100)
    ids = [weights_content_id(p, cache_dir=tmp_path / 'cache') for p in (a, b, c)]
    assert ids[0] == ids[1] != ids[2]


def test_changed_content_same_path_new_id(tmp_path, count_hashes):
    cache = tmp_path / 'cache'
    f = _write(tmp_path / 'w.pt', b'A' * 64, mtime_ns=1_000_000_000_000_000_000)
    first = weights_content_id(f, cache_dir=cache)
    # same size, new content, new mtime: the replaced weights of issue #16
    _write(f, b'B' * 64, mtime_ns=1_000_000_000_500_000_000)
    second = weights_content_id(f, cache_dir=cache)
    assert first == 'sha256:' + hashlib.sha256(b'A' * 64).hexdigest()
    assert second == 'sha256:' + hashlib.sha256(b'B' * 64).hexdigest()
    assert len(count_hashes) == 2


def test_replaced_with_same_size_and_mtime_is_still_detected(tmp_path):
    """cp -p / mv of another file keep size and mtime; ctime/inode still change."""
    cache = tmp_path / 'cache'
    f = _write(tmp_path / 'w.pt', b'A' * 64, mtime_ns=1_000_000_000_000_000_000)
    first = weights_content_id(f, cache_dir=cache)
    other = _write(tmp_path / 'other.pt', b'C' * 64, mtime_ns=1_000_000_000_000_000_000)
    os.replace(other, f)  # new inode under the old name, same size and mtime
    assert weights_content_id(f, cache_dir=cache) == 'sha256:' + hashlib.sha256(b'C' * 64).hexdigest()
    assert first != weights_content_id(f, cache_dir=cache)


def test_unchanged_file_is_not_rehashed(tmp_path, count_hashes):
    cache = tmp_path / 'cache'
    f = _write(tmp_path / 'w.pt', b'Z' * 1000)
    first = weights_content_id(f, cache_dir=cache)
    assert len(count_hashes) == 1
    # a new process: nothing in memory, the JSON cache answers
    weights_id.clear_memory_cache()
    assert weights_content_id(f, cache_dir=cache) == first
    # through a symlink (same real path)
    link = tmp_path / 'link.pt'
    link.symlink_to(f)
    assert weights_content_id(link, cache_dir=cache) == first
    assert len(count_hashes) == 1
    entries = json.loads((cache / HASH_CACHE_NAME).read_text())['entries']
    assert list(entries) == [os.path.realpath(f)]
    assert entries[os.path.realpath(f)]['sha256'] == hashlib.sha256(b'Z' * 1000).hexdigest()


def test_stale_entry_of_another_stamp_is_not_used(tmp_path, count_hashes):
    """A planted entry with the wrong hash is used only while the stamp matches."""
    cache = tmp_path / 'cache'
    cache.mkdir()
    f = _write(tmp_path / 'w.pt', b'Q' * 10)
    real = os.path.realpath(f)
    stamp = list(weights_id.file_stamp(real))
    planted = '0' * 64
    (cache / HASH_CACHE_NAME).write_text(json.dumps(
        {'format': 1, 'entries': {real: {'stamp': stamp, 'sha256': planted}}}))
    assert weights_content_id(f, cache_dir=cache) == 'sha256:' + planted  # trusted: stamp matches
    weights_id.clear_memory_cache()
    stamp[1] += 1  # another mtime
    (cache / HASH_CACHE_NAME).write_text(json.dumps(
        {'format': 1, 'entries': {real: {'stamp': stamp, 'sha256': planted}}}))
    assert weights_content_id(f, cache_dir=cache) == 'sha256:' + hashlib.sha256(b'Q' * 10).hexdigest()
    assert len(count_hashes) == 1


@pytest.mark.parametrize('garbage', [b'{not json', b'', b'[1, 2]', b'{"format": 1, "entries": 3}',
                                     b'\xff\xfe\x00'])
def test_corrupt_cache_is_ignored_and_rewritten(tmp_path, garbage, count_hashes):
    cache = tmp_path / 'cache'
    cache.mkdir()
    (cache / HASH_CACHE_NAME).write_bytes(garbage)
    f = _write(tmp_path / 'w.pt', b'data')
    assert weights_content_id(f, cache_dir=cache) == 'sha256:' + hashlib.sha256(b'data').hexdigest()
    data = json.loads((cache / HASH_CACHE_NAME).read_text())
    assert data['format'] == 1 and os.path.realpath(f) in data['entries']
    assert not [p for p in cache.iterdir() if p.name.endswith('.tmp')]  # no temp file left


def test_unwritable_cache_still_returns_the_hash(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('not a folder')
    f = _write(tmp_path / 'w.pt', b'data')
    with pytest.warns(RuntimeWarning, match='not usable'):
        got = weights_content_id(f, cache_dir=blocker / 'cache')
    assert got == 'sha256:' + hashlib.sha256(b'data').hexdigest()


def test_default_cache_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv('WSSS_MMSEG_CACHE', str(tmp_path / 'root'))
    assert weights_id.cache_root() == tmp_path / 'root'
    f = _write(tmp_path / 'w.pt', b'data')
    weights_content_id(f)
    assert (tmp_path / 'root' / HASH_CACHE_NAME).is_file()
    monkeypatch.delenv('WSSS_MMSEG_CACHE')
    assert weights_id.cache_root() == Path.home() / '.cache' / 'wsss_mmseg'


def _hash_in_child(args):
    path, cache = args
    weights_id.clear_memory_cache()
    return weights_content_id(path, cache_dir=cache)


def test_concurrent_processes_agree_and_keep_every_entry(tmp_path):
    cache = tmp_path / 'cache'
    files = [_write(tmp_path / f'w{i}.pt', bytes([i]) * 5000) for i in range(6)]
    ctx = multiprocessing.get_context('fork')
    with ctx.Pool(3) as pool:
        got = pool.map(_hash_in_child, [(str(f), str(cache)) for f in files + files])
    expected = ['sha256:' + hashlib.sha256(bytes([i]) * 5000).hexdigest() for i in range(6)]
    assert got == expected + expected
    entries = json.loads((cache / HASH_CACHE_NAME).read_text())['entries']
    assert sorted(entries) == sorted(os.path.realpath(f) for f in files)  # no lost update


def test_non_file_identities(tmp_path):
    assert weights_content_id('openai', 'ViT-B-16') == 'open_clip:ViT-B-16:openai'
    assert weights_content_id('laion2b_s34b_b88k', 'ViT-B-16') == 'open_clip:ViT-B-16:laion2b_s34b_b88k'
    rnd = weights_content_id(None, 'ViT-B-16')
    assert rnd.startswith('random:ViT-B-16:seed=0:open_clip=') and ':torch=' in rnd
    assert rnd == weights_content_id(None, 'ViT-B-16')
    assert weights_content_id(None, 'RN50') != rnd


def test_bad_values_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.pt'):
        weights_content_id(tmp_path / 'missing.pt')
    with pytest.raises(FileNotFoundError, match='not a file'):
        weights_content_id(tmp_path)
    with pytest.raises(ValueError, match='model_name'):
        weights_content_id('openai')
    with pytest.raises(ValueError, match='model_name'):
        weights_content_id(None)
    with pytest.raises(ValueError, match='pretrained'):
        weights_content_id('')


def test_one_cached_hash_helper_in_a_pure_module():
    """weights_id and the pseudo-label fingerprint share utils/file_hash.py, which (like the
    ``utils`` package init the import runs, and weights_id) imports no mmseg/mmengine/torch."""
    import ast

    package = Path(weights_id.__file__).resolve().parents[1]

    def imports(rel):
        names = set()
        for node in ast.walk(ast.parse((package / rel).read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                names.add(('.' * node.level) + (node.module or ''))
        return names

    for rel in ('utils/file_hash.py', 'utils/atomic.py', 'utils/__init__.py', 'utils/images.py',
                'clip/weights_id.py'):
        heavy = [n for n in imports(rel) if n.lstrip('.').split('.')[0] in ('mmseg', 'mmengine', 'mmcv', 'torch')]
        assert not heavy, (rel, heavy)
    assert '..utils.file_hash' in imports('clip/weights_id.py')
    assert '..utils.file_hash' in imports('pseudo/fingerprint.py')
    # its only project import is the shared atomic writer (itself pure, checked above)
    assert [n for n in imports('utils/file_hash.py') if n.startswith('.') or n.startswith('wsss_mmseg')] == ['.atomic']
    assert weights_id.file_sha256 is file_hash.file_sha256
    assert weights_id.HASH_CACHE_NAME == file_hash.HASH_CACHE_NAME
