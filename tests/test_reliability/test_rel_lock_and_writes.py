"""One job per work dir (lock), and write failures (unwritable dir, disk full mid-run)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mmengine.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rel_common as rc  # noqa: E402
import pseudo_fakes as pf  # noqa: E402
import wsss_mmseg.datasets  # noqa: E402,F401
from wsss_mmseg.pseudo.io import TMP_SUFFIX  # noqa: E402
from wsss_mmseg.pseudo.job import (LOCK_FILE, OutputWriteError, WorkDirLockedError,  # noqa: E402
                                   acquire_work_dir_lock, check_writable, run_pseudo_job)


def _final(root):
    return {k: v for k, v in pf.tree_bytes(root).items() if not k.endswith(TMP_SUFFIX)}


@pytest.fixture
def job(tmp_path):
    ds = pf.folder_dataset(tmp_path / 'data', n=5)
    cfg_path = pf.write_config(tmp_path / 'cfg.py', dataset=ds)
    cfg = Config.fromfile(str(cfg_path))
    ref = tmp_path / 'ref'
    run_pseudo_job(cfg, work_dir=ref, save_cams=True, logger=None)
    return cfg, cfg_path, pf.tree_bytes(ref)


# ----------------------------------------------------------------------- lock
def test_second_job_on_a_locked_dir_is_refused_with_dir_and_pid(tmp_path, job):
    cfg, _, reference = job
    work = tmp_path / 'work'
    work.mkdir()
    holder = acquire_work_dir_lock(work)
    try:
        with pytest.raises(WorkDirLockedError) as info:
            run_pseudo_job(cfg, work_dir=work, save_cams=True, logger=None)
        msg = str(info.value)
        assert str(work) in msg and f'pid {os.getpid()}' in msg
        assert not (work / 'masks').exists()  # refused before touching anything
    finally:
        holder.close()
    run_pseudo_job(cfg, work_dir=work, save_cams=True, logger=None)  # released: runs
    assert pf.tree_bytes(work) == reference
    # the lock is released when the job returns (another job can start at once)
    acquire_work_dir_lock(work).close()


def _fork_job(cfg, work, msg_file=None):
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            run_pseudo_job(cfg, work_dir=work, save_cams=True, logger=None)
        except WorkDirLockedError as exc:
            Path(msg_file).write_text(str(exc))
            code = 5
        except BaseException:  # noqa: BLE001
            code = 3
        os._exit(code)
    return pid


def test_two_concurrent_processes_one_runs_one_refuses(tmp_path):
    ds = pf.folder_dataset(tmp_path / 'data', n=4)
    cfg = Config.fromfile(str(pf.write_config(tmp_path / 'cfg.py', dataset=ds, delay=0.3)))
    work = tmp_path / 'work'
    first = _fork_job(cfg, work)
    try:
        deadline = time.monotonic() + 30
        while not ((work / LOCK_FILE).is_file() and 'pid' in (work / LOCK_FILE).read_text()):
            assert time.monotonic() < deadline
            time.sleep(0.005)
        second = _fork_job(cfg, work, tmp_path / 'refused.txt')
        _, status2 = os.waitpid(second, 0)
        _, status1 = os.waitpid(first, 0)
    finally:
        for p in (first,):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert os.WEXITSTATUS(status2) == 5, 'the second job was not refused'
    msg = (tmp_path / 'refused.txt').read_text()
    assert str(work) in msg and f'pid {first}' in msg
    assert os.WIFEXITED(status1) and os.WEXITSTATUS(status1) == 0
    ref = tmp_path / 'ref'
    run_pseudo_job(cfg, work_dir=ref, save_cams=True, logger=None)
    assert pf.tree_bytes(work) == pf.tree_bytes(ref)
    assert json.loads((work / 'summary.json').read_text())['counts'] == dict(
        total=4, done=4, processed=4, skipped_resumed=0, failed=0, evaluation_failed=0)


# -------------------------------------------------------------- write failures
def test_unwritable_output_paths_fail_fast_naming_the_path(tmp_path, job):
    cfg = job[0]
    blocker = tmp_path / 'a_file'
    blocker.write_text('x')
    with pytest.raises(PermissionError, match='cannot create the output directory') as info:
        run_pseudo_job(cfg, work_dir=blocker / 'sub', logger=None)
    assert str(blocker / 'sub') in str(info.value)
    with pytest.raises(NotADirectoryError, match='exists and is not a directory') as info:
        check_writable(blocker)
    assert str(blocker) in str(info.value)
    assert blocker.read_text() == 'x'


def test_disk_full_mid_run_stops_the_job_and_a_rerun_resumes(tmp_path, job, monkeypatch):
    cfg, _, reference = job
    work = tmp_path / 'work'
    monkeypatch.setenv('WSSS_MMSEG_FAULT', 'write:3:enospc')  # 3rd mask write: disk full
    monkeypatch.setenv('WSSS_MMSEG_FAULT_PATH', 'masks/')
    with pytest.raises(OutputWriteError) as info:
        run_pseudo_job(cfg, work_dir=work, save_cams=True, logger=None)
    msg = str(info.value)
    assert str(work / 'masks' / 'img02.png') in msg and 'No space left on device' in msg
    assert 'rerun' in msg and "image 'img02'" in msg
    written = _final(work)
    assert sorted(k for k in written if k.startswith('masks/')) == ['masks/img00.png',
                                                                    'masks/img01.png']
    for name, data in written.items():
        assert data == reference[name], name
    assert not list(work.rglob(f'*{TMP_SUFFIX}'))  # the failed temp file was removed
    assert not (work / 'summary.json').exists()
    # the lock was released by the failing job
    acquire_work_dir_lock(work).close()
    monkeypatch.delenv('WSSS_MMSEG_FAULT')
    summary = run_pseudo_job(cfg, work_dir=work, save_cams=True, logger=None)
    assert pf.tree_bytes(work) == reference
    assert summary['counts']['skipped_resumed'] == 2 and summary['counts']['processed'] == 3


def test_disk_full_while_writing_the_summary_names_it(tmp_path, job, monkeypatch):
    cfg, _, reference = job
    work = tmp_path / 'work'
    monkeypatch.setenv('WSSS_MMSEG_FAULT', 'write:1:enospc')
    monkeypatch.setenv('WSSS_MMSEG_FAULT_PATH', 'summary.json')
    with pytest.raises(OSError, match='No space left on device') as info:
        run_pseudo_job(cfg, work_dir=work, save_cams=True, logger=None)
    assert str(work / 'summary.json') in str(info.value)
    assert pf.tree_bytes(work) == reference and not (work / 'summary.json').exists()
    monkeypatch.delenv('WSSS_MMSEG_FAULT')
    assert run_pseudo_job(cfg, work_dir=work, save_cams=True,
                          logger=None)['counts']['skipped_resumed'] == 5


def test_cli_disk_full_exit_code_and_message(tmp_path, job):
    _, cfg_path, reference = job
    work = tmp_path / 'work'
    out = subprocess.run([sys.executable, str(rc.TOOL), str(cfg_path), '--work-dir', str(work)],
                         cwd=rc.REPO, capture_output=True, text=True, timeout=120,
                         env=rc.sub_env(WSSS_MMSEG_FAULT='write:2:enospc',
                                        WSSS_MMSEG_FAULT_PATH='confidence/'))
    assert out.returncode == 2, out.stderr[-2000:]
    assert 'No space left on device' in out.stderr
    assert str(work / 'confidence' / 'img01.png') in out.stderr
    assert sorted(_final(work)) == ['confidence/img00.png', 'masks/img00.png']
