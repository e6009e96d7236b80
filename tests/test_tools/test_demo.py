"""tools/demo.py: smoke run with random weights, and the message without weights."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def _run(*args, timeout=600):
    return subprocess.run([sys.executable, str(REPO / 'tools' / 'demo.py'), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_missing_weights_says_how_to_give_a_path(tmp_path):
    proc = _run('--pretrained', str(tmp_path / 'nope.pt'), '--work-dir', str(tmp_path / 'out'))
    assert proc.returncode == 2
    assert 'nope.pt' in proc.stderr and '--pretrained /path/ViT-B-16.pt' in proc.stderr
    assert '--random-weights' in proc.stderr


def test_random_weights_smoke_run_writes_masks_and_overlays(tmp_path):
    pytest.importorskip('skimage')
    out = tmp_path / 'demo'
    proc = _run('--random-weights', '--work-dir', str(out), '--device', 'cpu')
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert 'SMOKE TEST' in proc.stdout
    for stem in ('astronaut', 'chelsea', 'coffee', 'motorcycle'):
        mask = np.asarray(Image.open(out / 'masks' / f'{stem}.png'))
        ov = Image.open(out / 'overlays' / f'{stem}.png')
        assert ov.size == (mask.shape[1], mask.shape[0])
        assert set(np.unique(mask).tolist()) <= {0, 255} | set(range(1, 81))
