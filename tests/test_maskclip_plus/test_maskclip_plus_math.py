"""MaskCLIP+ pure functions, the MarkUnlabeled transform and the phase hook (no CLIP needed)."""
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import wsss_mmseg  # noqa: F401
from wsss_mmseg.datasets.maskclip_plus_transforms import MarkUnlabeled, mark_unlabeled
from wsss_mmseg.hooks.maskclip_plus_phase import MaskCLIPPlusPhaseHook, resolve_switch_iter
from wsss_mmseg.models.maskclip_plus import (ASPPV2Head, assign_pseudo_labels, phase_at, renormalize,
                                             text_classifier_logits)


def test_assign_only_unlabeled_pixels_and_only_pseudo_classes():
    g = torch.Generator().manual_seed(0)
    gt = torch.randint(0, 5, (2, 1, 6, 7), generator=g)
    gt[:, :, :2] = 254
    gt[:, :, -1] = 255
    scores = torch.randn(2, 5, 6, 7, generator=g)
    scores[:, 0] += 100.0  # class 0 would win everywhere, but it is not a pseudo class
    out = assign_pseudo_labels(gt, scores, pseudo_classes=[3, 4])
    assert out.shape == gt.shape and out.dtype == torch.int64
    marked = gt == 254
    torch.testing.assert_close(out[~marked], gt[~marked])  # GT and 255 untouched
    expected = torch.where(scores[:, 3] >= scores[:, 4], 3, 4)[:, None]
    torch.testing.assert_close(out[marked], expected[marked])
    assert not (out == 254).any()


def test_assign_conf_threshold_and_writable_mask():
    gt = torch.full((1, 2, 2), 254)
    scores = torch.tensor([[[[0.9, 0.1], [0.2, 0.3]], [[0.1, 0.2], [0.25, 0.35]]]])
    out = assign_pseudo_labels(gt, scores, pseudo_classes=[0, 1], conf_thresh=0.3)
    assert out.tolist() == [[[0, 255], [255, 1]]]
    gt2 = torch.tensor([[[7, 255], [254, 3]]])
    writable = torch.tensor([[[True, True], [False, False]]])
    out2 = assign_pseudo_labels(gt2, scores, pseudo_classes=[0, 1], writable=writable)
    assert out2.tolist() == [[[0, 1], [255, 3]]]  # written everywhere allowed, leftover 254 -> 255


@pytest.mark.parametrize('kwargs,match', [(dict(pseudo_classes=[]), 'empty'),
                                          (dict(pseudo_classes=[0, 0]), 'distinct'),
                                          (dict(pseudo_classes=[5]), 'distinct')])
def test_assign_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        assign_pseudo_labels(torch.zeros(1, 2, 2), torch.zeros(1, 3, 2, 2), **kwargs)
    with pytest.raises(ValueError, match='same batch and size'):
        assign_pseudo_labels(torch.zeros(1, 2, 2), torch.zeros(1, 3, 2, 3), pseudo_classes=[0])


def test_renormalize_matches_direct_normalisation():
    raw_bgr = torch.rand(2, 3, 5, 4) * 255
    raw_rgb = raw_bgr.flip(1)
    m1, s1 = torch.tensor([123.675, 116.28, 103.53]), torch.tensor([58.395, 57.12, 57.375])
    m2, s2 = torch.tensor([122.771, 116.746, 104.094]), torch.tensor([68.501, 66.632, 70.323])
    student = (raw_rgb - m1.view(1, 3, 1, 1)) / s1.view(1, 3, 1, 1)
    direct = (raw_rgb - m2.view(1, 3, 1, 1)) / s2.view(1, 3, 1, 1)
    torch.testing.assert_close(renormalize(student, src_mean=m1, src_std=s1, dst_mean=m2, dst_std=s2), direct)
    torch.testing.assert_close(renormalize(raw_rgb, src_mean=None, src_std=None, dst_mean=m2, dst_std=s2), direct)
    bgr_student = (raw_bgr - m1.flip(0).view(1, 3, 1, 1)) / s1.flip(0).view(1, 3, 1, 1)
    torch.testing.assert_close(renormalize(bgr_student, src_mean=m1.flip(0), src_std=s1.flip(0), dst_mean=m2,
                                           dst_std=s2, swap_channels=True), direct)
    with pytest.raises(ValueError, match='B, 3, H, W'):
        renormalize(torch.zeros(3, 4, 4), src_mean=None, src_std=None, dst_mean=m2, dst_std=s2)


def test_text_classifier_logits_with_background():
    feat = torch.randn(2, 4, 3, 3)
    text = torch.nn.functional.normalize(torch.randn(5, 4), dim=-1)
    bg = torch.randn(1, 4) * 3
    out = text_classifier_logits(feat, text, background=bg)
    assert out.shape == (2, 6, 3, 3)
    torch.testing.assert_close(out[:, 1:], torch.nn.functional.conv2d(feat, text[:, :, None, None]))
    torch.testing.assert_close(out[:, :1], torch.nn.functional.conv2d(
        feat, torch.nn.functional.normalize(bg, dim=-1)[:, :, None, None]))
    with pytest.raises(ValueError, match='text classifier'):
        text_classifier_logits(feat, torch.randn(5, 3))


def test_asppv2_head_is_a_sum_of_dilated_branches():
    head = ASPPV2Head(in_channels=6, channels=4, num_classes=3, dilations=(1, 2), dropout_ratio=0.0,
                      norm_cfg=None, act_cfg=None)
    head.eval()
    x = torch.randn(1, 6, 9, 9)
    with torch.no_grad():
        b = [torch.nn.functional.conv2d(x, br.conv.weight, br.conv.bias, padding=d, dilation=d)
             for br, d in zip(head.branches, (1, 2))]
        expected = head.conv_seg(b[0] + b[1])
        torch.testing.assert_close(head([x]), expected)
    assert [br.conv.dilation for br in head.branches] == [(1, 1), (2, 2)]


def test_mark_unlabeled():
    seg = np.array([[0, 15, 255], [19, 3, 16]], np.uint8)
    out = MarkUnlabeled(classes=[15, 16, 17, 18, 19])(dict(gt_seg_map=seg))['gt_seg_map']
    assert out.dtype == np.uint8 and out.tolist() == [[0, 254, 255], [254, 3, 254]]
    assert seg[0, 1] == 15  # input not modified
    assert mark_unlabeled(seg, classes='all').tolist() == [[254, 254, 255], [254, 254, 254]]
    with pytest.raises(ValueError, match="'all'"):
        MarkUnlabeled(classes='some')
    with pytest.raises(ValueError, match='class ids'):
        MarkUnlabeled(classes=[255])
    with pytest.raises(KeyError, match='LoadAnnotations'):
        MarkUnlabeled(classes=[1])(dict())
    with pytest.raises(ValueError, match='already contains'):
        mark_unlabeled(np.array([[254]], np.uint8), classes=[1])


def test_phase_hook_follows_runner_iter():
    assert phase_at(0, switch_iter=None) == 'teacher'
    assert [phase_at(i, switch_iter=2) for i in range(4)] == ['teacher', 'teacher', 'self', 'self']
    assert resolve_switch_iter(switch_iter=None, switch_ratio=0.1, max_iters=20000) == 2000
    assert resolve_switch_iter(switch_iter=None, switch_ratio=0.1, max_iters=25) == 3  # ceil
    assert resolve_switch_iter(switch_iter=None, switch_ratio=1.0, max_iters=25) == 25  # never within the run
    model = SimpleNamespace(phase=None)
    model.set_phase = lambda p: setattr(model, 'phase', p)
    hook = MaskCLIPPlusPhaseHook(switch_ratio=0.1)
    runner = SimpleNamespace(model=model, max_iters=20, iter=0, logger=logging.getLogger('test'))
    seen = []
    for it in [0, 1, 2, 1, 5, 0]:  # any order: e.g. a resume jumps
        runner.iter = it
        hook.before_train_iter(runner, batch_idx=it)
        seen.append(model.phase)
    assert seen == ['teacher', 'teacher', 'self', 'teacher', 'self', 'teacher']
    with pytest.raises(ValueError, match='exactly one'):
        MaskCLIPPlusPhaseHook()
    with pytest.raises(ValueError, match='exactly one'):
        MaskCLIPPlusPhaseHook(switch_iter=3, switch_ratio=0.1)
    with pytest.raises(TypeError, match='MaskCLIPPlusSegmentor'):
        MaskCLIPPlusPhaseHook(switch_iter=1).before_train_iter(
            SimpleNamespace(model=object(), max_iters=2, iter=0, logger=None), batch_idx=0)
