"""tools/dist_generate.sh: syntax, the torchrun command it assembles, bad arguments, and a real
2-process CPU run that writes the same bytes as one process."""
from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / 'tools' / 'dist_generate.sh'
FAKES_DIR = REPO / 'tests' / 'test_pseudo'
sys.path.insert(0, str(FAKES_DIR))
import pseudo_fakes as pf  # noqa: E402

import wsss_mmseg.datasets  # noqa: E402,F401
from wsss_mmseg.pseudo.job import run_pseudo_job  # noqa: E402

FAKE_PYTHON = '''#!/usr/bin/env bash
printf '%s\\n' "$@" > "$RECORD"
printf 'PYTHONPATH=%s\\n' "${PYTHONPATH:-}" > "$RECORD.env"
'''


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ('NNODES', 'NODE_RANK', 'PORT', 'MASTER_ADDR', 'PYTHON', 'MASTER_PORT', 'WORLD_SIZE', 'RANK')}
    env['PYTHONPATH'] = os.pathsep.join([str(REPO), str(FAKES_DIR)])
    env.update(extra)
    return env


def _run(args, **env):
    return subprocess.run(['bash', str(SCRIPT), *map(str, args)], cwd=REPO, env=_env(**env), capture_output=True,
                          text=True, timeout=300)


def test_bash_syntax():
    assert subprocess.run(['bash', '-n', str(SCRIPT)], capture_output=True).returncode == 0
    assert os.access(SCRIPT, os.X_OK)


def test_torchrun_command(tmp_path):
    fake = tmp_path / 'python'
    fake.write_text(FAKE_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    record = tmp_path / 'args.txt'
    out = _run(['configs/clip_es_voc.py', '4', '--work-dir', 'w d', '--report'], PYTHON=str(fake),
               RECORD=str(record), NNODES='2', NODE_RANK='1', MASTER_ADDR='10.0.0.5', PORT='29511')
    assert out.returncode == 0, out.stderr
    assert record.read_text().splitlines() == [
        '-m', 'torch.distributed.run', '--nnodes=2', '--node_rank=1', '--master_addr=10.0.0.5',
        '--nproc_per_node=4', '--master_port=29511', str(REPO / 'tools' / 'generate_pseudo.py'),
        'configs/clip_es_voc.py', '--launcher', 'pytorch', '--work-dir', 'w d', '--report']
    assert (tmp_path / 'args.txt.env').read_text().startswith(f'PYTHONPATH={REPO / "tools" / ".."}')


@pytest.mark.parametrize('args, message', [
    (['configs/clip_es_voc.py'], 'usage:'),
    (['configs/clip_es_voc.py', '0'], 'NPROC must be a positive integer'),
    (['configs/clip_es_voc.py', 'two'], 'NPROC must be a positive integer'),
    (['configs/no_such.py', '2'], "config file 'configs/no_such.py' does not exist"),
])
def test_bad_arguments(args, message):
    out = _run(args)
    assert out.returncode == 2 and message in out.stderr


def test_two_cpu_ranks_write_the_bytes_of_one_process(tmp_path):
    ds = pf.folder_dataset(tmp_path / 'data', n=5)
    cfg = pf.write_config(tmp_path / 'cfg.py', dataset=ds)
    run_pseudo_job(Config.fromfile(str(cfg)), work_dir=tmp_path / 'single')
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    out = _run([cfg, 2, '--work-dir', tmp_path / 'dist'], PYTHON=sys.executable, PORT=str(port),
               OMP_NUM_THREADS='1')
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert pf.tree_bytes(tmp_path / 'dist') == pf.tree_bytes(tmp_path / 'single')
    summary = json.loads((tmp_path / 'dist' / 'summary.json').read_text())
    assert summary['world_size'] == 2 and summary['counts']['done'] == 5
