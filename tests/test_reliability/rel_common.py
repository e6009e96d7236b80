"""Shared helpers of the reliability tests (paths, env, small datasets with GT masks)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Dict

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
FAKES_DIR = REPO / 'tests' / 'test_pseudo'
TOOL = REPO / 'tools' / 'generate_pseudo.py'
for _p in (str(FAKES_DIR), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)
import pseudo_fakes as pf  # noqa: E402,F401


def sub_env(**extra: str) -> Dict[str, str]:
    """Environment for a child process that can import the repo and the fakes."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [str(REPO), str(FAKES_DIR), str(HERE)]
        + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    env.setdefault('OMP_NUM_THREADS', '1')
    env.pop('WSSS_MMSEG_FAULT', None)
    env.pop('WSSS_MMSEG_FAULT_PATH', None)
    env.update(extra)
    return env


def dataset_with_gt(root: Path, n: int = 6, *, seed: int = 0) -> Dict[str, object]:
    """``pf.folder_dataset`` plus GT masks (so that the job evaluates)."""
    ds = pf.folder_dataset(root, n=n, seed=seed)
    gt_dir = root / 'gt'
    gt_dir.mkdir()
    rng = np.random.default_rng(seed + 1)
    for name in json.loads(Path(ds['labels']).read_text()):
        with Image.open(Path(ds['img_dir']) / name) as im:
            w, h = im.size
        gt = rng.choice(np.array([0, 12, 255], np.uint8), size=(h, w))
        Image.fromarray(gt).save(gt_dir / f'{Path(name).stem}.png')
    return dict(ds, gt_dir=str(gt_dir))
