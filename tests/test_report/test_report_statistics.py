"""Streamed report statistics (wsss_mmseg/report/statistics.py).

Conventions pinned here: CLIP-ES spec (clip_es.md) §8 — CGL ignores pixels with
confidence below μ, so the variant "conf >= μ" keeps a pixel iff conf >= μ; §10 —
mIoU = mean IoU over the classes present in the GT, IoU = TP / (TP + FP + FN);
pixels the pseudo mask marks 255 are left out of the matrix (our evaluator's rule).
Expected values are worked out by hand or re-derived below with a per-μ loop.
"""
from fractions import Fraction

import numpy as np
import pytest

from wsss_mmseg.report.statistics import (ReportStatistics, confidence_bins,
                                          image_record)

Q = 65535  # 16-bit confidence levels


def q(x):
    """The float32 value a confidence PNG holding round(x * 65535) reads back as."""
    return np.float32(np.rint(np.asarray(x, np.float64) * Q) / Q)


# 2x3 example: labels 0 bg, 1, 2; 255 ignore
MASK = np.array([[0, 1, 1], [2, 255, 1]], np.uint8)
CONF = q([[1.0, 0.3, 0.8], [0.6, 0.9, 0.2]]).astype(np.float32)
GT = np.array([[0, 1, 2], [2, 1, 255]], np.uint8)


def test_confidence_bins_by_hand():
    # q = 65535, 19660, 52428, 39321, 58982, 13107 -> floor(q * 4 / 65535)
    assert confidence_bins(CONF, 4).tolist() == [[4, 1, 3], [2, 3, 0]]
    # a value exactly on a threshold belongs to the bin that starts there (kept at that μ)
    assert confidence_bins(np.float32([13107 / Q, 13106 / Q]), 5).tolist() == [1, 0]


def test_sweep_by_hand():
    """Worked by hand (pixels p0..p5 in row order, see the table in the comments).

    p0 gt0 pred0 bin4 | p1 gt1 pred1 bin1 | p2 gt2 pred1 bin3
    p3 gt2 pred2 bin2 | p4 gt1 pred255     | p5 gt255 pred1 bin0
    μ=0:   hist (0,0)(1,1)(2,1)(2,2): IoU 1, 1/2, 1/2 -> 2/3; labelled 5/6
    μ=.25: p5 only leaves the coverage:                  2/3;          4/6
    μ=.5:  (0,0)(2,1)(2,2), GT row 1 empty: IoU 1, 1/2 -> 3/4;         3/6
    μ=.75: (0,0)(2,1): IoU 1, 0                       -> 1/2;          2/6
    μ=1:   (0,0)                                      -> 1;            1/6
    """
    st = ReportStatistics(num_classes=3, num_bins=4)
    st.update(MASK, CONF, GT)
    sw = st.sweep()
    assert sw['mu'] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert sw['miou'] == pytest.approx([2 / 3, 2 / 3, 3 / 4, 1 / 2, 1.0])
    assert sw['coverage'] == pytest.approx([5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
    assert st.confusion(0.5).tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 1]]
    with pytest.raises(ValueError, match='not one of the thresholds'):
        st.confusion(0.3)


def test_class_histograms_and_mean_confidence_by_hand():
    st = ReportStatistics(num_classes=3, num_bins=4)
    st.update(MASK, CONF, GT)
    # class 1 has p1 (bin 1), p2 (bin 3), p5 (bin 0); class 0 p0 (bin 4); class 2 p3 (bin 2)
    assert st.conf_hist.tolist() == [[0, 0, 0, 0, 1], [1, 1, 0, 1, 0], [0, 0, 1, 0, 0]]
    expected = [1.0, (19660 + 52428 + 13107) / 3 / Q, 39321 / Q]
    assert st.mean_confidence() == pytest.approx(expected, abs=1e-7)
    s = st.scores()
    # precision_k = TP / predicted k, recall_k = TP / GT k (μ = 0 matrix above)
    assert s['precision'][1] == pytest.approx(1 / 2) and s['recall'][2] == pytest.approx(1 / 2)


def test_image_record_by_hand():
    rec = image_record(MASK, CONF, GT, num_classes=3)
    assert rec['miou'] == pytest.approx(2 / 3)
    assert rec['mean_confidence'] == pytest.approx((65535 + 19660 + 52428 + 39321 + 13107)
                                                   / 5 / Q, abs=1e-7)
    assert rec['labelled_fraction'] == pytest.approx(5 / 6)
    assert rec['foreground_fraction'] == pytest.approx(4 / 6)
    assert rec['pred_classes'] == [0, 1, 2] and rec['gt_classes'] == [0, 1, 2]
    empty = image_record(np.full((2, 2), 255, np.uint8), np.zeros((2, 2), np.float32), None,
                         num_classes=3)
    assert empty['mean_confidence'] is None and empty['miou'] is None
    assert empty['labelled_fraction'] == 0.0


def _reference_sweep(images, num_classes, num_bins):
    """Per-μ loop written from the spec: exact comparison conf >= j / B with Fractions."""
    mius, cov = [], []
    total = sum(m.size for m, _, _ in images)
    for j in range(num_bins + 1):
        mu = Fraction(j, num_bins)
        hist = np.zeros((num_classes, num_classes), np.int64)
        kept_labelled = 0
        for mask, conf, gt in images:
            qv = np.rint(conf.astype(np.float64) * Q).astype(np.int64)
            keep = np.array([[Fraction(int(v), Q) >= mu for v in row] for row in qv])
            pred = np.where(keep, mask.astype(np.int64), 255)
            kept_labelled += int((pred != 255).sum())
            if gt is None:
                continue
            for g, p in zip(gt.ravel(), pred.ravel()):
                if g != 255 and p != 255:
                    hist[g, p] += 1
        ious = []
        for k in range(num_classes):
            tp = hist[k, k]
            fn = hist[k].sum() - tp
            fp = hist[:, k].sum() - tp
            if hist[k].sum() > 0:
                ious.append(tp / (tp + fp + fn))
        mius.append(float(np.mean(ious)) if ious else None)
        cov.append(kept_labelled / total)
    return mius, cov


def test_sweep_matches_per_threshold_rederivation():
    rng = np.random.default_rng(3)
    images = []
    for i in range(4):
        h, w = 7 + i, 9
        mask = rng.integers(0, 4, (h, w)).astype(np.uint8)
        mask[rng.random((h, w)) < 0.1] = 255
        gt = np.where(rng.random((h, w)) < 0.6, mask, rng.integers(0, 4, (h, w))).astype(np.uint8)
        gt[rng.random((h, w)) < 0.05] = 255
        conf = q(rng.random((h, w)))
        conf[0, :3] = q([0.2, 0.4, 0.6])  # exactly on thresholds of the B=5 grid
        images.append((mask, conf, None if i == 3 else gt))  # one image without GT
    st = ReportStatistics(num_classes=4, num_bins=5)
    for mask, conf, gt in images:
        st.update(mask, conf, gt)
    miou, cov = _reference_sweep(images, 4, 5)
    sw = st.sweep()
    assert sw['coverage'] == pytest.approx(cov)
    assert [m is None for m in sw['miou']] == [m is None for m in miou]
    assert [m for m in sw['miou'] if m is not None] == pytest.approx(
        [m for m in miou if m is not None])
    assert st.num_images == 4 and st.num_images_with_gt == 3


def test_sweep_agrees_with_pseudo_mask_evaluator():
    """The engine's evaluator is an independent implementation of the same 'conf>=μ' variant."""
    from wsss_mmseg.evaluation import PseudoMaskEvaluator
    rng = np.random.default_rng(5)
    ev = PseudoMaskEvaluator(num_classes=5, conf_thresholds=[0.5, 0.95])
    st = ReportStatistics(num_classes=5, num_bins=100)
    for _ in range(3):
        mask = rng.integers(0, 5, (16, 12)).astype(np.uint8)
        mask[rng.random(mask.shape) < 0.1] = 255
        gt = np.where(rng.random(mask.shape) < 0.5, mask, rng.integers(0, 5, mask.shape))
        gt = gt.astype(np.uint8)
        conf = q(rng.random(mask.shape) * 0.999)  # no value exactly on 0.5 / 0.95
        ev.update(gt, mask, conf)
        st.update(mask, conf, gt)
    res = ev.result()['variants']
    sw = st.sweep()
    for mu, name in ((0.0, 'all'), (0.5, 'conf>=0.5'), (0.95, 'conf>=0.95')):
        j = round(mu * 100)
        assert sw['miou'][j] == pytest.approx(res[name]['miou'])
        assert sw['coverage'][j] == pytest.approx(1 - res[name]['ignored_fraction'])


def test_bad_input_leaves_accumulators_unchanged():
    st = ReportStatistics(num_classes=3, num_bins=4)
    st.update(MASK, CONF, GT)
    before = (st.joint.copy(), st.conf_hist.copy(), st.total_pixels)
    with pytest.raises(ValueError, match='outside 0..2'):
        st.update(np.full((2, 3), 7, np.uint8), CONF, GT)
    with pytest.raises(ValueError, match='confidence map has shape'):
        st.update(MASK, CONF[:, :2], GT)
    with pytest.raises(ValueError, match='GT mask has shape'):
        st.update(MASK, CONF, GT[:1])
    assert (st.joint == before[0]).all() and (st.conf_hist == before[1]).all()
    assert st.total_pixels == before[2] and st.num_images == 1
    with pytest.raises(ValueError, match='num_classes'):
        ReportStatistics(num_classes=1)
