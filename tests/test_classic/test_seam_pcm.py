"""SEAM (classic_wsss.md, SEAM row: Siamese views, ER + ECR losses, PCM): every formula on a tiny
input computed by hand or by a numpy loop written from the method's definition."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmseg.registry import MODELS

import wsss_mmseg  # noqa: F401
from wsss_mmseg.classic.seam_pcm import (ecr_loss, er_loss, max_norm, max_onehot, min_pool_loss, pcm_propagate,
                                         pcm_seed, with_background)
from wsss_mmseg.models.seam import SEAMLoss

from .tiny import tiny_classifier

EPS = 1e-5


def test_max_norm_by_hand():
    m = torch.tensor([[[[-1.0, 1.0], [3.0, 5.0]]]])
    # relu -> [0, 1, 3, 5]; min 0, max 5: relu(p - 0 - eps) / (5 + eps)
    expected = torch.tensor([0.0, 1 - EPS, 3 - EPS, 5 - EPS]) / (5 + EPS)
    torch.testing.assert_close(max_norm(m).flatten(), expected)
    m2 = torch.tensor([[[[2.0, 4.0]]]])          # min 2, max 4 -> [0, (2 - eps) / (2 + eps)]
    torch.testing.assert_close(max_norm(m2).flatten(), torch.tensor([0.0, (2 - EPS) / (2 + EPS)]))


def test_background_seed_and_onehot_by_hand():
    fg = torch.tensor([[[[0.2, 0.9]], [[0.6, 0.3]]]])           # K = 2, 1 x 2 grid
    torch.testing.assert_close(with_background(fg)[0, 0, 0], torch.tensor([0.4, 0.1]))
    # seed: relu(c - eps) / (max_c + eps) per class; background 1 - max; non-max fg -> 0
    n0 = torch.tensor([0.2 - EPS, 0.9 - EPS]) / (0.9 + EPS)
    n1 = torch.tensor([0.6 - EPS, 0.3 - EPS]) / (0.6 + EPS)
    seed = pcm_seed(fg)
    best = torch.maximum(n0, n1)
    torch.testing.assert_close(seed[0, 0, 0], 1 - best)
    torch.testing.assert_close(seed[0, 1, 0], torch.tensor([0.0, float(n0[1])]))   # class 0 wins pixel 1
    torch.testing.assert_close(seed[0, 2, 0], torch.tensor([float(n1[0]), 0.0]))   # class 1 wins pixel 0
    full = torch.tensor([[[[0.7, 0.1]], [[0.2, 0.5]], [[0.3, 0.5]]]])
    torch.testing.assert_close(max_onehot(full), torch.tensor([[[[0.7, 0.1]], [[0.0, 0.5]], [[0.3, 0.5]]]]))


def test_pcm_propagate_equals_a_numpy_loop():
    g = torch.Generator().manual_seed(0)
    cam = torch.rand(1, 3, 2, 3, generator=g)
    feats = torch.randn(1, 4, 2, 3, generator=g)
    out = pcm_propagate(cam, feats)
    f = feats[0].double().numpy().reshape(4, 6)
    c = cam[0].double().numpy().reshape(3, 6)
    unit = f / (np.linalg.norm(f, axis=0, keepdims=True) + EPS)
    a = np.zeros((6, 6))
    for i in range(6):
        for j in range(6):
            a[i, j] = max(0.0, float(unit[:, i] @ unit[:, j]))
    expected = np.zeros((3, 6))
    for j in range(6):
        col = a[:, j].sum() + EPS
        for k in range(3):
            expected[k, j] = sum(c[k, i] * a[i, j] for i in range(6)) / col
    np.testing.assert_allclose(out[0].double().numpy().reshape(3, 6), expected, rtol=1e-5, atol=1e-6)


def test_ecr_topk_and_min_pool_by_hand():
    target = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.4]], [[0.2, 0.8]]]])     # (1, 3, 1, 2)
    pcm = torch.tensor([[[[0.5, 0.5]], [[0.1, 0.1]], [[0.2, 0.2]]]])
    # max_onehot(target): fg pixel 0: max(0, 0.2) = 0.2 -> class 1 zeroed; pixel 1: max(0.4, 0.8) -> class 0 zeroed
    # |onehot - pcm| = [0.5, 0.5, 0.1, 0.1, 0.0, 0.6]; top int(0.5 * 6) = 3 -> (0.6 + 0.5 + 0.5) / 3
    assert float(ecr_loss(target, pcm, top_ratio=0.5)) == pytest.approx(1.6 / 3, abs=1e-6)
    assert float(ecr_loss(target, pcm, top_ratio=1.0)) == pytest.approx(1.8 / 6, abs=1e-6)
    rv = torch.tensor([[[[-0.5, 0.2], [0.3, 0.9]], [[0.1, 0.4], [-0.2, 0.3]]]])   # K = 2, 2 x 2
    # per-pixel max: [0.1, 0.4, 0.3, 0.9]; smallest 4 // 4 = 1 -> 0.1
    assert float(min_pool_loss(rv)) == pytest.approx(0.1, abs=1e-7)
    assert float(er_loss(torch.tensor([[[[1.0, 2.0]]]]), torch.tensor([[[[0.0, 4.0]]]]))) == pytest.approx(1.5)


def test_er_zeroes_absent_classes_before_comparing():
    # two classes on a 2 x 2 grid (scaled view = the same grid, so T is the identity here)
    o = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]], [[9.0, 0.0], [0.0, 3.0]]]])
    t = torch.tensor([[[[0.0, 2.0], [2.0, 4.0]], [[0.0, 7.0], [1.0, 0.0]]]])
    loss = SEAMLoss(scale=0.5)
    labels = torch.tensor([[1.0, 0.0]])                 # class 1 absent: its (very different) maps don't count
    n_o = torch.tensor([0.0, 1 - EPS, 2 - EPS, 4 - EPS]) / (4 + EPS)
    n_t = torch.tensor([0.0, 2 - EPS, 2 - EPS, 4 - EPS]) / (4 + EPS)
    expected = float((n_o - n_t).abs().sum()) / 8     # mean over K * h * w = 8 values, class 1 all zero
    assert float(loss(o, t, labels)) == pytest.approx(expected, abs=1e-6)
    assert float(loss(o, t)) > expected + 0.1          # without the labels class 1 dominates


def _batch(n=2, k=20):
    torch.manual_seed(0)
    x = torch.randn(n, 3, 64, 64)
    y = torch.zeros(n, k)
    y[0, 3] = 1
    if n > 1:
        y[1, [5, 7]] = 1
    return x, y


def _seam_model(**loss_kw):
    cfg = tiny_classifier(equivariance=dict(type='SEAMLoss', scale=0.5, **loss_kw))
    cfg['backbone']['out_indices'] = (1, 2, 3)          # stages 2, 3 feed the PCM; the head reads the last
    return MODELS.build(cfg)


def test_classification_terms_are_averaged_over_the_two_views():
    model = _seam_model()
    x, y = _batch()
    losses = model.equivariance.siamese_losses(model, x, y)
    scaled = F.interpolate(x, size=(32, 32), mode='bilinear', align_corners=False)
    bce_o = F.binary_cross_entropy_with_logits(model._forward(x), y)
    bce_t = F.binary_cross_entropy_with_logits(model._forward(scaled), y)
    torch.testing.assert_close(losses['loss_cls'] + losses['loss_cls_scaled'], 0.5 * (bce_o + bce_t))


def test_pcm_ecr_losses_are_the_formulas_on_the_model_maps():
    model = _seam_model(pcm=dict(in_index=(0, 1), in_channels=(16, 32), mid_channels=(4, 8), out_channels=12),
                        ecr_top_ratio=0.2, min_pool_weight=1.0)
    x, y = _batch()
    losses = model.loss(x, [_sample(row) for row in y])
    assert set(losses) == {'loss_cls', 'loss_cls_scaled', 'loss_er', 'loss_ecr', 'loss_rvmin'}
    # independent assembly of ECR from the pure pieces (pinned above) and the model's raw maps
    scaled = F.interpolate(x, size=(32, 32), mode='bilinear', align_corners=False)
    fo, ft = model.extract_feat(x), model.extract_feat(scaled)
    ro, rt = model.cls_head.class_maps(fo), model.cls_head.class_maps(ft)
    grid = rt.shape[2:]
    yf = torch.cat([torch.ones(2, 1), y], 1)[:, :, None, None]
    pcm = model.equivariance.pcm
    # PCM: seed of the raw CAM propagated with the embedding of (image, stage-2, stage-3) features
    emb_o = pcm.embed(torch.cat([F.interpolate(x, size=ro.shape[2:], mode='bilinear', align_corners=True),
                                 F.interpolate(F.relu(pcm.reduce[0](fo[0])), size=ro.shape[2:], mode='bilinear',
                                               align_corners=True),
                                 F.interpolate(F.relu(pcm.reduce[1](fo[1])), size=ro.shape[2:], mode='bilinear',
                                               align_corners=True)], 1))
    rv_o = pcm_propagate(pcm_seed(ro), emb_o)
    torch.testing.assert_close(rv_o, pcm(ro, fo, x))
    rv_t = pcm(rt, ft, scaled)
    cam_o = with_background(F.interpolate(max_norm(ro), size=grid, mode='bilinear') * yf[:, 1:])
    cam_t = with_background(max_norm(rt) * yf[:, 1:])
    p_o = F.interpolate(max_norm(rv_o), size=grid, mode='bilinear') * yf
    p_t = max_norm(rv_t) * yf
    ecr = ecr_loss(cam_t, p_o, top_ratio=0.2) + ecr_loss(cam_o, p_t, top_ratio=0.2)
    torch.testing.assert_close(losses['loss_ecr'], ecr, rtol=1e-5, atol=1e-6)
    # absent classes carry nothing into ER/ECR: their PCM channels are zero after the label mask
    assert float(p_t[0, 1:][y[0] == 0].abs().max()) == 0.0
    sum(losses.values()).backward()
    assert pcm.embed.weight.grad is not None and float(pcm.embed.weight.grad.abs().sum()) > 0


def _sample(labels):
    from mmseg.structures import SegDataSample
    s = SegDataSample()
    s.gt_multilabel = labels
    return s


def test_pcm_config_errors():
    with pytest.raises(ValueError, match='same non-zero length'):
        MODELS.build(dict(type='SEAMPCM', in_index=(0,), in_channels=(16, 32)))
    model = _seam_model(pcm=dict(in_index=(0, 1), in_channels=(16, 99), mid_channels=(4, 8), out_channels=12))
    x, y = _batch()
    with pytest.raises(ValueError, match='99'):
        model.loss(x, [_sample(row) for row in y])


def test_shipped_seam_config_trains_with_pcm_and_ecr():
    from pathlib import Path

    from mmengine.config import Config
    cfg = Config.fromfile(str(Path(__file__).resolve().parents[2] / 'configs/classic/seam_r50_voc.py'))
    model_cfg = cfg.model.to_dict()
    model_cfg.pop('pretrained')  # no download
    model = MODELS.build(model_cfg)
    assert model.equivariance.pcm is not None and model.equivariance.scale == 0.3
    x, y = _batch(n=1)
    losses = model.loss(x, [_sample(y[0])])
    assert set(losses) == {'loss_cls', 'loss_cls_scaled', 'loss_er', 'loss_ecr', 'loss_rvmin'}
    assert model._forward(x).shape == (1, 20)
