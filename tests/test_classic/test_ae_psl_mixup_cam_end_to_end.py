"""AE-PSL segmentation stage (offline mined regions + saliency background, online PSL labels) and
Mixup-CAM (Mixup + entropy/concentration regularisers) end to end on ../shared/data/voc_sample
(classic_wsss.md, AE-PSL and Mixup rows): mim-style training with Runner, then
tools/generate_pseudo.py from the checkpoint, with the evaluation report."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from mmengine.config import Config

from tests.test_classic.pipeline_helpers import (CROP, PACK_WITH_LABELS, check_eval,
                                                 classifier_cams, generate, runner_cfg,
                                                 tiny_segmenter, voc_source)
from tests.test_classic.tiny import classifier_runner_cfg, tiny_classifier, write_split


def _ae_psl_model():
    return tiny_segmenter('AEPSLSegmentor',
                          cls_head=dict(type='MultiLabelClsHead', in_channels=64, num_classes=20))


@pytest.mark.slow
def test_ae_psl_train_and_pseudo_labels(tmp_path, shared_data):
    from mmengine.runner import Runner

    import wsss_mmseg.datasets  # noqa: F401
    import wsss_mmseg.models  # noqa: F401
    voc = shared_data / 'voc_sample'
    if not voc.is_dir():
        pytest.skip(f'{voc} absent')
    ids, split, _, cam_dir = classifier_cams(voc, tmp_path)
    dataset = dict(type='ImageLevelLabelDataset', source=voc_source(voc, split, gt=False),
                   pipeline=[dict(type='LoadImageFromFile'),
                             dict(type='LoadSaliencyMap',
                                  source=dict(type='SpectralResidualSaliency')),
                             dict(type='SaliencyGuidedLabels', cam_dir=str(cam_dir),
                                  method='ae_psl', threshold=0.5, bg_saliency=0.2),
                             dict(type='Resize', scale=CROP, keep_ratio=False),
                             PACK_WITH_LABELS])
    iters = 6
    runner = Runner.from_cfg(Config(runner_cfg(_ae_psl_model(), dataset, tmp_path / 'psl',
                                               iters)))
    runner.train()
    hub = runner.message_hub
    for key in ('loss_cls', 'loss_seg'):
        vals = hub.get_scalar(f'train/{key}').data[0]
        assert len(vals) == iters and np.isfinite(vals).all(), (key, vals)
    losses = hub.get_scalar('train/loss').data[0]
    assert losses[-1] < losses[0], losses

    gen = dict(type='SegmenterGenerator', model=_ae_psl_model(),
               checkpoint=str(tmp_path / 'psl' / f'iter_{iters}.pth'), max_side=64,
               class_table='voc20', device='cpu')
    summary = generate(dict(pseudo_dataset=voc_source(voc, split), generator=gen,
                            mask_maker=dict(type='PseudoMaskMaker', bg_power=1, crf=None)),
                       tmp_path, 'psl_job')
    assert summary['counts']['done'] == len(ids)
    check_eval(tmp_path / 'psl_job', len(ids))


@pytest.mark.slow
def test_mixup_cam_train_and_pseudo_labels(tmp_path, shared_data):
    from mmengine.runner import Runner

    import wsss_mmseg.models  # noqa: F401
    voc = shared_data / 'voc_sample'
    if not voc.is_dir():
        pytest.skip(f'{voc} absent')
    split = tmp_path / 'split.txt'
    ids = write_split(split, voc, 4)
    model = tiny_classifier(mixup=dict(alpha=1.0, prob=1.0))
    model.update(type='MixupCAMClassifier', entropy_weight=0.1, concentration_weight=0.1)
    iters = 10
    runner = Runner.from_cfg(Config(classifier_runner_cfg(voc, split, tmp_path / 'cls',
                                                          max_iters=iters, model=model)))
    runner.train()
    hub = runner.message_hub
    for key in ('loss_cls', 'loss_ent', 'loss_con'):
        vals = hub.get_scalar(f'train/{key}').data[0]
        assert len(vals) == iters and np.isfinite(vals).all(), (key, vals)
    assert (hub.get_scalar('train/loss_ent').data[0] > 0).any()
    assert 'val/multilabel/mAP' in hub.log_scalars

    gen = dict(type='ClassifierCAMGenerator', model=model,
               checkpoint=str(tmp_path / 'cls' / f'iter_{iters}.pth'), method='cam',
               scales=(1.0,), flip=True, max_side=64, class_table='voc20', device='cpu')
    summary = generate(dict(pseudo_dataset=voc_source(voc, split), generator=gen,
                            mask_maker=dict(type='PseudoMaskMaker', bg_power=1, crf=None)),
                       tmp_path, 'mixup_job')
    assert summary['counts']['done'] == len(ids)
    check_eval(tmp_path / 'mixup_job', len(ids))


def test_mixup_cam_classifier_adds_the_weighted_regularisers():
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    from wsss_mmseg.classic.mixup import cam_concentration_loss, cam_entropy_loss
    model = tiny_classifier()
    model.update(type='MixupCAMClassifier', entropy_weight=0.5, concentration_weight=2.0)
    with DefaultScope.overwrite_default_scope('mmseg'):
        net = MODELS.build(model)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    samples = []
    for vec in ([1.0, 0.3] + [0.0] * 18, [0.0] * 19 + [1.0]):
        s = SegDataSample()
        s.gt_multilabel = torch.tensor(vec)
        samples.append(s)
    losses = net.loss(x, samples)
    cams = net.class_maps(x)
    targets = torch.stack([s.gt_multilabel for s in samples])
    assert losses['loss_ent'].item() == pytest.approx(0.5 * cam_entropy_loss(cams, targets).item(),
                                                      rel=1e-5)
    assert losses['loss_con'].item() == pytest.approx(
        2.0 * cam_concentration_loss(cams, targets).item(), rel=1e-5)
    with pytest.raises(ValueError, match='equivariance'):
        MODELS.build(dict(model, equivariance=dict(type='SEAMLoss')))
