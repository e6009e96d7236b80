"""Dense CRF inputs (fidelity quirks) and inference (spec clip_es.md §7)."""
import numpy as np
import pytest

from wsss_mmseg.postprocess.crf import (CRF_DEFAULTS, MEAN_BGR, crf_image, crf_probs, crf_refine, crf_unary,
                                        dense_crf)


def test_crf_image_wraparound_by_hand():
    img = np.array([[[0, 0, 0], [255, 255, 255], [10, 200, 104]]], np.uint8)  # RGB
    out = crf_image(img)
    # BGR - mean, truncated toward zero, modulo 256
    # (0,0,0): (-104.008, -116.669, -122.675) -> (-104, -116, -122) -> (152, 140, 134)
    assert out[0, 0].tolist() == [152, 140, 134]
    # (255,255,255): (150.992, 138.331, 132.325) -> (150, 138, 132)
    assert out[0, 1].tolist() == [150, 138, 132]
    # RGB (10,200,104) -> BGR (104,200,10): (-0.008, 83.331, -112.675) -> (0, 83, -112) -> (0, 83, 144)
    assert out[0, 2].tolist() == [0, 83, 144]
    assert out.dtype == np.uint8 and out.flags['C_CONTIGUOUS']
    np.testing.assert_array_equal(crf_image(img, fidelity=False), img)
    assert MEAN_BGR == (104.008, 116.669, 122.675)
    with pytest.raises(ValueError):
        crf_image(img.astype(np.float32))


def test_crf_probs_fidelity_float16_unnormalised():
    cams = np.array([[[0.2, 0.9]], [[0.5, 0.1]]], np.float32)
    p = crf_probs(cams)
    assert p.dtype == np.float16 and p.shape == (3, 1, 2)
    c16 = cams.astype(np.float16)
    np.testing.assert_array_equal(p[0], np.float16(1) - c16.max(0))
    np.testing.assert_array_equal(p[1:], c16)
    assert not np.allclose(p.astype(np.float32).sum(0), 1)  # not normalised
    q = crf_probs(cams, fidelity=False)
    assert q.dtype == np.float32
    np.testing.assert_allclose(q.sum(0), 1, rtol=1e-6)
    np.testing.assert_allclose(q[:, 0, 0], np.array([0.5, 0.2, 0.5]) / 1.2, rtol=1e-6)
    p2 = crf_probs(cams, bg_power=2)
    np.testing.assert_allclose(p2[0].astype(np.float32), (1 - c16.max(0).astype(np.float32)) ** 2, rtol=2e-3)


def test_crf_unary_float16_clip():
    p = np.array([[[0.0, 1.0, 0.5]]], np.float32)
    u = crf_unary(p)
    assert u.dtype == np.float32 and u.shape == (1, 3)
    # 1e-5 in float16 is the subnormal 1.0014e-05; -log in float16 -> 11.5078125
    assert u[0, 0] == np.float32(-np.log(np.float16(1e-5)))
    assert abs(u[0, 0] - 11.51) < 0.01
    assert u[0, 1] == 0.0
    assert u[0, 2] == np.float32(np.float16(-np.log(np.float16(0.5))))
    u32 = crf_unary(p, fidelity=False)
    np.testing.assert_allclose(u32[0], [-np.log(1e-5), 0.0, np.log(2)], rtol=1e-6)


def test_dense_crf_posterior_properties():
    pytest.importorskip('pydensecrf.densecrf')
    rng = np.random.RandomState(0)
    h, w = 12, 16
    img = rng.randint(0, 255, (h, w, 3)).astype(np.uint8)
    cams = np.zeros((2, h, w), np.float32)
    cams[0, :, :8] = 0.9
    cams[1, :, 8:] = 0.8
    q = crf_refine(cams, img)
    assert q.shape == (3, h, w) and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(0), 1, rtol=1e-4)
    lab = q.argmax(0)
    assert (lab[:, :8] == 1).all() and (lab[:, 8:] == 2).all()
    # deterministic
    np.testing.assert_array_equal(q, crf_refine(cams, img))
    # the same via the lower-level functions
    u = crf_unary(crf_probs(cams))
    np.testing.assert_array_equal(q, dense_crf(u, crf_image(img), **CRF_DEFAULTS))
    qc = crf_refine(cams, img, fidelity=False, iters=2)
    assert qc.shape == (3, h, w)


def test_crf_refine_errors():
    img = np.zeros((4, 5, 3), np.uint8)
    with pytest.raises(KeyError, match='unknown dense CRF parameter'):
        crf_refine(np.zeros((1, 4, 5)), img, foo=1)
    with pytest.raises(ValueError):
        crf_refine(np.zeros((1, 4, 6)), img)
    with pytest.raises(ValueError):
        crf_probs(np.zeros((4, 5)))
    pytest.importorskip('pydensecrf.densecrf')
    with pytest.raises(ValueError):
        dense_crf(np.zeros((2, 7), np.float32), img)


def test_missing_pydensecrf_gives_clear_import_error(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, 'pydensecrf', None)
    monkeypatch.setitem(sys.modules, 'pydensecrf.densecrf', None)
    with pytest.raises(ImportError, match='pydensecrf2'):
        crf_refine(np.zeros((1, 4, 5), np.float32), np.zeros((4, 5, 3), np.uint8))


def test_crf_accepts_read_only_images():
    pytest.importorskip('pydensecrf')
    from wsss_mmseg.postprocess.crf import crf_refine
    rng = np.random.RandomState(0)
    img = rng.randint(0, 256, (12, 16, 3)).astype(np.uint8)
    img.setflags(write=False)  # as returned by wsss_mmseg.utils.images.load_rgb
    cams = rng.rand(2, 12, 16).astype(np.float32)
    for fidelity in (True, False):
        q = crf_refine(cams, img, fidelity=fidelity)
        assert q.shape == (3, 12, 16)
