"""tools/patch_alignment.py speaks mmengine's ``--cfg-options`` syntax (issue #17 item 2).

The tool used to parse ``--cfg-options`` values with ``json.loads``: ``model_name=None`` stayed the
string ``'None'`` and the model build failed. Every tool now uses mmengine's ``DictAction``, the
syntax of ``tools/generate_pseudo.py`` and of mmseg's own tools.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def _tool():
    spec = importlib.util.spec_from_file_location('patch_alignment_tool', REPO / 'tools' / 'patch_alignment.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cfg_options_use_dict_action_syntax():
    args = _tool().parse_args(['cfg.py', '--cfg-options', 'model.backbone.clip.model_name=None',
                               'a.flag=True', 'a.n=3', 'a.x=0.5', 'a.lst=[1,2]', 'a.s=null'])
    opts = args.cfg_options
    assert opts['model.backbone.clip.model_name'] is None
    assert opts['a.flag'] is True
    assert opts['a.n'] == 3 and opts['a.x'] == 0.5
    assert opts['a.lst'] == [1, 2]
    assert opts['a.s'] == 'null'  # DictAction's spelling of None is None, as in mmseg's tools


def _tiny_voc(root: Path, n: int = 2) -> None:
    rng = np.random.default_rng(0)
    (root / 'JPEGImages').mkdir(parents=True)
    (root / 'SegmentationClass').mkdir()
    (root / 'ImageSets' / 'Segmentation').mkdir(parents=True)
    ids = [f'img{i}' for i in range(n)]
    for i in ids:
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / 'JPEGImages' / f'{i}.jpg')
        gt = np.zeros((64, 64), np.uint8)
        gt[:, 32:] = 12  # dog
        gt[:32, :32] = 15  # person
        Image.fromarray(gt).save(root / 'SegmentationClass' / f'{i}.png')
    (root / 'ImageSets' / 'Segmentation' / 'val.txt').write_text('\n'.join(ids) + '\n')


def test_model_name_none_from_the_command_line_builds_any_geometry(tmp_path, tiny_clip_path):
    """A config naming ViT-B-16, overridden on the command line to the tiny file with ``model_name=None``."""
    voc = tmp_path / 'voc'
    _tiny_voc(voc)
    cfg = Config.fromfile(str(REPO / 'configs' / 'pacl_vitb16_voc.py'))
    cfg.model.decode_head.in_channels = 64  # tiny CLIP ViT width
    cfg.val_dataloader.dataset.data_root = str(voc)
    cfg.val_dataloader.dataset.ann_file = 'ImageSets/Segmentation/val.txt'
    cfg_path = tmp_path / 'pacl_tiny.py'
    cfg.dump(str(cfg_path))
    assert Config.fromfile(str(cfg_path)).model.backbone.clip.model_name == 'ViT-B-16'
    tool = _tool()
    result = tool.main([str(cfg_path), '--size', '64', '--cfg-options',
                        'model.backbone.clip.model_name=None', f'model.backbone.clip.pretrained={tiny_clip_path}',
                        'model.decode_head.clip.model_name=None', f'model.decode_head.clip.pretrained={tiny_clip_path}'])
    # 2 images x 16 patches of 16 px; the purity-0.5 labels: 8 dog + 4 person + 4 background per image
    assert result['raw_clip']['images'] == 2
    assert result['raw_clip']['patches'] == 32
    assert result['raw_clip']['fg_patches'] == 24
