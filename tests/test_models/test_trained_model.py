"""Tests of :func:`wsss_mmseg.models.trained_model.build_trained_model`."""
from __future__ import annotations

import pytest
import torch
from mmengine.registry import DefaultScope
from mmseg.registry import MODELS

from tests.test_classic.tiny import tiny_classifier
from wsss_mmseg.models.trained_model import build_trained_model


def _saved_classifier(tmp_path, seed=0):
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope('mmseg'):
        net = MODELS.build(tiny_classifier(num_classes=3))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.5)  # distinct from any fresh initialisation
    ckpt = tmp_path / 'cls.pth'
    torch.save(dict(state_dict=net.state_dict(), meta={}), ckpt)
    return net, ckpt


def test_loads_the_checkpoint_from_a_model_dict_or_a_config_file(tmp_path):
    saved, ckpt = _saved_classifier(tmp_path)
    cfg_file = tmp_path / 'train_cfg.py'
    cfg_file.write_text(f'model = {tiny_classifier(num_classes=3)!r}\n')
    # 'pretrained' / backbone init_cfg must not be followed: the checkpoint holds the weights
    model = dict(tiny_classifier(num_classes=3), pretrained='/no/such/weights.pth')
    for net in (build_trained_model(str(ckpt), model=model, device=torch.device('cpu')),
                build_trained_model(str(ckpt), config=str(cfg_file), device=torch.device('cpu'))):
        assert not net.training
        got = net.state_dict()
        assert set(got) == set(saved.state_dict())
        for k, v in saved.state_dict().items():
            assert torch.equal(got[k], v), k


def test_errors_name_what_is_missing(tmp_path):
    _, ckpt = _saved_classifier(tmp_path)
    cpu = torch.device('cpu')
    with pytest.raises(ValueError, match='affinity net needs exactly one of model=dict'):
        build_trained_model(str(ckpt), device=cpu, what='affinity net')
    with pytest.raises(ValueError, match='exactly one'):
        build_trained_model(str(ckpt), model=tiny_classifier(), config='x.py', device=cpu)
    with pytest.raises(FileNotFoundError, match=r'segmenter config not found: .*nope\.py'):
        build_trained_model(str(ckpt), config=str(tmp_path / 'nope.py'), device=cpu, what='segmenter')
    with pytest.raises(FileNotFoundError, match=r'classifier checkpoint not found: .*nope\.pth'):
        build_trained_model(str(tmp_path / 'nope.pth'), model=tiny_classifier(), device=cpu,
                            what='classifier')
