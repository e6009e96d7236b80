"""PACL losses and alignment metrics against hand computations."""
import math

import pytest
import torch

from wsss_mmseg.pacl.alignment import (coherence_auc, patch_labels_from_mask, patch_zero_shot_accuracy,
                                       roc_auc)
from wsss_mmseg.pacl.losses import (clamped_scale, dense_prior_loss, multilabel_sigmoid_loss,
                                    negative_suppression_loss, symmetric_info_nce)


def test_info_nce_matches_hand_computation_3x3():
    phi = torch.tensor([[0.9, 0.1, -0.2],
                        [0.3, 0.5, 0.0],
                        [-0.4, 0.2, 0.7]])
    scale = 2.0
    rows = []
    for i in range(3):  # image i -> texts
        z = sum(math.exp(scale * float(phi[i, j])) for j in range(3))
        rows.append(-math.log(math.exp(scale * float(phi[i, i])) / z))
    cols = []
    for j in range(3):  # text j -> images
        z = sum(math.exp(scale * float(phi[i, j])) for i in range(3))
        cols.append(-math.log(math.exp(scale * float(phi[j, j])) / z))
    expected = 0.5 * (sum(rows) / 3 + sum(cols) / 3)
    got = symmetric_info_nce(phi, logit_scale=torch.tensor(scale))
    assert abs(float(got) - expected) < 1e-6


def test_info_nce_learnable_scale_gets_gradient_and_clamp():
    log_scale = torch.tensor(math.log(10.0), requires_grad=True)
    phi = torch.tensor([[0.5, 0.1], [0.2, 0.4]])
    symmetric_info_nce(phi, logit_scale=clamped_scale(log_scale)).backward()
    assert log_scale.grad is not None and log_scale.grad != 0
    assert float(clamped_scale(torch.tensor(math.log(500.0)))) == pytest.approx(100.0)
    with pytest.raises(ValueError, match='square'):
        symmetric_info_nce(torch.zeros(2, 3), logit_scale=1.0)


def _bce(logit: float, y: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_multilabel_sigmoid_loss_hand_computation_with_background():
    phi = torch.tensor([[0.8, -0.1, 0.3], [0.2, 0.4, -0.5]])
    y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # second image: empty label set = all negative
    bg = torch.tensor([[0.6], [0.1]])
    s, b = 10.0, -3.0
    per_image = []
    for i in range(2):
        total = sum(_bce(float(phi[i, c]) * s + b, float(y[i, c])) for c in range(3))
        total += 0.5 * _bce(float(bg[i, 0]) * s + b, 0.0)
        per_image.append(total)
    got = multilabel_sigmoid_loss(phi, y, scale=s, bias=b, phi_background=bg, background_weight=0.5)
    assert abs(float(got) - sum(per_image) / 2) < 1e-5
    no_bg = multilabel_sigmoid_loss(phi, y, scale=s, bias=b)
    assert float(no_bg) < float(got)
    with pytest.raises(ValueError, match='must both be'):
        multilabel_sigmoid_loss(phi, y[:, :2], scale=s, bias=b)
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        multilabel_sigmoid_loss(phi, y * 2, scale=s, bias=b)


def test_dense_prior_restricts_to_allowed_classes():
    logits = torch.zeros(1, 3, 1, 2)
    logits[0, 2, 0, 0] = 5.0   # a disallowed class with a high score must not take probability mass
    target = torch.tensor([[[1, 2]]])   # pixel 2 is labelled with a disallowed class -> ignored
    allowed = torch.tensor([[True, True, False]])
    got = dense_prior_loss(logits, target, allowed=allowed)
    assert abs(float(got) - math.log(2)) < 1e-6   # pixel 1: softmax over {0, 1} of equal scores
    unrestricted = dense_prior_loss(logits, target)
    assert float(unrestricted) > float(got)
    allowed_none = torch.tensor([[True, False, False]])
    zero = dense_prior_loss(logits, target, allowed=allowed_none)
    assert float(zero) == 0.0
    with pytest.raises(ValueError, match='target labels'):
        dense_prior_loss(logits, torch.tensor([[[7, 0]]]))


def test_negative_suppression():
    sim = torch.tensor([[[0.1, 0.9, 0.3], [0.2, 0.4, 0.8]]])   # (1, 2 classes, 3 patches)
    y = torch.tensor([[1.0, 0.0]])
    assert float(negative_suppression_loss(sim, y, top_k=1)) == pytest.approx(0.8)
    assert float(negative_suppression_loss(sim, y, top_k=2)) == pytest.approx(0.6)
    assert float(negative_suppression_loss(sim, torch.ones(1, 2))) == 0.0


def test_roc_auc_and_coherence():
    assert roc_auc(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 2.0])) == pytest.approx(4.5 / 6)
    assert roc_auc(torch.tensor([2.0]), torch.tensor([1.0])) == 1.0
    with pytest.raises(ValueError, match='positives and negatives'):
        roc_auc(torch.tensor([]), torch.tensor([1.0]))
    emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [5.0, 5.0]])
    lab = torch.tensor([0, 0, 1, 1, -1])
    assert coherence_auc(emb, lab) == 1.0
    assert coherence_auc(emb, torch.tensor([0, 1, 0, 1, -1])) < 0.5


def test_patch_labels_and_zero_shot_accuracy():
    mask = torch.zeros(4, 4, dtype=torch.long)
    mask[:2, :2] = 3
    mask[0, 0] = 255
    mask[2:, 2:] = 255                 # all ignored
    mask[:2, 2] = 1                    # 50 % class 1, 50 % class 0 -> majority tie at 0.5 purity
    labels = patch_labels_from_mask(mask, (2, 2), min_purity=0.6)
    assert labels.tolist() == [3, -1, 0, -1]
    with pytest.raises(ValueError, match='grid'):
        patch_labels_from_mask(mask, (3, 3))
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert patch_zero_shot_accuracy(emb, torch.tensor([0, 1, 1]), texts) == (2, 3)
    assert patch_zero_shot_accuracy(emb, torch.tensor([-1, -1, -1]), texts) == (0, 0)
    with pytest.raises(ValueError, match='dims differ'):
        patch_zero_shot_accuracy(emb, torch.tensor([0, 1, 1]), torch.ones(2, 3))
