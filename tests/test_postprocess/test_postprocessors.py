"""Registered post-processor wrappers CAA and DenseCRF equal the pure functions."""
import numpy as np
import pytest
import torch

pytest.importorskip('mmseg.registry')

from wsss_mmseg.models.postprocessors import CAA, DenseCRF  # noqa: E402
from wsss_mmseg.postprocess.caa import average_attention, caa_refine, class_box_masks  # noqa: E402


def _inputs(seed=0, k=2, h=4, w=5):
    g = torch.Generator().manual_seed(seed)
    n = h * w
    attn_list = [torch.rand(1, 1 + n, 1 + n, generator=g).softmax(-1) for _ in range(10)]
    cams = torch.rand(k, h, w, generator=g)
    return attn_list, cams


def test_caa_wrapper_matches_pure_functions():
    attn_list, cams = _inputs()
    attn_avg = average_attention(attn_list, last_n=8)
    masks, _ = class_box_masks(cams, threshold=0.4)
    ref = caa_refine(attn_avg, cams, masks)
    caa = CAA(box_threshold=0.4)
    torch.testing.assert_close(caa(cams, attn=attn_avg), ref)
    torch.testing.assert_close(caa(cams, attn=attn_list), ref)
    # other thresholds / no boxes
    masks7, _ = class_box_masks(cams, threshold=0.7)
    torch.testing.assert_close(CAA(box_threshold=0.7)(cams, attn=attn_avg), caa_refine(attn_avg, cams, masks7))
    ones = torch.ones_like(cams, dtype=torch.uint8)
    torch.testing.assert_close(CAA(use_boxes=False)(cams, attn=attn_avg), caa_refine(attn_avg, cams, ones))
    hi = caa(cams, attn=attn_avg, out_hw=(8, 10))
    assert isinstance(hi, np.ndarray) and hi.shape == (2, 8, 10)
    with pytest.raises(ValueError):
        caa(cams[0], attn=attn_avg)
    with pytest.raises(ValueError):
        CAA(box_threshold=1.0)


def test_dense_crf_wrapper_matches_crf_refine():
    pytest.importorskip('pydensecrf.densecrf')
    from wsss_mmseg.postprocess.crf import crf_refine
    rng = np.random.RandomState(0)
    img = rng.randint(0, 256, (10, 12, 3)).astype(np.uint8)
    cams = rng.rand(2, 10, 12).astype(np.float32)
    np.testing.assert_array_equal(DenseCRF()(cams, img), crf_refine(cams, img))
    np.testing.assert_array_equal(DenseCRF(iters=3, bg_power=2, fidelity=False)(torch.from_numpy(cams), img),
                                  crf_refine(cams, img, iters=3, bg_power=2, fidelity=False))
    with pytest.raises(ValueError):
        DenseCRF(bg_power=0)
