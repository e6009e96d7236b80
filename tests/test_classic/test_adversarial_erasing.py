"""Two tiny adversarial-erasing rounds through tools/adversarial_erasing.py."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
from mmengine.config import Config

from tests.test_classic.tiny import classifier_runner_cfg, tiny_classifier, write_split

REPO = Path(__file__).resolve().parents[2]


def test_two_rounds_mine_merge_and_erase(tmp_path, shared_data):
    from PIL import Image
    voc = shared_data / 'voc_sample'
    split = tmp_path / 'split.txt'
    ids = write_split(split, voc, 4)
    cfg = classifier_runner_cfg(voc, split, tmp_path / 'unused', max_iters=3,
                                model=tiny_classifier(),
                                extra_train=[dict(type='EraseRegions')], val=False)
    cfg['adversarial_erasing'] = dict(rounds=2, threshold=0.5,
                                      mining=dict(max_side=64, scales=(1.0,), flip=True))
    cfg_path = tmp_path / 'ae_cfg.py'
    Config(cfg).dump(str(cfg_path))
    spec = importlib.util.spec_from_file_location('_tool_ae', REPO / 'tools' /
                                                  'adversarial_erasing.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    work = tmp_path / 'ae'
    assert tool.main([str(cfg_path), '--work-dir', str(work)]) == 0
    rounds = json.loads((work / 'rounds.json').read_text())
    assert len(rounds['checkpoints']) == 2
    assert all(Path(c).is_file() for c in rounds['checkpoints'])
    grew = mined = False
    for image_id in ids:
        size = Image.open(voc / 'JPEGImages' / f'{image_id}.jpg').size
        r0 = np.asarray(Image.open(work / 'round_0' / 'erase' / f'{image_id}.png')) != 0
        r1 = np.asarray(Image.open(work / 'round_1' / 'erase' / f'{image_id}.png')) != 0
        assert r0.shape == (size[1], size[0])
        mined |= bool(r0.any())
        assert (r1 | r0).sum() == r1.sum()  # merged: round 1 contains round 0's regions
        grew |= bool(r1.sum() > r0.sum())
    assert mined, 'round 0 mined no region on any image'
    assert grew, 'round 1 mined no new region on any image'
