"""Untrusted checkpoints and label files: a crafted pickle never runs.

``tests/test_clip/test_clip_checkpoint.py`` covers ``load_checkpoint_file``
(pickle, TorchScript, safetensors). Added here: the same payload through
``build_clip`` and through the pseudo-label generator config, and an IRN-style
``cls_labels.npy`` (a pickle by format) with a payload.
"""
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rel_common  # noqa: E402,F401
import pseudo_fakes as pf  # noqa: E402
import wsss_mmseg.datasets  # noqa: E402,F401
from wsss_mmseg.clip import UnsafeCheckpointError, build_clip  # noqa: E402


class _Evil:
    """Unpickles to ``os.mkdir(marker)``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def _evil_ckpt(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil_clip.pt'
    torch.save({'state_dict': {'w': torch.ones(1)}, 'payload': _Evil(marker)}, path)
    return path, marker


def test_build_clip_refuses_a_malicious_pickle(tmp_path):
    path, marker = _evil_ckpt(tmp_path)
    with pytest.raises(UnsafeCheckpointError, match='allow_unsafe_pickle=True') as info:
        build_clip(model_name=None, pretrained=str(path))
    assert 'evil_clip.pt' in str(info.value)
    assert not marker.exists()


def test_generator_config_path_refuses_a_malicious_pickle(tmp_path):
    pytest.importorskip('wsss_mmseg.models.generators')
    from wsss_mmseg.pseudo.job import run_pseudo_job
    path, marker = _evil_ckpt(tmp_path)
    ds = pf.folder_dataset(tmp_path / 'data', n=1)
    cfg = Config(dict(pseudo_dataset=ds,
                      generator=dict(type='CLIPESGenerator', class_table='voc20',
                                     clip=dict(model_name=None, pretrained=str(path))),
                      mask_maker=dict(type='PseudoMaskMaker', bg_power=1, crf=None)))
    import wsss_mmseg.models.generators  # noqa: F401
    with pytest.raises(UnsafeCheckpointError) as info:
        run_pseudo_job(cfg, work_dir=tmp_path / 'out', logger=None)
    assert 'evil_clip.pt' in str(info.value)
    assert not marker.exists()
    assert not list((tmp_path / 'out' / 'masks').glob('*.png'))


def test_irn_cls_labels_npy_with_a_payload_is_refused(tmp_path):
    from wsss_mmseg.datasets.image_labels import load_label_file
    marker = tmp_path / 'pwned_npy'
    arr = np.empty((), dtype=object)
    arr[()] = {'2007_000032': np.eye(20, dtype=np.float32)[0], 'x': _Evil(marker)}
    np.save(tmp_path / 'cls_labels.npy', arr, allow_pickle=True)
    with pytest.raises(ValueError, match='cls_labels.npy'):
        load_label_file(tmp_path / 'cls_labels.npy')
    assert not marker.exists()


def test_irn_cls_labels_npy_still_loads(tmp_path):
    from wsss_mmseg.datasets.image_labels import load_label_file
    v = np.zeros(20, np.float32)
    v[[0, 14]] = 1
    np.save(tmp_path / 'cls_labels.npy', {'2007_000032': v, 2007000039: v * 0}, allow_pickle=True)
    table = load_label_file(tmp_path / 'cls_labels.npy')
    assert table['2007_000032'] == [0, 14]
