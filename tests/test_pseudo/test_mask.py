"""Pseudo mask and confidence from CAMs (spec clip_es.md §7-8)."""
import numpy as np
import pytest
import torch

from wsss_mmseg.pseudo.mask import background_score, cams_to_probs, make_pseudo_mask


def _cams():
    # K=2 classes on a 1x4 image
    return np.array([[[0.9, 0.3, 0.1, 0.5]],
                     [[0.2, 0.6, 0.05, 0.5]]], np.float32)


def test_background_score_by_hand():
    c = _cams()
    np.testing.assert_allclose(background_score(c)[0], [0.1, 0.4, 0.9, 0.5], rtol=1e-6)
    np.testing.assert_allclose(background_score(c, power=2)[0], [0.01, 0.16, 0.81, 0.25], rtol=1e-5)
    assert background_score(c.astype(np.float16)).dtype == np.float16
    with pytest.raises(ValueError):
        background_score(c, power=0)


def test_cams_to_probs():
    p = cams_to_probs(_cams())
    assert p.shape == (3, 1, 4)
    np.testing.assert_allclose(p[0, 0], [0.1, 0.4, 0.9, 0.5], rtol=1e-6)
    pn = cams_to_probs(_cams(), normalize=True)
    np.testing.assert_allclose(pn.sum(0), 1, rtol=1e-6)


def test_make_pseudo_mask_without_crf_by_hand():
    mask, conf = make_pseudo_mask(_cams(), keys=[7, 11])
    # pixel 0: [0.1, 0.9, 0.2] -> cls key 7 -> 8, conf 0.9/1.2
    # pixel 1: [0.4, 0.3, 0.6] -> key 11 -> 12, conf 0.6/1.3
    # pixel 2: [0.9, 0.1, 0.05] -> bg, conf 0.9/1.05
    # pixel 3: [0.5, 0.5, 0.5] -> tie -> background (first channel), conf 1/3
    assert mask.dtype == np.uint8 and conf.dtype == np.float32
    assert mask[0].tolist() == [8, 12, 0, 0]
    np.testing.assert_allclose(conf[0], [0.9 / 1.2, 0.6 / 1.3, 0.9 / 1.05, 1 / 3], rtol=1e-6)
    m2, _ = make_pseudo_mask(_cams(), keys=[7, 11], ignore_below=0.7)
    assert m2[0].tolist() == [8, 255, 0, 255]
    m3, _ = make_pseudo_mask(torch.from_numpy(_cams()), keys=[7, 11], ignore_below=0.7, ignore_index=250)
    assert m3[0].tolist() == [8, 250, 0, 250]


def test_make_pseudo_mask_with_crf_q():
    q = np.array([[[0.96, 0.1, 0.3]], [[0.02, 0.85, 0.3]], [[0.02, 0.05, 0.4]]], np.float32)
    cams = np.zeros((2, 1, 3), np.float32)
    mask, conf = make_pseudo_mask(cams, keys=[14, 0], crf_Q=q, ignore_below=0.95)
    np.testing.assert_allclose(conf[0], [0.96, 0.85, 0.4])
    assert mask[0].tolist() == [0, 255, 255]
    mask, _ = make_pseudo_mask(cams, keys=[14, 0], crf_Q=q)
    assert mask[0].tolist() == [0, 15, 1]


def test_make_pseudo_mask_errors():
    with pytest.raises(ValueError, match='keys'):
        make_pseudo_mask(_cams(), keys=[1])
    with pytest.raises(ValueError, match='crf_Q'):
        make_pseudo_mask(_cams(), keys=[1, 2], crf_Q=np.zeros((2, 1, 4)))
    with pytest.raises(ValueError):
        make_pseudo_mask(_cams(), keys=[1, 254])
    with pytest.raises(ValueError):
        make_pseudo_mask(np.zeros((0, 1, 4)), keys=[])
