"""configs/classic/*.py: parse, build models/pipelines, the generator points at its config."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmseg.registry import DATASETS, MODELS, TRANSFORMS

REPO = Path(__file__).resolve().parents[2]
NAMES = ['cam', 'gradcam', 'has', 'mdc', 'seam', 'ae']


def _cfg(name: str) -> Config:
    return Config.fromfile(str(REPO / 'configs' / 'classic' / f'{name}_r50_voc.py'))


@pytest.mark.parametrize('name', NAMES)
def test_config_sections(name):
    cfg = _cfg(name)
    gen = cfg.generator
    assert gen.type == ('AdversarialErasingCAMGenerator' if name == 'ae' else 'ClassifierCAMGenerator')
    assert Path(gen.config).resolve() == (REPO / 'configs' / 'classic' /
                                          f'{name}_r50_voc.py').resolve()
    assert gen.method == ('gradcam' if name == 'gradcam' else 'cam')
    if name == 'gradcam':
        assert gen.target_layer == 'backbone.layer4'
    assert cfg.pseudo_dataset.type == 'VOCImageLabels' and cfg.mask_maker.type == 'PseudoMaskMaker'
    types = [t['type'] for t in cfg.train_dataloader.dataset.pipeline]
    assert types[-1] == 'PackMultiLabelInputs'
    assert ('HideAndSeek' in types) == (name == 'has')
    assert ('EraseRegions' in types) == (name == 'ae')
    if name == 'ae':
        assert types[1] == 'EraseRegions' and gen.rounds.endswith('/rounds.json')
    for t in cfg.train_dataloader.dataset.pipeline + cfg.val_dataloader.dataset.pipeline:
        TRANSFORMS.build(t)
    assert cfg.val_evaluator.type == 'MultiLabelMetric'


@pytest.mark.parametrize('name', ['cam', 'mdc', 'seam'])
def test_config_models_build_and_train_step(name):
    cfg = _cfg(name)
    model_cfg = cfg.model.to_dict()
    model_cfg.pop('pretrained')  # no download
    model = MODELS.build(model_cfg)
    assert type(model.cls_head).__name__ == ('MDCHead' if name == 'mdc' else 'MultiLabelClsHead')
    assert (model.equivariance is not None) == (name == 'seam')
    x = torch.randn(1, 3, 64, 64)
    assert model._forward(x).shape == (1, 20)


def test_cam_config_dataset_on_voc_sample(shared_data):
    voc = shared_data / 'voc_sample'
    cfg = _cfg('cam')
    ds_cfg = cfg.train_dataloader.dataset.to_dict()
    ds_cfg['source'].update(data_root=str(voc), split='ImageSets/Segmentation/val.txt',
                            labels='cls_labels.json', gt_dir=None)
    ds = DATASETS.build(ds_cfg)
    item = ds[0]
    assert item['inputs'].shape[0] == 3 and max(item['inputs'].shape[1:]) <= 512
    assert item['data_samples'].gt_multilabel.shape == (20,)
