"""configs/classic/{affinitynet,acol,sec}_r50_voc.py parse, build their models and pipelines and
wire the generator sections (classic_wsss.md: SEAM row AffinityNet RW, ACoL row, SEC row)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmseg.registry import MODELS, TRANSFORMS

REPO = Path(__file__).resolve().parents[2]


def _cfg(name: str) -> Config:
    import wsss_mmseg.datasets  # noqa: F401
    import wsss_mmseg.hooks  # noqa: F401
    import wsss_mmseg.models  # noqa: F401
    return Config.fromfile(str(REPO / 'configs' / 'classic' / f'{name}_r50_voc.py'))


@pytest.mark.parametrize('name,model_type,generator', [
    ('affinitynet', 'AffinityNet', 'RandomWalkGenerator'),
    ('acol', 'MultiLabelClassifier', 'ClassifierCAMGenerator'),
    ('sec', 'SECSegmentor', 'SegmenterGenerator')])
def test_config_builds(name, model_type, generator):
    cfg = _cfg(name)
    model_cfg = cfg.model.to_dict()
    model_cfg.pop('pretrained')  # no download
    model = MODELS.build(model_cfg)
    assert type(model).__name__ == model_type and cfg.generator.type == generator
    for t in cfg.train_dataloader.dataset.pipeline:
        TRANSFORMS.build(t)
    x = torch.randn(1, 3, 64, 64)
    if name == 'affinitynet':
        assert model.embed(x).shape == (1, 448, 8, 8) and model.radius == 5
        assert cfg.generator.random_walk.radius == 5
        assert cfg.generator.affinity_net.config.endswith('affinitynet_r50_voc.py')
        assert cfg.train_dataloader.dataset.pipeline[1].type == 'LoadConfidentRegions'
        assert (cfg.train_dataloader.dataset.pipeline[1].la,
                cfg.train_dataloader.dataset.pipeline[1].ha) == (4.0, 24.0)
    elif name == 'acol':
        assert type(model.cls_head).__name__ == 'ACoLHead' and 0.6 <= model.cls_head.delta <= 0.9
        assert model._forward(x).shape == (1, 20)
    else:
        assert (model.q_fg, model.q_bg) == (0.996, 0.999)
        assert cfg.train_dataloader.dataset.pipeline[1].type == 'LoadSECCues'
        assert 'label_ids' in cfg.train_dataloader.dataset.pipeline[-1].meta_keys


@pytest.mark.parametrize('name,source', [('saliency_guided', 'FolderSaliency'),
                                         ('saliency_guided_sr', 'SpectralResidualSaliency')])
def test_saliency_configs_build(name, source):
    cfg = _cfg(name)
    pipeline = cfg.train_dataloader.dataset.pipeline
    assert pipeline[1].type == 'LoadSaliencyMap' and pipeline[1].source.type == source
    assert pipeline[2].type == 'SaliencyGuidedLabels' and pipeline[2].method == 'oh'
    for t in pipeline:
        TRANSFORMS.build(t)
    model_cfg = cfg.model.to_dict()
    model_cfg.pop('pretrained')
    assert type(MODELS.build(model_cfg)).__name__ == 'EncoderDecoder'
    assert cfg.generator.type == 'SegmenterGenerator'
    assert cfg.generator.config.endswith(f'{name}_r50_voc.py')


def test_ae_psl_and_mixup_cam_configs_build():
    cfg = _cfg('ae_psl')
    pipeline = cfg.train_dataloader.dataset.pipeline
    assert pipeline[2].type == 'SaliencyGuidedLabels' and pipeline[2].method == 'ae_psl'
    assert 'label_ids' in pipeline[-1].meta_keys
    for t in pipeline:
        TRANSFORMS.build(t)
    model_cfg = cfg.model.to_dict()
    model_cfg.pop('pretrained')
    model = MODELS.build(model_cfg)
    assert type(model).__name__ == 'AEPSLSegmentor' and model.cls_head.num_classes == 20
    assert cfg.generator.type == 'SegmenterGenerator'

    cfg = _cfg('mixup_cam')
    model_cfg = cfg.model.to_dict()
    model_cfg.pop('pretrained')
    model = MODELS.build(model_cfg)
    assert type(model).__name__ == 'MixupCAMClassifier'
    assert model.data_preprocessor.mixup == dict(alpha=1.0, prob=1.0)
    assert (model.entropy_weight, model.concentration_weight) == (0.1, 0.1)
    assert cfg.generator.config.endswith('mixup_cam_r50_voc.py')


def test_random_walk_on_clip_es_config():
    cfg = Config.fromfile(str(REPO / 'configs' / 'classic' / 'affinitynet_clip_es_voc.py'))
    clip = Config.fromfile(str(REPO / 'configs' / 'clip_es_voc.py'))
    assert cfg.generator.type == 'RandomWalkGenerator'
    assert cfg.generator.base.to_dict() == clip.generator.to_dict()
    assert cfg.generator.affinity_net.config.endswith('affinitynet_r50_voc.py')
    assert cfg.mask_maker.to_dict() == clip.mask_maker.to_dict()
