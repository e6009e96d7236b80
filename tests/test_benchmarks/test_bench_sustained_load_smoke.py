"""benchmarks/bench_sustained_load.py cannot rot: a short run of each generator in a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize('generator', ['fake', 'tiny'])
def test_short_run_reports_windows_and_exit_status(tmp_path, generator):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / 'tests' / 'test_pseudo')]))
    out = subprocess.run([sys.executable, str(REPO / 'benchmarks' / 'bench_sustained_load.py'),
                          '--num-images', '12', '--window', '4', '--generator', generator, '--no-fsync',
                          '--json', str(tmp_path / 'out.json')],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    res = json.loads((tmp_path / 'out.json').read_text())
    assert res['figures']['done'] == 12 and res['figures']['failed'] == 0
    assert [s['images'] for s in res['samples']][-1] == 12
    assert '12/12 done, 0 failed' in out.stdout
