"""Hide-and-Seek, Mixup, SEAM equivariance, erasing and multi-label metric math."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from wsss_mmseg.classic.erasing import erase_with_fill, mine_regions
from wsss_mmseg.classic.hide_and_seek import apply_hidden_cells, draw_hidden_cells, hide_and_seek
from wsss_mmseg.classic.metrics import average_precision, multilabel_scores
from wsss_mmseg.classic.mixup import mixup, multi_hot, sample_mixup_lambda
from wsss_mmseg.classic.seam import equivariance_loss, rescale_maps


def test_hide_and_seek_hides_exactly_the_drawn_cells():
    img = np.random.default_rng(5).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    fill = (10.4, 20.6, 30.0)
    out, g, cells = hide_and_seek(img, grid_sizes=(16, 32), prob=0.5, fill=fill,
                                  rng=np.random.default_rng(0))
    # expected cells from the documented draw (one grid size, then one uniform per cell < prob),
    # written with numpy directly -- not with draw_hidden_cells
    rng = np.random.default_rng(0)
    g2 = (16, 32)[int(rng.integers(2))]
    cells2 = rng.random((-(-50 // g2), -(-70 // g2))) < 0.5
    assert g == g2 and np.array_equal(cells, cells2)
    assert cells.shape == (-(-50 // g), -(-70 // g)) and cells.any() and not cells.all()
    for cy in range(cells.shape[0]):
        for cx in range(cells.shape[1]):
            block = (slice(cy * g, (cy + 1) * g), slice(cx * g, (cx + 1) * g))
            if cells[cy, cx]:
                assert (out[block] == np.array([10, 21, 30], np.uint8)).all()
            else:
                assert np.array_equal(out[block], img[block])
    assert np.array_equal(out, hide_and_seek(img, grid_sizes=(16, 32), prob=0.5, fill=fill,
                                             rng=np.random.default_rng(0))[0])
    assert np.array_equal(apply_hidden_cells(img, np.zeros_like(cells), grid_size=g, fill=0), img)
    with pytest.raises(ValueError, match='cells'):
        apply_hidden_cells(img, np.zeros((1, 1), bool), grid_size=g, fill=0)
    with pytest.raises(ValueError, match='prob'):
        draw_hidden_cells(4, 4, grid_size=2, prob=1.5, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match='fill'):
        apply_hidden_cells(img, cells, grid_size=g, fill=(1, 2))


def test_hide_and_seek_transform_records_cells():
    from wsss_mmseg.datasets.classic_transforms import HideAndSeek
    img = np.full((40, 40, 3), 200, np.uint8)
    t = HideAndSeek(grid_sizes=(8,), prob=0.5, fill=(1, 2, 3), seed=3)
    res = t(dict(img=img.copy()))
    cells = res['hidden_cells']
    expected = np.kron(cells, np.ones((8, 8), bool))
    assert res['hide_grid_size'] == 8
    assert (res['img'][expected] == [1, 2, 3]).all() and (res['img'][~expected] == 200).all()
    again = HideAndSeek(grid_sizes=(8,), prob=0.5, fill=(1, 2, 3), seed=3)(dict(img=img.copy()))
    assert np.array_equal(again['img'], res['img'])
    with pytest.raises(ValueError, match='grid_sizes'):
        HideAndSeek(grid_sizes=())


def test_mixup_labels_are_the_convex_combination():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 5, 5, generator=g)
    y = torch.stack([multi_hot(ids, 6) for ids in ([0], [1, 2], [5], [0, 3])])
    perm = torch.tensor([2, 0, 3, 1])
    lam = 0.3
    mx, my = mixup(x, y, lam=lam, perm=perm)
    for i in range(4):
        torch.testing.assert_close(mx[i], lam * x[i] + (1 - lam) * x[perm[i]])
        torch.testing.assert_close(my[i], lam * y[i] + (1 - lam) * y[perm[i]])
    assert torch.allclose(my[1], torch.tensor([0.7, 0.3, 0.3, 0, 0, 0]))
    assert 0 <= sample_mixup_lambda(0.5, rng=np.random.default_rng(0)) <= 1
    assert sample_mixup_lambda(0.5, rng=np.random.default_rng(1)) == \
        sample_mixup_lambda(0.5, rng=np.random.default_rng(1))
    with pytest.raises(ValueError, match='alpha'):
        sample_mixup_lambda(0.0)
    with pytest.raises(ValueError, match='lam'):
        mixup(x, y, lam=1.5, perm=perm)
    with pytest.raises(ValueError, match='out of range'):
        multi_hot([6], 6)


def test_mixup_preprocessor_mixes_images_and_label_vectors():
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    pre = MODELS.build(dict(type='MultiLabelDataPreProcessor', mean=[0, 0, 0], std=[1, 1, 1],
                            size=(4, 4), mixup=dict(alpha=1.0, prob=1.0)))
    values = torch.tensor([0.0, 10.0, 20.0])
    imgs = [torch.full((3, 4, 4), float(v)) for v in values]
    samples = []
    for i in range(3):
        s = SegDataSample()
        s.gt_multilabel = multi_hot([i], 3)
        samples.append(s)
    np.random.seed(0)
    torch.manual_seed(0)
    out = pre(dict(inputs=imgs, data_samples=samples), training=True)
    lam = out['data_samples'][0].metainfo['mixup_lambda']
    assert 0 < lam < 1
    mixed_any = False
    for i, s in enumerate(out['data_samples']):
        vec = s.gt_multilabel
        # one-hot sources: the label vector holds the mixing weights of the two images
        assert float(vec.sum()) == pytest.approx(1.0)
        assert float(vec[i]) >= lam - 1e-6
        torch.testing.assert_close(out['inputs'][i], torch.full((3, 4, 4), float(vec @ values)))
        mixed_any |= float(vec[i]) < 1
    assert mixed_any
    evaluated = pre(dict(inputs=list(imgs), data_samples=None), training=False)
    assert torch.equal(evaluated['inputs'][1], imgs[1])
    with pytest.raises(KeyError, match='beta'):
        MODELS.build(dict(type='MultiLabelDataPreProcessor', mixup=dict(beta=1)))


def test_seam_loss_zero_for_an_equivariant_map():
    # a 1x1 conv is linear per pixel, so it commutes with bilinear resizing: A(T(I)) = T(A(I))
    torch.manual_seed(0)
    net = nn.Conv2d(3, 4, 1).requires_grad_(False)
    img = torch.randn(2, 3, 40, 30)
    from wsss_mmseg.models.classic import SEAMLoss
    loss_mod = SEAMLoss(scale=0.3, normalize=False)
    small = loss_mod.transform(img)
    assert small.shape[2:] == (12, 9)
    assert float(loss_mod(net(img), net(small))) < 1e-6
    assert float(equivariance_loss(net(img), net(rescale_maps(img, size=(12, 9))))) < 1e-6
    # not equivariant: a 3x3 conv with zero padding near the border, or a shifted map
    conv = nn.Conv2d(3, 4, 5, padding=2).requires_grad_(False)
    assert float(loss_mod(conv(img), conv(small))) > 1e-3
    assert float(equivariance_loss(net(img), net(small).roll(2, dims=-1))) > 1e-3
    with pytest.raises(ValueError):
        equivariance_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match='scale'):
        SEAMLoss(scale=1.5)


def test_mine_and_erase():
    cams = np.zeros((2, 4, 4), np.float32)
    cams[0, 0, 0] = 0.9
    cams[1, 3, 3] = 0.6
    prev = np.zeros((4, 4), bool)
    prev[1, 1] = True
    region = mine_regions(cams, threshold=0.5, previous=prev)
    assert region.sum() == 3 and region[0, 0] and region[3, 3] and region[1, 1]
    assert mine_regions(cams, threshold=0.7).sum() == 1
    img = np.full((4, 4, 3), 9, np.uint8)
    out = erase_with_fill(img, region, fill=(1.4, 2.6, 3))
    assert (out[region] == [1, 3, 3]).all() and (out[~region] == 9).all()
    with pytest.raises(ValueError, match='threshold'):
        mine_regions(cams, threshold=1.0)
    with pytest.raises(ValueError, match='mask'):
        erase_with_fill(img, np.zeros((2, 2), bool), fill=0)


def test_multilabel_scores():
    scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.2, 0.6]])
    labels = np.array([[1, 0], [0, 1], [1, 0]], bool)
    assert average_precision(scores[:, 0], labels[:, 0]) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(scores[:, 1], labels[:, 1]) == pytest.approx(1.0)
    out = multilabel_scores(scores, labels, thr=0.5)
    assert out['mAP'] == pytest.approx(100 * (5 / 6 + 1) / 2)
    # class 0: tp 1 fp 1 fn 1 -> F1 0.5; class 1: tp 1 fp 1 fn 0 -> 2/3
    assert out['F1'] == pytest.approx(100 * (0.5 + 2 / 3) / 2)
    assert out['precision'] == pytest.approx(50.0) and out['recall'] == pytest.approx(200 / 3)
    assert np.isnan(average_precision(np.zeros(3), np.zeros(3, bool)))
