"""SEC losses and cues (classic_wsss.md, SEC row: seed loss on CAM cues, expand = GWRP with
q_fg 0.996 / q_bg 0.999, constrain = KL to the dense-CRF refinement). Values by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wsss_mmseg.classic.sec import (constrain_loss, expand_loss, gwrp, gwrp_weights, sec_cues,
                                    seed_loss)


def test_gwrp_weights_and_value_by_hand():
    assert gwrp_weights(4, 0.5).tolist() == [1.0, 0.5, 0.25, 0.125]
    assert gwrp_weights(3, 0.0).tolist() == [1.0, 0.0, 0.0]  # 0^0 = 1: max pooling
    s = torch.tensor([[0.9, 0.1], [0.5, 0.3]])
    # sorted 0.9, 0.5, 0.3, 0.1 ; q = 0.5: (0.9 + 0.25 + 0.075 + 0.0125) / 1.875
    assert gwrp(s, 0.5).item() == pytest.approx(1.2375 / 1.875)
    assert gwrp(s, 0.0).item() == pytest.approx(0.9)
    assert gwrp(s, 1.0).item() == pytest.approx(0.45)
    q = 0.996  # SEC's q_fg on 3 pixels
    assert gwrp(torch.tensor([[1.0, 0.0, 0.5]]), q).item() == pytest.approx(
        (1.0 + q * 0.5) / (1 + q + q * q))


def test_expand_loss_by_hand():
    # 1 image, 2 pixels, background + 2 classes; class 0 present, class 1 absent
    probs = torch.tensor([[[[0.6, 0.2]], [[0.3, 0.7]], [[0.1, 0.1]]]])
    labels = torch.tensor([[1.0, 0.0]])
    q_fg, q_bg = 0.5, 0.25
    g_fg = (0.7 + q_fg * 0.3) / (1 + q_fg)
    g_abs = 0.1  # max pooling
    g_bg = (0.6 + q_bg * 0.2) / (1 + q_bg)
    expected = -math.log(g_fg) - math.log(1 - g_abs) - math.log(g_bg)
    got = expand_loss(probs, labels, q_fg=q_fg, q_bg=q_bg)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_constrain_loss_is_kl_by_hand():
    f = torch.tensor([[[[0.8]], [[0.2]]]])
    q = torch.tensor([[[[0.6]], [[0.4]]]])
    expected = 0.6 * math.log(0.6 / 0.8) + 0.4 * math.log(0.4 / 0.2)
    assert constrain_loss(f, q).item() == pytest.approx(expected, rel=1e-6)
    # Q with a zero entry contributes 0 log 0 = 0
    q0 = torch.tensor([[[[1.0]], [[0.0]]]])
    assert constrain_loss(f, q0).item() == pytest.approx(-math.log(0.8), rel=1e-6)
    # no gradient into the CRF target
    fg = f.clone().requires_grad_(True)
    qg = q.clone().requires_grad_(True)
    constrain_loss(fg, qg).backward()
    assert qg.grad is None and fg.grad is not None


def test_seed_loss_by_hand():
    probs = torch.tensor([[[[0.5, 0.25, 0.1]], [[0.5, 0.75, 0.9]]]])  # (1, 2, 1, 3)
    cues = torch.tensor([[[0, 1, 255]]])
    expected = -(math.log(0.5) + math.log(0.75)) / 2
    assert seed_loss(probs.log(), cues).item() == pytest.approx(expected, rel=1e-6)
    # an image without cue is left out of the batch mean
    probs2 = torch.cat([probs, probs])
    cues2 = torch.tensor([[[0, 1, 255]], [[255, 255, 255]]])
    assert seed_loss(probs2.log(), cues2).item() == pytest.approx(expected, rel=1e-6)


def test_cues_by_hand():
    cams = np.array([[[1.0, 0.5, 0.15, 0.0],
                      [0.3, 0.0, 0.0, 0.05]],
                     [[0.0, 0.25, 0.4, 0.0],
                      [0.0, 0.0, 0.2, 0.0]]], np.float32)
    # class 3 (value 4): >= 0.2 -> (0,0),(0,1),(1,0)
    # class 7 (value 8): >= 0.08 -> (0,1),(0,2),(1,2)
    # (0,1) in both: the smaller area wins (both 3: stable order keeps the later = class 7)
    # background (max < 0.1): (0,3), (1,1), (1,3)
    out = sec_cues(cams, [3, 7], fg_ratio=0.2, bg_cam=0.1)
    assert out.tolist() == [[4, 8, 8, 0], [4, 0, 8, 0]]
    # saliency background instead of low CAM
    sal = np.array([[1, 1, 1, 1], [1, 0.05, 1, 1]], np.float32)
    out = sec_cues(cams, [3, 7], saliency=sal, bg_saliency=0.1)
    assert out.tolist() == [[4, 8, 8, 255], [4, 0, 8, 255]]
    # top 25 % of the pixels (2 of 8) of each map
    out = sec_cues(cams, [3, 7], fg_ratio=0.25, fg_rule='top_fraction', bg_cam=0.01)
    assert out.tolist() == [[4, 8, 8, 0], [255, 0, 255, 255]]  # (1,3): 0.05 >= bg_cam 0.01
