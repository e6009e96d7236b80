"""tools/slurm_generate.sh (issue #12 item 7): syntax, the srun command it assembles, and one
single-process run through mmengine's slurm launcher on CPU with a fake ``srun``."""
from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / 'tools' / 'slurm_generate.sh'
TOOL = REPO / 'tools' / 'generate_pseudo.py'

FAKE_SRUN = r'''#!/usr/bin/env bash
# Records its arguments (one per line) and environment, then, with SRUN_EXEC=1, runs the
# command after the srun options as Slurm would run task 0 of a 1-task job.
printf '%s\n' "$@" > "$SRUN_RECORD"
printf 'MASTER_PORT=%s\nPYTHONPATH=%s\n' "${MASTER_PORT:-}" "${PYTHONPATH:-}" > "$SRUN_RECORD.env"
[ "${SRUN_EXEC:-0}" = 1 ] || exit 0
while [ $# -gt 0 ]; do
    case $1 in
        -p) shift 2 ;;
        -*) shift ;;
        *) break ;;
    esac
done
export SLURM_PROCID=0 SLURM_NTASKS=1 SLURM_NODELIST=fakenode SLURM_LOCALID=0 SLURM_JOB_ID=1
exec "$@"
'''

FAKE_SCONTROL = '''#!/usr/bin/env bash
# `scontrol show hostname NODELIST` -> the first host of the job
echo 127.0.0.1
'''


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def fake_bin(tmp_path) -> Path:
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    _executable(bin_dir / 'srun', FAKE_SRUN)
    _executable(bin_dir / 'scontrol', FAKE_SCONTROL)
    return bin_dir


def _run_script(args: List[str], fake_bin: Path, record: Path,
                env_extra: Optional[Dict[str, str]] = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ('GPUS', 'GPUS_PER_NODE', 'CPUS_PER_TASK', 'SRUN_ARGS', 'PORT', 'PYTHON',
                        'PYTHONPATH', 'MASTER_PORT', 'MASTER_ADDR', 'WORLD_SIZE', 'RANK')}
    env['PATH'] = f'{fake_bin}{os.pathsep}{env["PATH"]}'
    env['SRUN_RECORD'] = str(record)
    env.update(env_extra or {})
    return subprocess.run(['bash', str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_bash_syntax():
    res = subprocess.run(['bash', '-n', str(SCRIPT)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert os.access(SCRIPT, os.X_OK)


def test_srun_command_defaults(fake_bin, tmp_path):
    record = tmp_path / 'argv.txt'
    res = _run_script(['gpu', 'pseudo_voc', 'configs/clip_es_voc.py'], fake_bin, record)
    assert res.returncode == 0, res.stderr
    assert record.read_text().splitlines() == [
        '-p', 'gpu', '--job-name=pseudo_voc', '--ntasks=4', '--cpus-per-task=5', '--gres=gpu:4',
        '--ntasks-per-node=4', '--kill-on-bad-exit=1',
        'python', '-u', str(TOOL), 'configs/clip_es_voc.py', '--launcher=slurm']
    env = dict(line.split('=', 1) for line in (tmp_path / 'argv.txt.env').read_text().splitlines())
    assert env['MASTER_PORT'] == ''  # mmengine's default unless PORT is given
    assert env['PYTHONPATH'].split(os.pathsep)[0] == str(REPO / 'tools' / '..')


def test_srun_command_with_work_dir_options_and_environment(fake_bin, tmp_path):
    record = tmp_path / 'argv.txt'
    res = _run_script(
        ['part', 'job 1', 'my cfg.py', 'out dir', '--cfg-options', 'generator.device=cuda', '--save-cams'],
        fake_bin, record,
        env_extra=dict(GPUS='16', GPUS_PER_NODE='8', CPUS_PER_TASK='3',
                       SRUN_ARGS='--time=1:00:00 --exclusive', PORT='29999',
                       PYTHON='/opt/py/bin/python3', PYTHONPATH='/x'))
    assert res.returncode == 0, res.stderr
    assert record.read_text().splitlines() == [
        '-p', 'part', '--job-name=job 1', '--ntasks=16', '--cpus-per-task=3', '--gres=gpu:8',
        '--ntasks-per-node=8', '--kill-on-bad-exit=1', '--time=1:00:00', '--exclusive',
        '/opt/py/bin/python3', '-u', str(TOOL), 'my cfg.py', '--work-dir', 'out dir',
        '--launcher=slurm', '--cfg-options', 'generator.device=cuda', '--save-cams']
    env = dict(line.split('=', 1) for line in (tmp_path / 'argv.txt.env').read_text().splitlines())
    assert env == {'MASTER_PORT': '29999', 'PYTHONPATH': f'{REPO}/tools/..:/x'}


def test_srun_command_cpu_partition_and_options_first(fake_bin, tmp_path):
    record = tmp_path / 'argv.txt'
    res = _run_script(['cpu', 'j', 'c.py', '--no-resume'], fake_bin, record,
                      env_extra=dict(GPUS='3', GPUS_PER_NODE='0'))
    assert res.returncode == 0, res.stderr
    assert record.read_text().splitlines() == [
        '-p', 'cpu', '--job-name=j', '--ntasks=3', '--cpus-per-task=5', '--kill-on-bad-exit=1',
        'python', '-u', str(TOOL), 'c.py', '--launcher=slurm', '--no-resume']


@pytest.mark.parametrize('args, env, message', [
    (['p', 'j'], {}, 'Usage'),
    (['p', 'j', 'c.py'], {'GPUS': 'four'}, "GPUS must be a whole number, got 'four'"),
    (['p', 'j', 'c.py'], {'GPUS': '0'}, 'GPUS (number of tasks) must be at least 1'),
    (['p', 'j', 'c.py'], {'CPUS_PER_TASK': '-1'}, 'CPUS_PER_TASK must be a whole number'),
])
def test_bad_arguments_are_refused(fake_bin, tmp_path, args, env, message):
    record = tmp_path / 'argv.txt'
    res = _run_script(args, fake_bin, record, env_extra=env)
    assert res.returncode == 2 and message in res.stderr
    assert not record.exists()  # srun never called


# ------------------------------------------------------------------ a real single-task run
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _tiny_job(root: Path) -> Path:
    import numpy as np
    from PIL import Image

    from wsss_mmseg.clip import save_openai_format, tiny_clip
    images = root / 'images'
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(images / f'img{i}.png')
    (root / 'labels.csv').write_text('image,labels\nimg0.png,dog\nimg1.png,cat;person\nimg2.png,car\n')
    weights = save_openai_format(tiny_clip(seed=0, fp16_round=True), root / 'tiny.pt')
    cfg = root / 'cfg.py'
    cfg.write_text(
        f"_base_ = [{str(REPO / 'configs' / 'examples' / 'clip_es_custom_folder.py')!r}]\n"
        f"pseudo_dataset = dict(img_dir={str(images)!r}, labels={str(root / 'labels.csv')!r})\n"
        f"generator = dict(clip=dict(model_name=None, pretrained={str(weights)!r}), device='cpu')\n")
    return cfg


@pytest.mark.slow
def test_single_task_through_the_slurm_launcher_matches_one_process(fake_bin, tmp_path):
    cfg = _tiny_job(tmp_path / 'data')
    env = dict(os.environ, OMP_NUM_THREADS='1', WSSS_MMSEG_CACHE=str(tmp_path / 'cache'))
    plain = subprocess.run([sys.executable, str(TOOL), str(cfg), '--work-dir', str(tmp_path / 'plain')],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert plain.returncode == 0, plain.stderr

    res = _run_script(['cpu', 'pseudo', str(cfg), str(tmp_path / 'slurm')],
                      fake_bin, tmp_path / 'argv.txt',
                      env_extra=dict(GPUS='1', GPUS_PER_NODE='0', SRUN_EXEC='1', PORT=str(_free_port()),
                                     PYTHON=sys.executable, OMP_NUM_THREADS='1',
                                     WSSS_MMSEG_CACHE=str(tmp_path / 'cache')))
    assert res.returncode == 0, res.stdout + res.stderr
    assert '--launcher=slurm' in (tmp_path / 'argv.txt').read_text().splitlines()
    masks = sorted(p.name for p in (tmp_path / 'plain' / 'masks').iterdir())
    assert masks == ['img0.png', 'img1.png', 'img2.png']
    for sub in ('masks', 'confidence'):
        for name in masks:
            assert (tmp_path / 'slurm' / sub / name).read_bytes() == \
                (tmp_path / 'plain' / sub / name).read_bytes(), (sub, name)
    shutil.rmtree(tmp_path / 'cache', ignore_errors=True)
