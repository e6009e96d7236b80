"""AE-PSL online labels and Mixup-CAM regularisers (classic_wsss.md, AE-PSL row "PSL online seg";
Mixup row "Mixup-CAM adds entropy + concentration regularisers"). Values by hand."""
from __future__ import annotations

import math

import pytest
import torch

from wsss_mmseg.classic.mixup import cam_concentration_loss, cam_entropy_loss
from wsss_mmseg.classic.psl import merge_offline_online, psl_online_labels


def test_psl_online_labels_by_hand():
    # 2 pixels, bg + 2 classes; class 0 present (score .9), class 1 absent (score .95)
    probs = torch.tensor([[[[0.5, 0.2]], [[0.3, 0.5]], [[0.2, 0.3]]]])
    scores = torch.tensor([[0.9, 0.95]])
    labels = torch.tensor([[1.0, 0.0]])
    # px0: bg .5 vs .9*.3=.27 -> bg; px1: bg .2 vs .9*.5=.45 -> class 0 (value 1);
    # class 1 is prohibited although .95*.3 = .285 > .2
    assert psl_online_labels(probs, scores, labels).tolist() == [[[0, 1]]]
    # a low classification confidence hands the pixel to the background
    assert psl_online_labels(probs, torch.tensor([[0.3, 0.95]]), labels).tolist() == [[[0, 0]]]
    merged = merge_offline_online(torch.tensor([[[255, 7]]]), torch.tensor([[[1, 1]]]))
    assert merged.tolist() == [[[1, 7]]]


def test_entropy_regulariser_by_hand():
    cams = torch.tensor([[[[1.0, 3.0]], [[1.0, 0.0]], [[9.0, 9.0]]]])  # (1, 3, 1, 2)
    targets = torch.tensor([[1.0, 0.5, 0.0]])  # class 2 absent (mixed label of class 1)
    # px0: softmax(1, 1) -> ln 2; px1: softmax(3, 0)
    p = 1 / (1 + math.exp(-3))
    h1 = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert cam_entropy_loss(cams, targets).item() == pytest.approx((math.log(2) + h1) / 2, rel=1e-5)
    # finite gradients although absent classes are masked
    g = cams.clone().requires_grad_(True)
    cam_entropy_loss(g, targets).backward()
    assert torch.isfinite(g.grad).all() and g.grad[0, 2].abs().sum() == 0
    # a single present class: nothing to disambiguate
    assert cam_entropy_loss(cams, torch.tensor([[1.0, 0, 0]])).item() == pytest.approx(0.0)


def test_concentration_regulariser_by_hand():
    cams = torch.zeros(1, 2, 2, 4)
    cams[0, 0, 0, 0] = 1.0   # mass 1/2 at (y=0, x=0) and 1/2 at (0, 3): coordinates / 4
    cams[0, 0, 0, 3] = 1.0
    cams[0, 1, 1, 1] = -2.0  # negative everywhere but one point -> ReLU: a point mass
    cams[0, 1, 0, 2] = 5.0
    # class 0: centroid x = 1.5/4, variance = (1.5/4)^2 ; class 1: 0
    got = cam_concentration_loss(cams, torch.tensor([[1.0, 1.0]]))
    assert got.item() == pytest.approx(((1.5 / 4) ** 2 + 0.0) / 2, rel=1e-4)
    only0 = cam_concentration_loss(cams, torch.tensor([[1.0, 0.0]]))
    assert only0.item() == pytest.approx((1.5 / 4) ** 2, rel=1e-4)
