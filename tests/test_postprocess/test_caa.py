"""Math of the CAA pure functions (spec clip_es.md §6)."""
import numpy as np
import pytest
import torch

from wsss_mmseg.postprocess.caa import (average_attention, box_mask, caa_propagate, caa_refine, caa_transition,
                                        cam_boxes, class_box_masks, matrix_power, sinkhorn, symmetrize)


def _rand_attn(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, n, generator=g).softmax(dim=-1)


def test_sinkhorn_three_rounds_equals_hand_loop():
    a = _rand_attn(7)
    t = a.clone()
    for _ in range(3):
        col = t.sum(dim=0)  # col[j] = sum_i t[i, j]
        t = torch.stack([t[:, j] / col[j] for j in range(7)], dim=1)
        row = t.sum(dim=1)
        t = torch.stack([t[i] / row[i] for i in range(7)], dim=0)
    torch.testing.assert_close(sinkhorn(a, rounds=3), t, rtol=1e-6, atol=0)
    torch.testing.assert_close(sinkhorn(a, rounds=0), a)


def test_sinkhorn_converges_to_doubly_stochastic():
    a = _rand_attn(9, seed=1)
    t = sinkhorn(a, rounds=200)
    torch.testing.assert_close(t.sum(dim=1), torch.ones(9), rtol=0, atol=1e-6)
    torch.testing.assert_close(t.sum(dim=0), torch.ones(9), rtol=0, atol=1e-5)
    t3 = sinkhorn(a, rounds=3)
    torch.testing.assert_close(t3.sum(dim=1), torch.ones(9), rtol=0, atol=1e-6)  # rows exact after a round
    with pytest.raises(ValueError):
        sinkhorn(a, rounds=-1)


def test_sinkhorn_batched_matches_single():
    a = torch.stack([_rand_attn(5, seed=s) for s in range(3)])
    out = sinkhorn(a)
    for i in range(3):
        torch.testing.assert_close(out[i], sinkhorn(a[i]))


def test_symmetrize_and_power():
    m = torch.arange(9.0).view(3, 3)
    s = symmetrize(m)
    torch.testing.assert_close(s, s.t())
    torch.testing.assert_close(s, torch.tensor([[0.0, 2.0, 4.0], [2.0, 4.0, 6.0], [4.0, 6.0, 8.0]]))
    torch.testing.assert_close(matrix_power(m, power=2), m @ m)
    torch.testing.assert_close(matrix_power(m, power=3), torch.linalg.matrix_power(m, 3))
    torch.testing.assert_close(matrix_power(m, power=1), m)
    with pytest.raises(ValueError):
        matrix_power(m, power=0)


def test_average_attention_last_n_and_cls_drop():
    maps = [torch.full((1, 4, 4), float(i)) for i in range(10)]
    maps[-1][0, 0, :] = 1000.0  # CLS row
    maps[-1][0, :, 0] = 1000.0  # CLS column
    avg = average_attention(maps, last_n=8)
    assert avg.shape == (3, 3)
    torch.testing.assert_close(avg, torch.full((3, 3), float(np.mean(range(2, 10)))))
    # fewer maps than last_n: all are used (python slice semantics)
    torch.testing.assert_close(average_attention(maps[:3], last_n=8), torch.full((3, 3), 1.0))
    # (T, T) maps and fp16 input -> float32 output
    avg16 = average_attention([m[0].half() for m in maps[:2]], last_n=8)
    assert avg16.dtype == torch.float32
    with pytest.raises(ValueError):
        average_attention([torch.zeros(2, 4, 4)])
    with pytest.raises(ValueError):
        average_attention([])


def test_cam_boxes_fidelity_blob_and_clamp():
    cam = np.zeros((6, 8), np.float32)
    cam[1:3, 2:5] = 1.0  # interior blob: x in [2, 5), y in [1, 3)
    cam[4:6, 6:8] = 0.9  # blob touching the last row and last column
    boxes = cam_boxes(cam, threshold=0.4)
    got = sorted(map(tuple, boxes.tolist()))
    # boundingRect of the corner blob: x=6, y=4, w=2, h=2 -> x1=min(8, 7)=7, y1=min(6, 5)=5
    assert got == [(2, 1, 5, 3), (6, 4, 7, 5)]
    mask = box_mask(boxes, 6, 8)
    assert mask[5].sum() == 0 and mask[:, 7].sum() == 0  # last row/col never masked
    assert mask[4, 6] == 1 and mask.sum() == 3 * 2 + 1
    corrected = sorted(map(tuple, cam_boxes(cam, threshold=0.4, fidelity=False).tolist()))
    assert corrected == [(2, 1, 5, 3), (6, 4, 8, 6)]
    assert box_mask(np.array(corrected), 6, 8)[4:6, 6:8].all()


def test_cam_boxes_uint8_truncation_and_strict_threshold():
    cam = np.zeros((5, 5), np.float32)
    cam[0, 0] = 0.999  # -> 254
    # 0.4 * 254 = 101.6 -> thr 101; strict '>': 101/255 -> 101 excluded, 102 included
    cam[2, 2] = np.float32(101.9 / 255)  # truncates to 101 -> excluded
    cam[4, 4] = np.float32(102.2 / 255)  # truncates to 102 -> included
    boxes = sorted(map(tuple, cam_boxes(cam, threshold=0.4).tolist()))
    assert boxes == [(0, 0, 1, 1), (4, 4, 4, 4)]
    # corrected mode thresholds the float map: 101.9/255 > 0.4 * 0.999
    corr = sorted(map(tuple, cam_boxes(cam, threshold=0.4, fidelity=False).tolist()))
    assert corr == [(0, 0, 1, 1), (2, 2, 3, 3), (4, 4, 5, 5)]


def test_cam_boxes_hole_contour_and_empty():
    cam = np.zeros((9, 9), np.float32)
    cam[1:8, 1:8] = 1.0
    cam[3:6, 3:6] = 0.0  # ring: RETR_TREE also returns the hole contour
    boxes = cam_boxes(cam, threshold=0.4)
    assert len(boxes) == 2
    assert (1, 1, 8, 8) in map(tuple, boxes.tolist())
    assert len(cam_boxes(cam, threshold=0.4, fidelity=False)) == 1  # outer contours only
    np.testing.assert_array_equal(cam_boxes(np.zeros((4, 4)), threshold=0.4), [[0, 0, 0, 0]])
    assert cam_boxes(np.zeros((4, 4)), threshold=0.4, fidelity=False).shape == (0, 4)
    assert box_mask(np.zeros((0, 4)), 4, 4).sum() == 0
    with pytest.raises(ValueError):
        box_mask(np.array([[-1, -1, -1, -1]]), 4, 4)
    with pytest.raises(ValueError):
        cam_boxes(np.zeros(4), threshold=0.4)


def test_class_box_masks_shapes_and_device():
    cams = torch.zeros(2, 4, 5)
    cams[0, 1:3, 1:3] = 1
    cams[1, 0, 0] = 1
    masks, boxes = class_box_masks(cams, threshold=0.4)
    assert masks.shape == (2, 4, 5) and masks.dtype == torch.uint8 and len(boxes) == 2
    assert masks[0].sum() == 4 and masks[1].sum() == 1


def test_caa_refine_equals_spec_formula():
    torch.manual_seed(0)
    h, w, k = 3, 4, 2
    n = h * w
    attn = _rand_attn(n, seed=2)
    cams = torch.rand(k, h, w)
    masks = (torch.rand(k, h, w) > 0.4).to(torch.uint8)
    out = caa_refine(attn, cams, masks)
    raw = caa_propagate(caa_transition(attn), cams, masks)
    assert raw.shape == (k, h, w)
    # explicit spec loop, in float64
    t = attn.double()
    for _ in range(3):
        t = t / t.sum(dim=0, keepdim=True)
        t = t / t.sum(dim=1, keepdim=True)
    t = (t + t.t()) / 2
    t = t @ t
    for c in range(k):
        tm = t * masks[c].double().view(1, n)
        r = (tm @ cams[c].double().reshape(n, 1)).view(h, w)
        torch.testing.assert_close(raw[c].double(), r, rtol=1e-5, atol=0)
        r = r - r.min()
        r = r / (1e-7 + r.max())
        # min-max amplifies the float32 rounding of nearly equal values
        torch.testing.assert_close(out[c].double(), r, rtol=0, atol=1e-4)


def test_caa_under_autocast_stays_float32():
    attn = _rand_attn(6, seed=3)
    cams = torch.rand(1, 2, 3)
    masks = torch.ones(1, 2, 3, dtype=torch.uint8)
    ref = caa_refine(attn, cams, masks)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = caa_refine(attn, cams, masks)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref)


def test_caa_shape_errors():
    with pytest.raises(ValueError):
        caa_transition(torch.rand(3, 4))
    with pytest.raises(ValueError):
        caa_propagate(torch.rand(4, 4), torch.rand(1, 2, 3), torch.ones(1, 2, 3))
    with pytest.raises(ValueError):
        caa_propagate(torch.rand(6, 6), torch.rand(1, 2, 3), torch.ones(2, 2, 3))


def test_propagate_power_equals_matrix_power_route():
    from wsss_mmseg.postprocess.caa import caa_propagate, caa_propagate_power, matrix_power
    g = torch.Generator().manual_seed(3)
    attn = torch.rand(20, 20, generator=g).softmax(dim=-1)
    sym = symmetrize(sinkhorn(attn, rounds=3))
    cams = torch.rand(3, 4, 5, generator=g)
    masks = (torch.rand(3, 4, 5, generator=g) > 0.4).to(torch.uint8)
    for power in (1, 2, 3):
        ref = caa_propagate(matrix_power(sym, power=power), cams, masks)
        torch.testing.assert_close(caa_propagate_power(sym, cams, masks, power=power), ref,
                                   rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match='power'):
        caa_propagate_power(sym, cams, masks, power=0)
