"""Saliency (classic_wsss.md, "Saliency-guided" row: LoadSaliencyMap + fusion; AE-PSL row: saliency
background): spectral residual re-derived in numpy, fusions and AUC by hand, bad-input behaviour."""
from __future__ import annotations

import numpy as np
import pytest

from wsss_mmseg.classic.saliency import (ae_psl_labels, saliency_auc, saliency_guided_labels,
                                         spectral_residual_saliency)


def test_spectral_residual_matches_numpy_derivation():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(8, 8, 3)).astype(np.uint8)
    grey = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    spec = np.fft.fft2(grey)
    log_amp = np.log(np.abs(spec) + 1e-8)
    padded = np.pad(log_amp, 1, mode='reflect')  # reflect-101 border
    mean3 = sum(padded[dy:dy + 8, dx:dx + 8] for dy in range(3) for dx in range(3)) / 9.0
    sal = np.abs(np.fft.ifft2(np.exp(log_amp - mean3 + 1j * np.angle(spec)))) ** 2
    expected = (sal - sal.min()) / (sal.max() - sal.min())
    got = spectral_residual_saliency(img, size=8, blur_sigma=0)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_spectral_residual_finds_a_small_object():
    # a bright 8x8 patch on a natural-like (noisy) background
    rng = np.random.default_rng(0)
    img = rng.normal(100, 20, (64, 64, 3)).clip(0, 255).astype(np.uint8)
    img[40:48, 12:20] = 250
    sal = spectral_residual_saliency(img)
    assert sal.shape == (64, 64) and 0 <= sal.min() and sal.max() <= 1
    y, x = np.unravel_index(sal.argmax(), sal.shape)
    assert 38 <= y < 50 and 10 <= x < 22
    assert sal[38:50, 10:22].mean() > 4 * sal.mean()


def test_fusions_by_hand():
    cams = np.array([[[0.9, 0.2, 0.0, 0.6]],
                     [[0.1, 0.7, 0.0, 0.6]]], np.float32)
    sal = np.array([[0.8, 0.9, 0.05, 0.3]], np.float32)
    # oh: salient (>= .5) -> strongest class: px0 class 4 (value 5), px1 class 9 (value 10);
    # px2 non-salient -> 0; px3 in between -> 255
    assert saliency_guided_labels(cams, [4, 9], sal).tolist() == [[5, 10, 0, 255]]
    # min_cam: px1's strongest map 0.7 < 0.8 -> ignored
    assert saliency_guided_labels(cams, [4, 9], sal, min_cam=0.8).tolist() == [[5, 255, 0, 255]]
    # ae_psl: mined > .5: px0 class 4, px1 class 9, px3 both -> ignored; px2 low saliency -> 0
    assert ae_psl_labels(cams, [4, 9], sal, threshold=0.5).tolist() == [[5, 10, 0, 255]]
    # a mined pixel is never background even when its saliency is low
    assert ae_psl_labels(cams, [4, 9], np.zeros((1, 4), np.float32)).tolist() == \
        [[5, 10, 0, 255]]


def test_auc_by_hand():
    assert saliency_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 1, 0, 1], bool)) == 1.0
    # pos {.5, .9}, neg {.5, .2}: tie counts 1/2 -> (0.5 + 1 + 2) / 4
    assert saliency_auc(np.array([0.5, 0.5, 0.2, 0.9]),
                        np.array([1, 0, 0, 1], bool)) == pytest.approx(0.875)
    assert np.isnan(saliency_auc(np.ones(3), np.zeros(3, bool)))


def _results(img_id='a', h=4, w=6):
    return dict(img=np.zeros((h, w, 3), np.uint8), img_id=img_id)


def test_load_saliency_map_bad_inputs(tmp_path, monkeypatch):
    import cv2

    import wsss_mmseg.datasets.saliency as mod
    logs = []
    monkeypatch.setattr(mod, 'print_log', lambda msg, **kw: logs.append(msg))
    t = mod.LoadSaliencyMap(source=dict(type='FolderSaliency', saliency_dir=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match=r"'a'.*" + str(tmp_path)):
        t(_results('a'))
    # wrong size: resized, one warning for the first image only
    cv2.imwrite(str(tmp_path / 'a.png'), np.full((2, 3), 255, np.uint8))
    cv2.imwrite(str(tmp_path / 'b.png'), np.zeros((8, 8), np.uint8))
    out = t(_results('a'))
    assert out['saliency'].shape == (4, 6) and np.allclose(out['saliency'], 1.0)
    assert t(_results('b'))['saliency'].shape == (4, 6)
    assert len(logs) == 1 and 'resizing' in logs[0] and "'a'" in logs[0]
    # corrupt: recorded as a failed image, sample dropped
    (tmp_path / 'c.png').write_bytes(b'not a png at all')
    assert t(_results('c')) is None
    assert list(t.failed) == ['c'] and 'c.png' in t.failed['c']
    assert 'skipping' in logs[-1]
    strict = mod.LoadSaliencyMap(source=dict(type='FolderSaliency', saliency_dir=str(tmp_path)),
                                 on_corrupt='raise')
    with pytest.raises(mod.CorruptSaliencyError, match='c.png'):
        strict(_results('c'))


def test_saliency_guided_labels_transform(tmp_path):
    import wsss_mmseg.datasets.saliency as mod
    from wsss_mmseg.pseudo.io import save_cam_npy
    cams = np.array([[[0.9, 0.2, 0.0, 0.6]], [[0.1, 0.7, 0.0, 0.6]]], np.float32)
    save_cam_npy(tmp_path / 'a.npy', [4, 9], cams)
    results = dict(img=np.zeros((1, 4, 3), np.uint8), img_id='a',
                   saliency=np.array([[0.8, 0.9, 0.05, 0.3]], np.float32))
    out = mod.SaliencyGuidedLabels(cam_dir=str(tmp_path), method='oh')(dict(results))
    assert out['gt_seg_map'].tolist() == [[5, 10, 0, 255]] and out['seg_fields'] == ['gt_seg_map']
    with pytest.raises(KeyError, match='LoadSaliencyMap'):
        mod.SaliencyGuidedLabels(cam_dir=str(tmp_path))(dict(img=results['img'], img_id='a'))
    sr = mod.LoadSaliencyMap(source=dict(type='SpectralResidualSaliency'))
    assert sr(dict(img=np.zeros((5, 7, 3), np.uint8), img_id='z'))['saliency'].shape == (5, 7)
