"""AffinityNet labels/loss and random-walk refinement (classic_wsss.md, SEAM row: AffinityNet RW
with la_crf 4.0 / ha_crf 24.0; CAM row; IRN inter-pixel relations). Expected values are worked out
by hand or by an independent numpy construction of the dense matrices."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wsss_mmseg.classic.affinity import (affinity_labels, affinity_loss, confident_region_label,
                                         crf_region_labels, pair_affinity, radius_offsets)
from wsss_mmseg.classic.random_walk import (affinity_matrix, random_walk,
                                            refine_with_random_walk, transition_matrix)


def test_radius_offsets_by_hand():
    assert radius_offsets(3) == [(0, 1), (0, 2), (1, -2), (1, -1), (1, 0), (1, 1), (1, 2),
                                 (2, -2), (2, -1), (2, 0), (2, 1), (2, 2)]
    # 69 lattice points with x^2 + y^2 < 25 (9 + 2 * (9 + 9 + 7 + 5)); minus the centre, halved
    assert len(radius_offsets(5)) == 34
    with pytest.raises(ValueError, match='radius'):
        radius_offsets(1)


def test_confident_regions_on_a_toy_cam():
    # 1 x 5 image, classes 2 and 6 (label values 3 and 7)
    cams = np.array([[[0.9, 0.5, 0.1, 0.0, 0.15]],
                     [[0.0, 0.2, 0.3, 0.05, 0.0]]], np.float32)
    # la = 4: bg = (1 - max)^4 = [1e-4, .0625, .2401, .8145, .5220] -> [3, 3, 7, 0, 0]
    # ha = 24: bg = [1e-24, 6e-8, 1.9e-4, .2920, .0202]              -> [3, 3, 7, 0, 3]
    # confident: la's foreground, ha's background, the rest (pixel 4) uncertain
    out = crf_region_labels(cams, [2, 6], None, la=4.0, ha=24.0, crf=None)
    assert out.tolist() == [[3, 3, 7, 0, 255]]
    # background of the high-alpha map wins over a low-alpha foreground
    la = np.array([[3, 0, 5]])
    ha = np.array([[0, 0, 5]])
    assert confident_region_label(la, ha).tolist() == [[0, 0, 5]]


def test_confident_regions_use_the_crf_posterior():
    cams = np.array([[[0.9, 0.1]]], np.float32)
    seen = []

    def fake_crf(c, img, bg_power):
        seen.append(bg_power)
        # posterior that says background everywhere for la, class everywhere for ha
        return np.array([[[1.0, 1.0]], [[0.0, 0.0]]]) if bg_power == 4.0 else \
            np.array([[[0.0, 0.0]], [[1.0, 1.0]]])

    out = crf_region_labels(cams, [0], np.zeros((1, 2, 3), np.uint8), crf=fake_crf)
    assert seen == [4.0, 24.0]
    assert out.tolist() == [[255, 255]]  # never confident fg (la) nor confident bg (ha)


def test_affinity_labels_by_hand():
    label = torch.tensor([[0, 0, 1],
                          [255, 1, 1]])
    out = affinity_labels(label, [(0, 1), (1, 0), (1, -1)])
    f, t = False, True
    # offset (0,1): (0,0)-(0,1) bg; (0,1)-(0,2) neg; (1,1)-(1,2) fg; (1,0) ignored
    # offset (1,0): (0,1)-(1,1) neg; (0,2)-(1,2) fg; (0,0)-(1,0) ignored
    # offset (1,-1): (0,2)-(1,1) fg; (0,1)-(1,0) ignored
    assert out['bg_pos'].tolist() == [[[t, f, f], [f, f, f]], [[f, f, f], [f, f, f]],
                                      [[f, f, f], [f, f, f]]]
    assert out['fg_pos'].tolist() == [[[f, f, f], [f, t, f]], [[f, f, t], [f, f, f]],
                                      [[f, f, t], [f, f, f]]]
    assert out['neg'].tolist() == [[[f, t, f], [f, f, f]], [[f, t, f], [f, f, f]],
                                   [[f, f, f], [f, f, f]]]


def test_pair_affinity_and_loss_by_hand():
    emb = torch.tensor([[[0.0, 1.0]], [[0.0, 3.0]]])  # (D=2, 1, 2)
    aff = pair_affinity(emb, [(0, 1)])
    # mean |(0,0) - (1,3)| = 2 -> exp(-2); the second pixel's partner is outside -> 0
    assert torch.allclose(aff, torch.tensor([[[math.exp(-2.0), 0.0]]]))

    a = torch.tensor([[[0.5, 0.25, 0.8]]])
    masks = dict(bg_pos=torch.tensor([[[True, False, False]]]),
                 fg_pos=torch.tensor([[[False, True, False]]]),
                 neg=torch.tensor([[[False, False, True]]]))
    loss = affinity_loss(a, masks)
    eps = 1e-5
    assert loss['loss_aff_bg'].item() == pytest.approx(0.25 * -math.log(0.5 + eps) / (1 + eps))
    assert loss['loss_aff_fg'].item() == pytest.approx(0.25 * -math.log(0.25 + eps) / (1 + eps))
    assert loss['loss_aff_neg'].item() == pytest.approx(0.5 * -math.log(1 + eps - 0.8) / (1 + eps))


def test_transition_matrix_two_pixels_by_hand():
    pair = torch.tensor([[[0.5, 0.0]]])  # 1 x 2 grid, offset (0, 1)
    t1 = transition_matrix(affinity_matrix(pair, [(0, 1)]), beta=1.0).to_dense()
    assert torch.allclose(t1, torch.tensor([[2 / 3, 1 / 3], [1 / 3, 2 / 3]]))
    t2 = transition_matrix(affinity_matrix(pair, [(0, 1)]), beta=2.0).to_dense()
    assert torch.allclose(t2, torch.tensor([[0.8, 0.2], [0.2, 0.8]]))


def _dense_affinity_numpy(pair: np.ndarray, offsets, h: int, w: int) -> np.ndarray:
    a = np.eye(h * w)
    for i, (dy, dx) in enumerate(offsets):
        for y in range(h):
            for x in range(w):
                y2, x2 = y + dy, x + dx
                if 0 <= y2 < h and 0 <= x2 < w:
                    a[y * w + x, y2 * w + x2] = a[y2 * w + x2, y * w + x] = pair[i, y, x]
    return a


def test_random_walk_equals_dense_matrix_power_on_4x4():
    rng = np.random.default_rng(0)
    offsets = radius_offsets(2)  # (0,1), (1,-1), (1,0), (1,1)
    pair = rng.uniform(0.1, 1.0, size=(len(offsets), 4, 4))
    beta, steps = 3.0, 5
    a = _dense_affinity_numpy(pair, offsets, 4, 4)
    t_np = a ** beta / (a ** beta).sum(1, keepdims=True)
    t = transition_matrix(affinity_matrix(torch.tensor(pair, dtype=torch.float32), offsets),
                          beta=beta)
    assert t.is_sparse
    dense = t.to_dense().numpy()
    np.testing.assert_allclose(dense.sum(1), np.ones(16), atol=1e-6)
    np.testing.assert_allclose(dense, t_np, atol=1e-6)
    v = rng.uniform(size=(2, 4, 4))
    expected = (np.linalg.matrix_power(t_np, steps) @ v.reshape(2, 16).T).T.reshape(2, 4, 4)
    got = random_walk(torch.tensor(v, dtype=torch.float32), t, steps=steps).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_refine_ratio_by_hand_and_argmax_equivalence():
    t = torch.eye(2)
    cams = torch.tensor([[[0.5, 0.1]]])
    out = refine_with_random_walk(cams, t, steps=0, bg_threshold=0.25)
    # r_bg = 0.25 -> m = 0.5 / (0.25 + 0.5), 0.1 / (0.25 + 0.1)
    assert torch.allclose(out, torch.tensor([[[0.5 / 0.75, 0.1 / 0.35]]]))
    # PSA background: (1 - max)^2 = [0.25, 0.81]
    out = refine_with_random_walk(cams, t, steps=0, bg_threshold=None, bg_power=2.0)
    assert torch.allclose(out, torch.tensor([[[0.5 / 0.75, 0.1 / 0.91]]]))
    with pytest.raises(ValueError, match='exactly one'):
        refine_with_random_walk(cams, t, steps=0, bg_threshold=0.25, bg_power=2.0)


def test_random_walk_spreads_within_a_region_not_across():
    from wsss_mmseg.models.random_walk import RandomWalk
    # 6 x 6 grid: left half embedding 0, right half embedding 5; the CAM covers only the left
    # half's first column. After the walk the whole left half is class, the right half is not.
    emb = torch.zeros(4, 6, 6)
    emb[:, :, 3:] = 5.0
    cams = torch.zeros(1, 6, 6)
    cams[0, :, 0] = 1.0
    rw = RandomWalk(beta=10, steps=64, radius=3, bg_threshold=0.25)
    out = rw(cams, embedding=emb)
    assert (out[0, :, :3] > 0.5).all() and (out[0, :, 3:] < 0.5).all()
    # same as the dense path with an affinity built independently in numpy
    f = emb.numpy().reshape(4, 36).T
    dist = np.abs(f[:, None, :] - f[None, :, :]).mean(-1)
    yy, xx = np.divmod(np.arange(36), 6)
    near = (yy[:, None] - yy[None]) ** 2 + (xx[:, None] - xx[None]) ** 2 < 9
    dense = torch.tensor(np.exp(-dist) * near, dtype=torch.float32)
    np.testing.assert_allclose(rw(cams, affinity=dense).numpy(), out.numpy(), atol=1e-5)
