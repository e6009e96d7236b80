"""CLIPESCAM pipeline on a tiny deterministic CLIP (no shared data needed)."""
import numpy as np
import pytest
import torch
from PIL import Image

from wsss_mmseg.cam.clip_es import (CLIP_MEAN, CLIP_STD, CLIPESCAM, clip_es_input_size, clip_es_preprocess,
                                    resize_maps)
from wsss_mmseg.cam.softmax_gradcam import clip_softmax, patch_mean_embedding


@pytest.fixture(scope='module')
def tiny():
    from wsss_mmseg.clip.tiny import tiny_clip
    return tiny_clip(seed=0, embed_dim=32, vision_width=64, vision_layers=3, image_size=64)


@pytest.fixture(scope='module')
def texts(tiny):
    g = torch.Generator().manual_seed(0)
    e = tiny.visual.proj.shape[1]
    return torch.randn(5, e, generator=g), torch.randn(4, e, generator=g)


@pytest.fixture(scope='module')
def gen(tiny, texts):
    fg, bg = texts
    return CLIPESCAM(tiny.visual, fg, bg, logit_scale=100.0, box_threshold=0.4, attn_layers=8)


def _image(h=50, w=70, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8)


def test_input_size_policy():
    assert clip_es_input_size(375, 500) == (384, 512)
    assert clip_es_input_size(224, 224) == (224, 224)
    assert clip_es_input_size(375, 500, max_side=256) == (192, 256)  # s = 0.512
    assert clip_es_input_size(100, 120, max_side=256) == (112, 128)  # smaller images are not upscaled
    with pytest.raises(ValueError):
        clip_es_input_size(0, 10)
    with pytest.raises(ValueError):
        clip_es_input_size(10, 10, max_side=8)


def test_preprocess_matches_manual_pipeline():
    img = _image(37, 53)
    x = clip_es_preprocess(img)
    assert x.shape == (1, 3, 48, 64) and x.dtype == torch.float32
    pil = Image.fromarray(img).resize((64, 48), Image.BICUBIC)
    ref = np.asarray(pil, np.float32).transpose(2, 0, 1) / 255
    ref = (ref - np.array(CLIP_MEAN, np.float32)[:, None, None]) / np.array(CLIP_STD, np.float32)[:, None, None]
    np.testing.assert_allclose(x[0].numpy(), ref, rtol=0, atol=1e-6)
    # a PIL image in another mode is resized in its own mode, then converted
    gray = Image.fromarray(img[:, :, 0])
    xg = clip_es_preprocess(gray)
    ref_g = np.asarray(gray.resize((64, 48), Image.BICUBIC).convert('RGB'), np.float32)[:, :, 0] / 255
    np.testing.assert_allclose(xg[0, 0].numpy(), (ref_g - CLIP_MEAN[0]) / CLIP_STD[0], atol=1e-6)
    with pytest.raises(ValueError):
        clip_es_preprocess(img.astype(np.float32))


def test_torchvision_reference_if_available():
    tv = pytest.importorskip('torchvision.transforms')
    img = _image(41, 29, seed=3)
    t = tv.Compose([tv.Resize((48, 32), interpolation=tv.InterpolationMode.BICUBIC),
                    lambda im: im.convert('RGB'), tv.ToTensor(), tv.Normalize(CLIP_MEAN, CLIP_STD)])
    ref = t(Image.fromarray(img)).unsqueeze(0)
    torch.testing.assert_close(clip_es_preprocess(img), ref, rtol=0, atol=1e-6)


def test_forward_deduplicates_labels_in_first_occurrence_order(tiny, texts):
    """Duplicated labels (as the official XML parsing) give the maps of the unique labels."""
    fg, bg = texts
    g = CLIPESCAM(tiny.visual, fg, bg, logit_scale=100.0, caa=False)
    img = _image()
    x = g.preprocess(img)
    dup = g(x, [3, 1, 3, 0], img.shape[:2])
    uniq = g(x, [3, 1, 0], img.shape[:2])
    assert dup['keys'].tolist() == [3, 1, 0] and dup['keys'].dtype == np.int64
    np.testing.assert_array_equal(dup['cam'], uniq['cam'])
    (batch,) = g.forward_batch([x], [np.array([1, 1])], [img.shape[:2]])
    assert batch['keys'].tolist() == [1]


def test_resize_maps_is_cv2_linear():
    m = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    out = resize_maps(torch.from_numpy(m), (6, 8))
    assert out.shape == (1, 6, 8) and out.dtype == np.float32
    # INTER_LINEAR with half-pixel centres: corners replicate, no renormalisation
    assert out[0, 0, 0] == 0.0 and out[0, -1, -1] == 11.0


def test_outputs_shapes_ranges_and_determinism(gen):
    img = _image()
    x = gen.preprocess(img)
    out = gen(x, [3, 1, 3], img.shape[:2], intermediates=True)
    assert out['keys'].tolist() == [3, 1] and out['keys'].dtype == np.int64
    for key in ('cam', 'cam_refined'):
        assert out[key].shape == (2, 50, 70) and out[key].dtype == np.float32
        assert out[key].min() >= 0 and out[key].max() < 1
    assert out['probs'].shape == (2, 2 + 4)
    assert out['cam_patch'].shape == (2, 4, 5) and out['attn_avg'].shape == (20, 20)
    assert out['aff_mask'].shape == (2, 4, 5) and len(out['boxes']) == 2
    again = gen(x, [3, 1], img.shape[:2])
    np.testing.assert_array_equal(again['cam'], out['cam'])
    np.testing.assert_array_equal(again['cam_refined'], out['cam_refined'])


def test_probs_equal_full_forward(gen, texts):
    img = _image(64, 48, seed=1)
    x = gen.preprocess(img)
    out = gen(x, [4, 0], img.shape[:2], intermediates=True)
    with torch.no_grad():
        feats = gen.vit.forward_features(x)
        emb = patch_mean_embedding(feats['last'], ln_post=gen.vit.visual.ln_post, proj=gen.vit.visual.proj)
        fg, bg = texts
        p = clip_softmax(emb, torch.cat([fg[[4, 0]], bg]), logit_scale=100.0)
    np.testing.assert_allclose(out['probs'], p.expand(2, -1).numpy(), rtol=1e-5, atol=1e-7)


def test_batched_equals_per_class(tiny, texts, gen):
    fg, bg = texts
    ref = CLIPESCAM(tiny.visual, fg, bg, logit_scale=100.0, batched_grad=False)
    img = _image(40, 60, seed=2)
    x = gen.preprocess(img)
    a = gen(x, [0, 2, 4], img.shape[:2], intermediates=True)
    b = ref(x, [0, 2, 4], img.shape[:2], intermediates=True)
    np.testing.assert_allclose(a['gradcam_weights'], b['gradcam_weights'], rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(a['cam'], b['cam'], atol=1e-5)
    np.testing.assert_allclose(a['cam_refined'], b['cam_refined'], atol=1e-4)


def test_no_caa_and_errors(tiny, texts):
    fg, bg = texts
    g = CLIPESCAM(tiny.visual, fg, bg, logit_scale=100.0, caa=False)
    img = _image()
    out = g(g.preprocess(img), [1], img.shape[:2], intermediates=True)
    assert set(out) >= {'keys', 'cam'} and 'cam_refined' not in out and 'attn_avg' not in out
    with pytest.raises(ValueError, match='at least one'):
        g(g.preprocess(img), [], img.shape[:2])
    with pytest.raises(ValueError, match='out of range'):
        g(g.preprocess(img), [7], img.shape[:2])
    with pytest.raises(ValueError):
        g(torch.zeros(3, 64, 64), [1], (64, 64))
    with pytest.raises(ValueError):
        CLIPESCAM(tiny.visual, fg, bg[:, :3], logit_scale=100.0)
    with pytest.raises(ValueError):
        CLIPESCAM(tiny.visual, fg, bg, logit_scale=100.0, box_threshold=1.5)


def test_fidelity_flag_controls_pos_rounding(tiny, texts):
    fg, bg = texts
    assert CLIPESCAM(tiny.visual, fg, bg, logit_scale=100.0).vit.pos_round_fp16
    corrected = CLIPESCAM(tiny.visual, fg, bg, logit_scale=100.0, fidelity=False)
    assert not corrected.vit.pos_round_fp16 and corrected.vit.pos_interp == 'bilinear'
    img = _image()
    out = corrected(corrected.preprocess(img), [0, 1], img.shape[:2])
    assert out['cam_refined'].shape == (2, 50, 70)


def test_model_is_not_modified(tiny, texts):
    fg, bg = texts
    flags = [p.requires_grad for p in tiny.parameters()]
    before = {k: v.clone() for k, v in tiny.visual.state_dict().items()}
    g = CLIPESCAM(tiny.visual, fg, bg, logit_scale=100.0)
    img = _image()
    g(g.preprocess(img), [0], img.shape[:2])
    assert [p.requires_grad for p in tiny.parameters()] == flags
    assert all(p.grad is None for p in tiny.parameters())
    for k, v in tiny.visual.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_runs_under_cpu_autocast(gen):
    img = _image()
    x = gen.preprocess(img)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = gen(x, [0, 1], img.shape[:2])
    assert out['cam'].dtype == np.float32 and np.isfinite(out['cam_refined']).all()
    assert out['cam_refined'].min() >= 0 and out['cam_refined'].max() < 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_matches_cpu(tiny, texts, monkeypatch):
    import copy
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)
    monkeypatch.setattr(torch.backends.cuda.matmul, 'allow_tf32', False)
    fg, bg = texts
    cpu = CLIPESCAM(tiny.visual, fg, bg, logit_scale=100.0)
    img = _image()
    ref = cpu(cpu.preprocess(img), [0, 3], img.shape[:2], intermediates=True)
    gpu = CLIPESCAM(copy.deepcopy(tiny.visual), fg, bg, logit_scale=100.0).to('cuda')
    assert gpu.device.type == 'cuda'
    out = gpu(gpu.preprocess(img), [0, 3], img.shape[:2], intermediates=True)
    np.testing.assert_allclose(out['probs'], ref['probs'], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(out['cam'], ref['cam'], atol=5e-3)
    np.testing.assert_allclose(out['cam_refined'], ref['cam_refined'], atol=5e-2)
    with torch.autocast('cuda', dtype=torch.float16):
        amp = gpu(gpu.preprocess(img), [0, 3], img.shape[:2])
    assert amp['cam'].dtype == np.float32 and np.isfinite(amp['cam_refined']).all()
