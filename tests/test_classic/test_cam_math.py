"""CAM / Grad-CAM / MDC / aggregation math, and the heads that use it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsss_mmseg.classic.cam import (aggregate_maps, class_activation_maps, feature_affinity,
                                    grad_cam, mdc_fuse, multi_scale_flip_maps, normalize_maps)


def test_cam_is_the_classifier_applied_per_position():
    from wsss_mmseg.models.classic import MultiLabelClsHead
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 3, 4, 5, generator=g)
    head = MultiLabelClsHead(in_channels=3, num_classes=2)
    with torch.no_grad():
        head.fc.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]]))
        head.fc.bias.copy_(torch.tensor([0.25, -1.0]))
    cams = head.class_maps([feats])
    # hand computation: CAM_k(y, x) = sum_c w_kc F_c(y, x)
    w = head.fc.weight.detach()
    manual = torch.zeros(2, 2, 4, 5)
    for b in range(2):
        for k in range(2):
            for c in range(3):
                manual[b, k] += w[k, c] * feats[b, c]
    torch.testing.assert_close(cams, manual)
    # GAP(CAM) + bias = the logits of the GAP + linear head
    torch.testing.assert_close(cams.mean(dim=(2, 3)) + head.fc.bias, head.logits([feats]))
    # the pure function takes a conv weight too, and the bias
    torch.testing.assert_close(class_activation_maps(feats, w[:, :, None, None]), manual)
    torch.testing.assert_close(class_activation_maps(feats, w, bias=head.fc.bias),
                               manual + head.fc.bias.view(1, 2, 1, 1))


def test_gradcam_of_gap_linear_head_is_cam_up_to_scale():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(1, 6, 5, 7, generator=g, requires_grad=True)
    weight = torch.randn(3, 6, generator=g)
    logits = feats.mean(dim=(2, 3)) @ weight.t()
    for k in range(3):
        grad, = torch.autograd.grad(logits[0, k], feats, retain_graph=True)
        gc = grad_cam(feats.detach(), grad)
        cam = class_activation_maps(feats.detach(), weight)[:, k]
        torch.testing.assert_close(gc, cam.clamp_min(0) / (5 * 7), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(normalize_maps(gc), normalize_maps(cam), rtol=1e-4, atol=1e-6)


def test_classifier_gradcam_on_last_stage_equals_cam():
    from mmseg.registry import MODELS

    import wsss_mmseg.models.classic  # noqa: F401
    from tests.test_classic.tiny import tiny_classifier
    from wsss_mmseg.models.classic import classifier_cams
    torch.manual_seed(0)
    model = MODELS.build(tiny_classifier(num_classes=4)).eval()
    with torch.no_grad():  # a head with O(1) weights: maps with positive and negative parts
        model.cls_head.fc.weight.normal_(0, 100)
    x = torch.randn(3, 96, 112)
    # one scale (Grad-CAM carries a 1/(h w) factor, which differs between scales)
    cam = classifier_cams(model, x, [0, 2], method='cam', flip=True)
    gc = classifier_cams(model, x, [0, 2], method='gradcam', target_layer='backbone.layer4',
                         flip=True)
    assert cam.shape == (2, 96, 112) and 0 <= cam.min() and cam.max() <= 1
    assert (cam.flatten(1).amax(1) > 0.99).all()
    torch.testing.assert_close(gc, cam, rtol=1e-4, atol=1e-5)
    # a different target layer gives a different (valid) map
    mid = classifier_cams(model, x, [0, 2], method='gradcam', target_layer='backbone.layer3')
    assert mid.shape == (2, 96, 112) and not torch.allclose(mid, cam)
    with pytest.raises(KeyError, match='backbone.nope'):
        classifier_cams(model, x, [0], method='gradcam', target_layer='backbone.nope')
    with pytest.raises(ValueError, match='target_layer'):
        classifier_cams(model, x, [0], method='gradcam')
    with pytest.raises(ValueError, match="'cam' or 'gradcam'"):
        classifier_cams(model, x, [0], method='scorecam')


def test_mdc_fuse_and_head():
    from wsss_mmseg.models.classic import MDCHead
    h0, h3, h6, h9 = (torch.full((1, 1, 2, 2), v) for v in (1.0, 2.0, 4.0, 9.0))
    torch.testing.assert_close(mdc_fuse([h0, h3, h6, h9]), torch.full((1, 1, 2, 2), 1.0 + 5.0))
    with pytest.raises(ValueError):
        mdc_fuse([])
    torch.manual_seed(0)
    head = MDCHead(in_channels=4, num_classes=3, dilations=(1, 3, 6, 9))
    feats = [torch.randn(2, 4, 12, 12)]
    maps = [conv(feats[0]) - conv.bias.view(1, -1, 1, 1) for conv in head.branches]
    torch.testing.assert_close(head.class_maps(feats),
                               maps[0] + (maps[1] + maps[2] + maps[3]) / 3)
    logits = head.forward(feats)
    assert len(logits) == 4 and logits[0].shape == (2, 3)
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    expected = sum(F.binary_cross_entropy_with_logits(lg, targets) for lg in logits) / 4
    torch.testing.assert_close(head.loss(feats, targets)['loss_cls'], expected)
    with pytest.raises(ValueError, match='dilations'):
        MDCHead(in_channels=4, num_classes=3, dilations=(0,))


def test_multi_scale_flip_aggregation():
    img = torch.arange(2 * 8 * 10, dtype=torch.float32).reshape(2, 8, 10)[:1].repeat(3, 1, 1)
    calls = []

    def map_fn(batch):  # identity "network": one map = first channel, (B, 1, h, w)
        calls.append(tuple(batch.shape))
        return batch[:, :1] - 30.0

    out = multi_scale_flip_maps(map_fn, img, scales=(1.0, 0.5), flip=True)
    assert calls == [(2, 3, 8, 10), (2, 3, 4, 5)]
    base = (img[:1] - 30).clamp_min(0)
    small = F.interpolate(img[None, :1], size=(4, 5), mode='bilinear', align_corners=False)[0]
    small_back = F.interpolate((small - 30).clamp_min(0)[None], size=(8, 10), mode='bilinear',
                               align_corners=False)[0]
    # each flipped copy is flipped back, so every scale counts twice
    torch.testing.assert_close(out, 2 * base + 2 * small_back, rtol=1e-5, atol=1e-4)
    # without flip: one map per scale; the flipped image alone gives the unflipped map
    torch.testing.assert_close(multi_scale_flip_maps(map_fn, img), base)
    torch.testing.assert_close(aggregate_maps([base.flip(-1)], out_hw=(8, 10), flipped=[True]),
                               base)
    n = normalize_maps(out)
    assert float(n.max()) == pytest.approx(1.0, abs=1e-4) and float(n.min()) >= 0
    with pytest.raises(ValueError, match='positive'):
        multi_scale_flip_maps(map_fn, img, scales=(0.0,))


def test_feature_affinity_rows_sum_to_one():
    feat = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(0))
    a = feature_affinity(feat, temperature=0.2)
    assert a.shape == (12, 12)
    torch.testing.assert_close(a.sum(-1), torch.ones(12))
    assert int(a.argmax(-1).eq(torch.arange(12)).sum()) == 12  # self-similarity is maximal
    with pytest.raises(ValueError, match='temperature'):
        feature_affinity(feat, temperature=0)


def test_deterministic_bytes():
    feat = torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(3))
    w = torch.randn(2, 4, generator=torch.Generator().manual_seed(4))
    a = normalize_maps(class_activation_maps(feat, w)).numpy().tobytes()
    b = normalize_maps(class_activation_maps(feat, w)).numpy().tobytes()
    assert a == b and np.frombuffer(a, np.float32).size == 72
