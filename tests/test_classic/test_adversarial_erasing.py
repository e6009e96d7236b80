"""Adversarial erasing (classic_wsss.md, AE-PSL) through tools/adversarial_erasing.py, then the pseudo
labels through tools/generate_pseudo.py on the same config (issue #17 item 7): rounds.json is the
one hand-over between the two commands, with paths relative to the AE work dir."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config

from tests.test_classic.tiny import CROP, classifier_runner_cfg, tiny_classifier, write_split

REPO = Path(__file__).resolve().parents[2]


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f'_tool_{name}', REPO / 'tools' / f'{name}.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


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
    work = tmp_path / 'ae'
    assert _tool('adversarial_erasing').main([str(cfg_path), '--work-dir', str(work)]) == 0
    stored = json.loads((work / 'rounds.json').read_text())
    # relative to the AE work dir, so the folder can move
    assert stored['checkpoints'] == ['round_0/iter_3.pth', 'round_1/iter_3.pth']
    assert stored['erase_dirs'] == ['round_0/erase', 'round_1/erase']
    assert stored['rounds'] == 2 and stored['config'] == 'ae_cfg.py'
    # each round's config dump keeps the config's name (not a timestamp)
    for r in (0, 1):
        assert (work / f'round_{r}' / 'ae_cfg.py').is_file()
        assert list((work / f'round_{r}').glob('2*.py')) == []
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


# ------------------------------------------------------- rounds.json -> generator
def _fake_rounds(root: Path, n: int = 2) -> list:
    """``n`` untrained tiny-classifier checkpoints + rounds.json in the AE layout."""
    from mmseg.registry import MODELS
    paths = []
    for r in range(n):
        torch.manual_seed(r)
        net = MODELS.build(tiny_classifier())
        p = root / f'round_{r}' / 'iter_3.pth'
        p.parent.mkdir(parents=True)
        torch.save(dict(state_dict=net.state_dict(), meta={}), p)
        paths.append(p)
    (root / 'rounds.json').write_text(json.dumps(dict(
        checkpoints=[f'round_{r}/iter_3.pth' for r in range(n)],
        erase_dirs=[f'round_{r}/erase' for r in range(n)], threshold=0.5, rounds=n)))
    return paths


def test_load_rounds_resolves_against_its_folder_after_a_move(tmp_path):
    from wsss_mmseg.hooks.adversarial_erasing import load_rounds
    _fake_rounds(tmp_path / 'ae')
    shutil.move(str(tmp_path / 'ae'), str(tmp_path / 'moved'))
    for arg in (tmp_path / 'moved' / 'rounds.json', tmp_path / 'moved'):
        rounds = load_rounds(str(arg))
        assert rounds['checkpoints'] == [str(tmp_path / 'moved' / 'round_0' / 'iter_3.pth'),
                                         str(tmp_path / 'moved' / 'round_1' / 'iter_3.pth')]
        assert rounds['erase_dirs'][1] == str(tmp_path / 'moved' / 'round_1' / 'erase')


def test_load_rounds_errors_name_the_file(tmp_path):
    from wsss_mmseg.hooks.adversarial_erasing import load_rounds
    with pytest.raises(FileNotFoundError, match=r'rounds.json not found: run the adversarial-erasing'):
        load_rounds(str(tmp_path / 'rounds.json'))
    (tmp_path / 'rounds.json').write_text('{"checkpoints": []}')
    with pytest.raises(ValueError, match=r'rounds.json: expected'):
        load_rounds(str(tmp_path / 'rounds.json'))
    (tmp_path / 'rounds.json').write_text('{"checkpoints": ["round_0/iter_9.pth"]}')
    with pytest.raises(FileNotFoundError, match=r'checkpoint of round 0, .*round_0/iter_9.pth, does not exist'):
        load_rounds(str(tmp_path / 'rounds.json'))


def test_generator_merges_the_listed_rounds(tmp_path):
    """AdversarialErasingCAMGenerator = ClassifierCAMGenerator on rounds.json's checkpoints."""
    from mmseg.registry import MODELS
    paths = _fake_rounds(tmp_path)
    common = dict(model=tiny_classifier(), scales=(1.0,), flip=False, merge='max', device='cpu')
    ae = MODELS.build(dict(type='AdversarialErasingCAMGenerator', rounds=str(tmp_path / 'rounds.json'),
                           **common))
    ref = MODELS.build(dict(type='ClassifierCAMGenerator', checkpoint=[str(p) for p in paths], **common))
    img = np.random.default_rng(0).integers(0, 255, (*CROP, 3), dtype=np.uint8)
    a, b = ae.generate_image(img, [2, 7]), ref.generate_image(img, [2, 7])
    assert len(ae.models) == 2
    np.testing.assert_array_equal(np.asarray(a['cam']), np.asarray(b['cam']))
    with pytest.raises(ValueError, match='remove checkpoint='):
        MODELS.build(dict(type='AdversarialErasingCAMGenerator', rounds=str(tmp_path / 'rounds.json'),
                          checkpoint='x.pth', **common))


def test_shipped_config_reads_rounds_json():
    cfg = Config.fromfile(str(REPO / 'configs' / 'classic' / 'ae_r50_voc.py'))
    assert cfg.generator.type == 'AdversarialErasingCAMGenerator'
    assert cfg.generator.rounds == f'{cfg.work_dir}/rounds.json'
    assert 'checkpoint' not in cfg.generator and cfg.generator['merge'] == 'max'


# ------------------------------------------------------------- the README flow
def _tiny_ae_config(path: Path, voc: Path, split: Path, work: Path) -> Path:
    """configs/classic/ae_r50_voc.py with a tiny model, 4 sample images, 3 iterations per round."""
    cfg = Config.fromfile(str(REPO / 'configs' / 'classic' / 'ae_r50_voc.py'))
    cfg.model = tiny_classifier()
    cfg.work_dir = str(work)
    train = cfg.train_dataloader
    train.update(batch_size=4, num_workers=0, persistent_workers=False)
    train.dataset.source.update(data_root=str(voc), split=str(split), labels='cls_labels.json', gt_dir=None)
    fill = train.dataset.pipeline[1]['fill']
    train.dataset.pipeline = [dict(type='LoadImageFromFile'), dict(type='EraseRegions', erase_dir=None, fill=fill),
                              dict(type='Resize', scale=CROP, keep_ratio=False),
                              dict(type='RandomFlip', prob=0.5), dict(type='PackMultiLabelInputs')]
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    cfg.param_scheduler = []
    cfg.train_cfg.update(max_iters=3, val_interval=100)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=3)
    cfg.default_hooks.logger.interval = 1
    cfg.env_cfg.update(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
    cfg.adversarial_erasing.update(rounds=2, mining=dict(method='cam', scales=(1.0,), flip=True, max_side=64))
    cfg.pseudo_dataset.update(data_root=str(voc), split=str(split), labels='cls_labels.json',
                              gt_dir='SegmentationClass')
    cfg.mask_maker.crf = None
    cfg.generator.update(config=str(path), scales=(1.0,), flip=False, max_side=64, device='cpu',
                         rounds=str(work / 'rounds.json'))
    cfg.dump(str(path))
    return path


@pytest.mark.slow
def test_readme_flow_ae_rounds_then_pseudo_labels(tmp_path, shared_data):
    voc = shared_data / 'voc_sample'
    split = tmp_path / 'split.txt'
    ids = write_split(split, voc, 4)
    work = tmp_path / 'ae'
    cfg_path = _tiny_ae_config(tmp_path / 'ae_tiny.py', voc, split, work)
    # 1. python tools/adversarial_erasing.py CONFIG
    assert _tool('adversarial_erasing').main([str(cfg_path)]) == 0
    assert json.loads((work / 'rounds.json').read_text())['checkpoints'] == [
        'round_0/iter_3.pth', 'round_1/iter_3.pth']
    assert (work / 'round_1' / 'ae_tiny.py').is_file()
    # 2. python tools/generate_pseudo.py CONFIG -- no checkpoint list anywhere
    out = tmp_path / 'pseudo'
    assert _tool('generate_pseudo').main([str(cfg_path), '--work-dir', str(out)]) == 0
    assert sorted(p.stem for p in (out / 'masks').glob('*.png')) == sorted(ids)
    # the AE folder moved elsewhere: only generator.rounds changes
    shutil.move(str(work), str(tmp_path / 'moved'))
    out2 = tmp_path / 'pseudo2'
    assert _tool('generate_pseudo').main([str(cfg_path), '--work-dir', str(out2), '--cfg-options',
                                          f'generator.rounds={tmp_path / "moved" / "rounds.json"}']) == 0
    for i in ids:
        assert (out2 / 'masks' / f'{i}.png').read_bytes() == (out / 'masks' / f'{i}.png').read_bytes()
