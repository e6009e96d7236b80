"""Tests of :mod:`wsss_mmseg.pseudo.pipeline` set-up pieces (the job-level flow is in test_job.py)."""
import sys
from pathlib import Path

import pytest
import torch

from wsss_mmseg.pseudo import pipeline
from wsss_mmseg.utils import heap

sys.path.insert(0, str(Path(__file__).resolve().parent))  # pseudo_fakes
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'test_utils'))  # a spawned worker imports the probe by name
from mmap_probe import MmappedBlocksAfterThresholdRaise  # noqa: E402


def test_loader_worker_init_drops_locks_and_fixes_the_mmap_threshold(monkeypatch):
    calls = []
    monkeypatch.setattr(pipeline, 'close_inherited_locks', lambda: calls.append('locks'))
    monkeypatch.setattr(heap, 'use_fixed_mmap_threshold', lambda *a, **k: calls.append('heap') or True)
    pipeline._init_loader_worker(0)
    assert calls == ['locks', 'heap']


def _has_mallinfo2():
    libc = heap._glibc()
    return libc is not None and hasattr(libc, 'mallinfo2')


@pytest.mark.skipif(not _has_mallinfo2(), reason='glibc >= 2.33 (mallinfo2) needed to observe the allocation')
@pytest.mark.parametrize('init, expected', [(None, 0), (pipeline._init_loader_worker, 1)])
def test_loading_worker_serves_image_sized_blocks_by_mmap(init, expected):
    # a spawned worker starts from a small heap (a forked one inherits this process's free space)
    loader = torch.utils.data.DataLoader(MmappedBlocksAfterThresholdRaise(), batch_size=None,
                                         num_workers=1, worker_init_fn=init,
                                         multiprocessing_context='spawn')
    got = [int(x) for x in loader]
    if got == [-1]:
        pytest.skip('the worker heap holds >= 22 MiB of free chunks: no block size tells the thresholds apart')
    assert got == [expected]


@pytest.mark.parametrize('workers', [0, 1])
def test_the_job_sets_the_threshold_in_its_loading_workers_only(tmp_path, monkeypatch, workers):
    import os

    from mmengine.config import Config

    import pseudo_fakes as pf
    from wsss_mmseg.pseudo.job import run_pseudo_job

    marks = tmp_path / 'marks'
    marks.mkdir()

    def record(*args, **kwargs):  # runs in the (forked) loading worker
        (marks / str(os.getpid())).touch()
        return True

    monkeypatch.setattr(heap, 'use_fixed_mmap_threshold', record)
    dataset = pf.folder_dataset(tmp_path / 'data', n=4)
    cfg = Config.fromfile(str(pf.write_config(tmp_path / 'cfg.py', dataset=dataset,
                                              extra=f'pseudo_job = dict(num_workers={workers})\n')))
    summary = run_pseudo_job(cfg, work_dir=tmp_path / 'out', logger='silent')
    assert summary['counts']['done'] == 4
    pids = [p.name for p in marks.iterdir()]
    assert len(pids) == workers and str(os.getpid()) not in pids


@pytest.mark.parametrize('data', ['good', 'failing'])
def test_overlapped_pipeline_gives_the_inline_outputs_and_failures(tmp_path, data):
    """1 loading + 1 post-processing worker, batches of 3: same bytes, same failure records, and
    the execution options are not settings (either mode resumes the other's outputs)."""
    from mmengine.config import Config

    import pseudo_fakes as pf
    from wsss_mmseg.pseudo.job import run_pseudo_job

    dataset = pf.folder_dataset(tmp_path / 'data', n=6) if data == 'good' else pf.failing_voc_dataset(tmp_path / 'data')[0]
    runs = {}
    for mode, extra in (('inline', ''),
                        ('overlapped', 'pseudo_job = dict(num_workers=1, postprocess_workers=1)\n')):
        cfg = Config.fromfile(str(pf.write_config(tmp_path / f'{mode}.py', dataset=dataset, fail_label=7,
                                                  extra=extra)))
        cfg.generator.batch_size = 3
        summary = run_pseudo_job(cfg, work_dir=tmp_path / mode, save_cams=True, logger='silent')
        runs[mode] = (cfg, summary, pf.tree_bytes(tmp_path / mode))
    (_, inline, inline_files), (overlapped_cfg, overlapped, overlapped_files) = runs['inline'], runs['overlapped']
    assert overlapped_files == inline_files and len(inline_files) == 3 * inline['counts']['done']
    assert overlapped['counts'] == inline['counts']
    assert [(f['id'], f['stage'], f['reason']) for f in overlapped['failures']] == \
        [(f['id'], f['stage'], f['reason']) for f in inline['failures']]
    if data == 'failing':
        assert inline['counts']['done'] == 1 and len(inline['failures']) == 6
    again = run_pseudo_job(overlapped_cfg, work_dir=tmp_path / 'inline', save_cams=True, logger='silent')
    assert again['counts']['skipped_resumed'] == inline['counts']['done']
