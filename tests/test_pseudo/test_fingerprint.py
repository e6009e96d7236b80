"""The settings fingerprint of a work dir (wsss_mmseg.pseudo.fingerprint)."""
import hashlib
import os

from wsss_mmseg.pseudo.fingerprint import config_fingerprint
from wsss_mmseg.pseudo.job_options import resolve_job_options


def test_label_file_hashes_are_cached_and_edits_change_the_fingerprint(tmp_path, monkeypatch):
    """Label files go through the one cached file-hash helper (the one weights use)."""
    from wsss_mmseg.utils import file_hash
    monkeypatch.setenv(file_hash.CACHE_ENV, str(tmp_path / 'cache'))
    file_hash.clear_memory_cache()
    reads = []
    real = file_hash.file_sha256

    def counting(path, **kwargs):
        reads.append(os.fspath(path))
        return real(path, **kwargs)

    monkeypatch.setattr(file_hash, 'file_sha256', counting)
    labels = tmp_path / 'labels.json'
    old, new = b'{"a.png": ["dog"]}', b'{"a.png": ["cat"]}'
    assert len(old) == len(new)
    labels.write_bytes(old)
    os.utime(labels, ns=(1_600_000_000_000_000_000,) * 2)
    cfg = dict(pseudo_dataset=dict(type='Src'), generator=dict(type='Gen'), mask_maker=dict(type='Mask'))
    job = resolve_job_options(cfg)
    try:
        first = config_fingerprint(cfg, job, source_files=[labels])
        assert first['settings']['label_files'] == {str(labels): hashlib.sha256(old).hexdigest()}
        assert reads == [os.path.realpath(labels)]
        assert config_fingerprint(cfg, job, source_files=[labels]) == first  # in-process memo
        file_hash.clear_memory_cache()  # another process: the on-disk cache answers
        assert config_fingerprint(cfg, job, source_files=[labels]) == first
        assert len(reads) == 1  # the unchanged file was never read again
        labels.write_bytes(new)  # same size, new content, new mtime
        os.utime(labels, ns=(1_600_000_001_000_000_000,) * 2)
        second = config_fingerprint(cfg, job, source_files=[labels])
        assert second['settings']['label_files'] == {str(labels): hashlib.sha256(new).hexdigest()}
        assert second['sha256'] != first['sha256']
        assert len(reads) == 2
    finally:
        file_hash.clear_memory_cache()
