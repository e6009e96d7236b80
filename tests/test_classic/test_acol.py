"""ACoL (classic_wsss.md, ACoL row): erase A's regions above delta before classifier B, fused
map = max(A, B). Values by hand or re-derived in numpy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss_mmseg.classic.acol import acol_erase_mask, acol_fuse, erase_features, minmax_normalize


def test_erase_mask_by_hand():
    cams = torch.tensor([[[[1.0, 3.0], [5.0, 9.0]],      # class 0: minmax [0, .25, .5, 1]
                          [[9.0, 1.0], [1.0, 1.0]],      # class 1: minmax [1, 0, 0, 0]
                          [[0.0, 8.0], [0.0, 0.0]]]])    # class 2: not labelled
    targets = torch.tensor([[1.0, 1.0, 0.0]])
    mask = acol_erase_mask(cams, targets, delta=0.6)
    assert mask.tolist() == [[[[True, False], [False, True]]]]
    mask = acol_erase_mask(cams, targets, delta=0.4)
    assert mask.tolist() == [[[[True, False], [True, True]]]]
    # only class 0 labelled: class 1's peak is not erased
    assert acol_erase_mask(cams, torch.tensor([[1.0, 0, 0]]), delta=0.6).tolist() == \
        [[[[False, False], [False, True]]]]
    with pytest.raises(ValueError, match='delta'):
        acol_erase_mask(cams, targets, delta=1.0)


def test_minmax_erase_and_fuse_by_hand():
    m = torch.tensor([[[-2.0, 0.0], [2.0, 6.0]]])
    assert torch.allclose(minmax_normalize(m, eps=0), torch.tensor([[[0.0, 0.25], [0.5, 1.0]]]))
    x = torch.ones(1, 2, 2, 2)
    erased = erase_features(x, torch.tensor([[[[True, False], [False, False]]]]))
    assert erased[0, :, 0, 0].tolist() == [0.0, 0.0] and erased[0, :, 1, 1].tolist() == [1.0, 1.0]
    a = torch.tensor([[[[4.0, 2.0], [-1.0, 0.0]]]])   # N: [1, .5, 0, 0]
    b = torch.tensor([[[[0.0, 1.0], [2.0, -3.0]]]])   # N: [0, .5, 1, 0]
    assert torch.allclose(acol_fuse(a, b), torch.tensor([[[[1.0, 0.5], [1.0, 0.0]]]]), atol=1e-4)


def test_head_maps_and_loss_match_numpy():
    from wsss_mmseg.models.classic_acol import ACoLHead
    torch.manual_seed(0)
    head = ACoLHead(in_channels=3, num_classes=2, delta=0.6, num_convs=0)
    x = torch.randn(1, 3, 3, 3)
    wa = head.branch_a[-1].weight[:, :, 0, 0].detach().numpy()
    ba = head.branch_a[-1].bias.detach().numpy()
    wb = head.branch_b[-1].weight[:, :, 0, 0].detach().numpy()
    bb = head.branch_b[-1].bias.detach().numpy()
    f = x[0].numpy().reshape(3, 9)
    a = wa @ f                                   # (2, 9), bias excluded
    lo, hi = a.min(1, keepdims=True), a.max(1, keepdims=True)
    norm = (a - lo) / (hi - lo + 1e-5)
    keep = ~(norm[1] > 0.6)                      # labels = [1]: erase class 1's region only
    b = wb @ (f * keep)
    relu_max = lambda m: np.maximum(m, 0) / (np.maximum(m, 0).max(1, keepdims=True) + 1e-5)  # noqa
    expected = np.maximum(relu_max(a), relu_max(b)).reshape(2, 3, 3)
    got = head.class_maps([x], classes=[1])[0].detach().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)

    # training loss: mean of A's BCE and B's BCE on the erased features (labels = [1])
    target = torch.tensor([[0.0, 1.0]])
    la = (a + ba[:, None]).mean(1)
    lb = (b + bb[:, None]).mean(1)

    def bce(z, y):
        return float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))
    expected_loss = 0.5 * (bce(la, target[0].numpy()) + bce(lb, target[0].numpy()))
    assert head.loss([x], target)['loss_cls'].item() == pytest.approx(expected_loss, rel=1e-5)
    assert torch.allclose(head.logits([x]), torch.tensor(la[None], dtype=torch.float32),
                          atol=1e-5)
