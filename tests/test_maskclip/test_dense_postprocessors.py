"""ProbBackground, AreaBackground and PAMR (spec maskclip_pacl.md §1.7 b/c, §5.1, §5.3, §6.4):
by hand and against a numpy per-pixel loop written from the definitions."""
import numpy as np
import pytest
import torch
from mmseg.registry import MODELS

import wsss_mmseg  # noqa: F401
import wsss_mmseg.models.maskclip  # noqa: F401


def test_prob_background_by_hand():
    pb = MODELS.build(dict(type='ProbBackground', thresh=0.5, apply_softmax=False))
    probs = torch.tensor([[[0.6, 0.3, 0.5]], [[0.4, 0.3, 0.5]]])        # K = 2, 1 x 3 pixels
    out = pb(probs)
    assert out.shape == (3, 1, 3)
    assert out[0, 0].tolist() == [0.0, 1.0, 0.0]       # max 0.6, 0.3 (< 0.5: background), 0.5 (not below)
    assert out.argmax(0)[0].tolist() == [1, 0, 1]
    # on cosine logits: softmax(100 x) first; [0.30, 0.29] -> p = 1 / (1 + e^-1) = 0.731 >= 0.5
    logits = torch.tensor([[[0.30]], [[0.29]]])
    out = MODELS.build(dict(type='ProbBackground', thresh=0.75, scale=100.0))(logits)
    assert float(out[1, 0, 0]) == pytest.approx(1 / (1 + np.exp(-1.0)), rel=1e-6) and float(out[0, 0, 0]) == 1.0
    with pytest.raises(ValueError, match='thresh'):
        MODELS.build(dict(type='ProbBackground', thresh=0.0))


def test_area_background_by_hand():
    # background + 2 classes on 1 x 5 pixels: arg-max = [0, 1, 1, 1, 2] -> foreground 4 pixels,
    # class 1 share 3/4, class 2 share 1/4 < 0.3 -> class 2 filled with 0, its pixel goes to class 1
    s = torch.tensor([[[0.9, 0.1, 0.1, 0.1, 0.1]],
                      [[0.0, 0.8, 0.7, 0.6, 0.3]],
                      [[0.0, 0.1, 0.2, 0.3, 0.6]]])
    out = MODELS.build(dict(type='AreaBackground', thresh=0.3))(s)
    assert out[2].abs().max() == 0 and torch.equal(out[:2], s[:2])
    assert out.argmax(0)[0].tolist() == [0, 1, 1, 1, 1]
    keep = MODELS.build(dict(type='AreaBackground', thresh=0.25))(s)   # 1/4 is not below 0.25
    assert torch.equal(keep, s)
    only_bg = torch.tensor([[[1.0]], [[0.0]]])
    assert torch.equal(MODELS.build(dict(type='AreaBackground'))(only_bg), only_bg)


def _pamr_numpy(img, masks, iters, dilations):
    c, h, w = img.shape
    offs = [(dy * d, dx * d) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    cen = [(dy * d, dx * d) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1)]

    def at(a, y, x):  # replicate padding
        return a[:, min(max(y, 0), h - 1), min(max(x, 0), w - 1)]

    aff = np.zeros((h, w, len(offs)))
    for y in range(h):
        for x in range(w):
            sig = np.std(np.stack([at(img, y + dy, x + dx) for dy, dx in cen]), axis=0, ddof=1)   # (C,)
            k = [np.mean(-np.abs(at(img, y + dy, x + dx) - img[:, y, x]) / (1e-8 + 0.1 * sig)) for dy, dx in offs]
            e = np.exp(np.array(k) - max(k))
            aff[y, x] = e / e.sum()
    m = masks.copy()
    for _ in range(iters):
        new = np.zeros_like(m)
        for y in range(h):
            for x in range(w):
                new[:, y, x] = sum(aff[y, x, p] * at(m, y + dy, x + dx) for p, (dy, dx) in enumerate(offs))
        m = new
    return m


def test_pamr_equals_a_numpy_pixel_loop():
    rng = np.random.default_rng(0)
    img = rng.random((3, 6, 7))
    masks = rng.random((2, 6, 7))
    ref = _pamr_numpy(img, masks, iters=2, dilations=(1, 2))
    out = MODELS.build(dict(type='PAMR', iters=2, dilations=(1, 2)))(
        torch.from_numpy(masks).float(), image=torch.from_numpy(img).float()[None])
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-5)
    # an (H, W, 3) uint8 image and lower-resolution maps (resized bilinearly first) also work
    res = MODELS.build(dict(type='PAMR', iters=1))(torch.rand(1, 2, 3, 4),
                                                  image=(rng.random((12, 16, 3)) * 255).astype(np.uint8))
    assert res.shape == (1, 2, 12, 16)
    with pytest.raises(ValueError, match='dilations'):
        MODELS.build(dict(type='PAMR', dilations=()))


def test_maskclip_head_with_probability_and_area_background(tiny_clip_path):
    from mmengine.registry import init_default_scope
    from wsss_mmseg.cam.maskclip import cosine_logits
    init_default_scope('mmseg')
    head = MODELS.build(dict(type='MaskCLIPHead', clip=dict(model_name=None, pretrained=tiny_clip_path),
                             class_table='voc20_readable', templates='single',
                             prob_background=dict(thresh=0.2, scale=65.0), area_background=dict(thresh=0.1)))
    assert head.num_classes == 21
    g = torch.Generator().manual_seed(0)
    dense, keys = torch.randn(1, 32, 3, 4, generator=g), torch.randn(1, 64, 3, 4, generator=g)
    out = head.forward([dense, keys])
    # independent: softmax(65 cos), background where max < 0.2, then the area rule by hand
    p = (65.0 * cosine_logits(dense, head.text_embeddings)).softmax(1)[0].numpy()
    s = np.concatenate([(p.max(0) < 0.2)[None].astype(np.float32), p])
    pred = s.argmax(0)
    fg = (pred > 0).sum()
    for c in range(1, 21):
        if 0 < (pred == c).sum() < 0.1 * fg:
            s[c] = 0.0
    np.testing.assert_allclose(out[0].numpy(), s, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match='not both'):
        MODELS.build(dict(type='MaskCLIPHead', clip=dict(model_name=None, pretrained=tiny_clip_path),
                          class_table='voc20_readable', templates='single', background=['sky'],
                          prob_background=dict(thresh=0.2)))


def test_probbg_config_builds(tiny_clip_path):
    from pathlib import Path

    from mmengine.config import Config
    cfg = Config.fromfile(str(Path(__file__).resolve().parents[2] / 'configs/maskclip_vitb16_voc21_probbg.py'))
    assert cfg.model.decode_head.prob_background.thresh == 0.1
    cfg.model.clip = dict(model_name=None, pretrained=tiny_clip_path)
    cfg.model.decode_head.templates = 'single'
    model = MODELS.build(cfg.model)
    assert model.decode_head.num_classes == 21


def test_maskclip_generator_chains_pamr_last(tiny_clip_path):
    from mmengine.registry import init_default_scope

    from wsss_mmseg.cam.clip_es import resize_maps
    init_default_scope('mmseg')
    base = dict(type='MaskCLIPGenerator', clip=dict(model_name=None, pretrained=tiny_clip_path),
                class_table='voc20', text_table='voc20_readable', templates='single', background='clip_es',
                device='cpu')
    img = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)
    plain = MODELS.build(base)
    with_pamr = MODELS.build(dict(base, pamr=dict(iters=2, dilations=(1, 2))))
    out = with_pamr.generate_image(img, [3, 7])
    # reference: PAMR (pinned against numpy above) on the patch-grid CAM with the network input
    x = plain.preprocess(img)
    from wsss_mmseg.cam.maskclip import cosine_logits, vit_dense_features
    with torch.no_grad():
        feats = vit_dense_features(plain.tower, x)
        logits = cosine_logits(feats['dense'], torch.cat([plain.fg_text[[3, 7]], plain.bg_text]))
        prob = (100.0 * logits).softmax(1)[0, :2]
        cam = prob / prob.flatten(1).amax(1)[:, None, None]
        ref = MODELS.build(dict(type='PAMR', iters=2, dilations=(1, 2)))(cam, image=x).clamp(0, 1)
    np.testing.assert_allclose(out['cam_refined'], resize_maps(ref, (40, 56)), atol=1e-5)
    assert out['cam_refined'].shape == (2, 40, 56)
