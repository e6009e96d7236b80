"""Key smoothing and prompt denoising: hand-made examples, registered wrappers, composition."""
import math

import numpy as np
import pytest
import torch

import wsss_mmseg  # noqa: F401  (registers the plugin)
import wsss_mmseg.models.maskclip  # noqa: F401
from mmseg.registry import MODELS
from wsss_mmseg.cam.clip_es import CLIPESCAM
from wsss_mmseg.clip import CLIPViT, tiny_clip
from wsss_mmseg.postprocess.key_smoothing import key_affinity, key_smoothing
from wsss_mmseg.postprocess.prompt_denoising import class_confidence, prompt_denoising


def _softmax(row, scale):
    e = [math.exp(scale * v - max(scale * u for u in row)) for v in row]
    return [x / sum(e) for x in e]


# 2x2 grid, K = 2 classes, keys in R^2
LOGITS = [[0.30, 0.20], [0.10, 0.15], [0.25, 0.26], [0.00, 0.05]]  # per location: class scores (margins < 0.17)
KEYS = [[1.0, 0.0], [3.0, 4.0], [0.0, 2.0], [-1.0, 1.0]]


def _as_maps():
    logits = torch.tensor(LOGITS).t().reshape(1, 2, 2, 2)  # (B, K, h, w), row-major locations
    keys = torch.tensor(KEYS).t().reshape(1, 2, 2, 2)      # (B, C, h, w)
    return logits, keys


def test_key_smoothing_equals_formula_by_hand():
    logits, keys = _as_maps()
    out = key_smoothing(logits, keys)  # token cosine, thresh 1.0, scale 100
    probs = [_softmax(r, 100.0) for r in LOGITS]
    unit = [[c / math.hypot(*k) for c in k] for k in KEYS]
    for i in range(4):
        for c in range(2):
            expected = sum(sum(a * b for a, b in zip(unit[i], unit[j])) * probs[j][c] for j in range(4))
            assert out[0, c, i // 2, i % 2].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_key_smoothing_legacy_dim1_normalises_channels_over_locations():
    logits, keys = _as_maps()
    out = key_smoothing(logits, keys, key_norm='legacy_dim1')
    probs = [_softmax(r, 100.0) for r in LOGITS]
    col_norm = [math.sqrt(sum(k[c] ** 2 for k in KEYS)) for c in range(2)]
    kt = [[k[c] / col_norm[c] for c in range(2)] for k in KEYS]
    for i in range(4):
        for c in range(2):
            expected = sum(sum(a * b for a, b in zip(kt[i], kt[j])) * probs[j][c] for j in range(4))
            assert out[0, c, i // 2, i % 2].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    w = key_affinity(keys.flatten(2).transpose(1, 2), key_norm='legacy_dim1')
    assert not torch.allclose(torch.diagonal(w[0]), torch.ones(4))  # not a cosine matrix


def test_key_smoothing_threshold_keeps_confident_locations():
    logits, keys = _as_maps()
    probs = torch.tensor([max(_softmax(r, 100.0)) for r in LOGITS])
    thresh = 0.995  # location 0 (margin 0.1) is above it; 1, 2, 3 (margins 0.05, 0.01, 0.05) are not
    assert probs[0] >= thresh and torch.all(probs[1:] < thresh)
    out = key_smoothing(logits, keys, thresh=thresh)
    full = key_smoothing(logits, keys)
    flat_out, flat_full = out.flatten(2)[0], full.flatten(2)[0]
    torch.testing.assert_close(flat_out[:, 1:], flat_full[:, 1:])
    # spec §1.6: a kept location keeps its class PROBABILITIES softmax(100 x), not the raw cosine
    expected_kept = torch.tensor(_softmax(LOGITS[0], 100.0))
    torch.testing.assert_close(flat_out[:, 0], expected_kept, rtol=1e-5, atol=1e-6)
    # ks_thresh = 1.0 skips only locations whose fp32 softmax saturates to exactly 1 (margin 0.4)
    sat = torch.tensor([[0.0, 0.4], [0.1, 0.15]]).t().reshape(1, 2, 1, 2)
    out_sat = key_smoothing(sat, torch.randn(1, 3, 1, 2))
    torch.testing.assert_close(out_sat[0, :, 0, 0], torch.tensor(_softmax([0.0, 0.4], 100.0)))
    assert out_sat[0, 1, 0, 0] == 1.0 and out_sat[0, 0, 0, 0] < 1e-17  # probabilities, not (0.0, 0.4)
    assert not torch.allclose(out_sat[0, :, 0, 1], torch.tensor(_softmax([0.1, 0.15], 100.0)))


def test_key_affinity_properties_and_row_norms():
    keys = torch.randn(2, 6, 5)
    w = key_affinity(keys)
    torch.testing.assert_close(torch.diagonal(w, dim1=1, dim2=2), torch.ones(2, 6))
    assert torch.all(w <= 1 + 1e-6)
    l1 = key_affinity(keys, row_norm='l1')
    torch.testing.assert_close(l1.abs().sum(-1), torch.ones(2, 6))
    sm = key_affinity(keys, row_norm='softmax')
    torch.testing.assert_close(sm, w.softmax(-1))
    with pytest.raises(ValueError, match='key_norm'):
        key_affinity(keys, key_norm='dim0')
    with pytest.raises(ValueError, match='row_norm'):
        key_affinity(keys, row_norm='l2')


def test_orthogonal_keys_return_the_softmax_unchanged():
    logits = 0.01 * torch.randn(1, 3, 2, 2, generator=torch.Generator().manual_seed(0))  # no saturation
    keys = torch.eye(4).reshape(1, 4, 2, 2)  # location i has key e_i: W = I
    out = key_smoothing(logits, keys)
    torch.testing.assert_close(out, (100 * logits).softmax(1))


def test_key_smoothing_shape_errors():
    with pytest.raises(ValueError, match='grid'):
        key_smoothing(torch.zeros(1, 2, 2, 2), torch.zeros(1, 3, 2, 3))
    with pytest.raises(ValueError, match='logits must be'):
        key_smoothing(torch.zeros(2, 2, 2), torch.zeros(1, 3, 2, 2))


def test_prompt_denoising_removes_exactly_the_classes_below_threshold():
    # 3 classes, 3 locations (1x3 grid); per-location softmax(100 x) computed by hand
    rows = [[0.30, 0.29, 0.00], [0.10, 0.30, 0.295], [0.20, 0.19, 0.18]]
    logits = torch.tensor(rows).t().reshape(1, 3, 1, 3)
    probs = [_softmax(r, 100.0) for r in rows]
    conf = [max(p[c] for p in probs) for c in range(3)]
    expected_keep = [c >= 0.5 for c in conf]
    assert expected_keep == [True, True, False]  # class 2 peaks at 0.38 < 0.5
    torch.testing.assert_close(class_confidence(logits)[0], torch.tensor(conf), rtol=1e-5, atol=1e-6)
    out, keep = prompt_denoising(logits, thresh=0.5)
    assert keep[0].tolist() == expected_keep
    assert torch.all(out[0, 2] == -100.0)
    torch.testing.assert_close(out[0, :2], logits[0, :2])
    # a class exactly at the threshold is kept (removal is "below")
    _, keep_hi = prompt_denoising(logits, thresh=conf[0])
    assert keep_hi[0, 0]
    # all removed -> every logit is the fill value, argmax = class 0
    out_all, keep_all = prompt_denoising(logits, thresh=1.01)
    assert not keep_all.any() and torch.all(out_all == -100.0) and torch.all(out_all.argmax(1) == 0)


def test_registered_post_processors():
    logits, keys = _as_maps()
    ks = MODELS.build(dict(type='KeySmoothing', key_norm='legacy_dim1'))
    torch.testing.assert_close(ks(logits[0], keys=keys[0]), key_smoothing(logits, keys, key_norm='legacy_dim1')[0])
    # keys may also come as (N, C)
    torch.testing.assert_close(ks(logits[0], keys=torch.tensor(KEYS)), ks(logits[0], keys=keys[0]))
    pd = MODELS.build(dict(type='PromptDenoising', thresh=0.5))
    torch.testing.assert_close(pd(logits), prompt_denoising(logits, thresh=0.5)[0])
    with pytest.raises(ValueError, match='key_norm'):
        MODELS.build(dict(type='KeySmoothing', key_norm='bad'))
    with pytest.raises(ValueError, match='thresh'):
        MODELS.build(dict(type='PromptDenoising', thresh=2.0))


def test_key_smoothing_composes_with_clip_es_cams():
    model = tiny_clip(seed=5)
    vit = CLIPViT(model.visual, pos_interp='bilinear')
    gen = torch.Generator().manual_seed(0)
    cam = CLIPESCAM(vit, torch.randn(3, 32, generator=gen), torch.randn(2, 32, generator=gen), logit_scale=100.0,
                    caa=False, attn_layers=1)
    img = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    x = cam.preprocess(img)
    res = cam(x, [0, 2], img.shape[:2], intermediates=True)
    cams = torch.as_tensor(res['cam_patch'])  # (K, h, w) in [0, 1]
    with torch.no_grad():
        k = vit.forward_features(x, qkv_last=True)['k'][0, 1:]  # last-block keys of the patches (N, D)
    ks = MODELS.build(dict(type='KeySmoothing', apply_softmax=False, row_norm='l1'))
    out = ks(cams, keys=k)
    w = torch.nn.functional.normalize(k, dim=-1) @ torch.nn.functional.normalize(k, dim=-1).t()
    w = w / w.abs().sum(-1, keepdim=True)
    expected = (w @ cams.flatten(1).t()).t().reshape(cams.shape)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)


def test_caa_composes_with_maskclip_maps():
    from wsss_mmseg.cam.maskclip import cosine_logits, vit_dense_features
    model = tiny_clip(seed=6)
    vit = CLIPViT(model.visual)
    with torch.no_grad():
        out = vit_dense_features(vit, torch.randn(1, 3, 64, 48), attn_last=2)
    text = torch.randn(3, 32)
    maps = (100 * cosine_logits(out['dense'], text)).softmax(1)[0]
    maps = maps / maps.flatten(1).amax(1)[:, None, None]
    caa = MODELS.build(dict(type='CAA', box_threshold=0.4, attn_layers=2))
    refined = caa(maps, attn=out['attn'])
    assert refined.shape == maps.shape and float(refined.min()) >= 0 and float(refined.max()) <= 1
