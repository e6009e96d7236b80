"""One data root per shipped config (issue #17 item 8).

Every shipped config defines each dataset root once (``data_root = '{{$WSSS_VOC_ROOT:...}}'``,
mmengine's environment-variable substitution) and references it, so one override
(``WSSS_VOC_ROOT=/my/VOC2012``) moves every dataset of the config: the pseudo-label source, the
train/val/test datasets, nested label sources. Before, a training config needed data_root in four
places (``pseudo_dataset``, ``train_dataloader``, ``val_dataloader``, ``test_dataloader``) and the
classic configs had the root written twice.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, List, Tuple

import pytest
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in (REPO / 'configs').rglob('*.py') if '_base_' not in p.parts)

# environment variable -> (shipped default, the value a user sets)
ROOTS = {
    'WSSS_VOC_ROOT': ('data/VOCdevkit/VOC2012', '/elsewhere/voc2012'),
    'WSSS_COCO_ROOT': ('data/coco', '/elsewhere/coco'),
    'WSSS_VOC2010_ROOT': ('data/VOCdevkit/VOC2010', '/elsewhere/voc2010'),
    'WSSS_ADE_ROOT': ('data/ade/ADEChallengeData2016', '/elsewhere/ade'),
    'WSSS_CITYSCAPES_ROOT': ('data/cityscapes', '/elsewhere/cityscapes'),
    'WSSS_COCO_STUFF_ROOT': ('data/coco_stuff164k', '/elsewhere/coco_stuff'),
}


def _roots(node: Any, where: str = '') -> Iterator[Tuple[str, str]]:
    """``(dotted key, value)`` of every ``data_root`` / ``coco_root`` entry, however deep."""
    if isinstance(node, dict):
        for k, v in node.items():
            key = f'{where}.{k}' if where else str(k)
            if k in ('data_root', 'coco_root') and isinstance(v, str):
                yield key, v
            else:
                yield from _roots(v, key)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _roots(v, f'{where}.{i}')


def _load(path: Path) -> List[Tuple[str, str]]:
    return list(_roots(Config.fromfile(str(path)).to_dict()))


@pytest.mark.parametrize('path', CONFIGS, ids=[str(p.relative_to(REPO / 'configs')) for p in CONFIGS])
def test_one_environment_variable_moves_every_dataset(path, monkeypatch):
    for var in ROOTS:
        monkeypatch.delenv(var, raising=False)
    defaults = _load(path)
    if not defaults:
        pytest.skip('no dataset root in this config (e.g. a folder of images given by the user)')
    default_values = {d for d, _ in ROOTS.values()}
    assert {v for _, v in defaults} <= default_values, defaults  # shipped defaults unchanged
    for var, (_, moved) in ROOTS.items():
        monkeypatch.setenv(var, moved)
    moved_values = {m for _, m in ROOTS.values()}
    after = _load(path)
    assert [k for k, _ in after] == [k for k, _ in defaults]
    stale = [(k, v) for k, v in after if v not in moved_values]
    assert stale == [], f'entries not moved by the root variable: {stale}'
    # the same dataset root everywhere it was the same before
    for (k, before), (_, now) in zip(defaults, after):
        var = next(v for v, (d, _) in ROOTS.items() if d == before)
        assert now == ROOTS[var][1], k


def test_training_config_needs_one_override_for_all_four_datasets(monkeypatch):
    monkeypatch.setenv('WSSS_VOC_ROOT', '/my/VOC2012')
    cfg = Config.fromfile(str(REPO / 'configs' / 'deeplabv3_cgl_voc.py'))
    assert cfg.pseudo_dataset.data_root == '/my/VOC2012'
    assert cfg.train_dataloader.dataset.data_root == '/my/VOC2012'
    assert cfg.val_dataloader.dataset.data_root == '/my/VOC2012'
    assert cfg.test_dataloader.dataset.data_root == '/my/VOC2012'


def test_classic_config_root_is_one_variable(monkeypatch):
    monkeypatch.setenv('WSSS_VOC_ROOT', '/my/VOC2012')
    cfg = Config.fromfile(str(REPO / 'configs' / 'classic' / 'cam_r50_voc.py'))
    assert cfg.pseudo_dataset.data_root == '/my/VOC2012'
    assert cfg.train_dataloader.dataset.source.data_root == '/my/VOC2012'
    assert cfg.val_dataloader.dataset.source.data_root == '/my/VOC2012'
