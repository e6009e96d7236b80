"""Gallery selection and thumbnails (wsss_mmseg/report/gallery.py)."""
import random

import numpy as np
import pytest

from wsss_mmseg.report.gallery import (GallerySelector, confidence_image, overlay_mask,
                                       resize_nearest, thumbnail_size)


def _offer(sel, scores):
    for i, s in enumerate(scores):
        sel.add(f'img{i}', s)


def test_small_dataset_shows_everything_worst_first_with_unscored_first():
    sel = GallerySelector(10)
    _offer(sel, [0.5, None, 0.1, 0.9, 0.1])
    # None (empty mask, no GT) sorts first; ties keep the scan order
    assert sel.sections() == [('all', ['img1', 'img2', 'img4', 'img0', 'img3'])]


@pytest.mark.parametrize('n', [11, 57, 500])
def test_large_dataset_sections_match_a_full_sort(n):
    rng = random.Random(n)
    scores = [round(rng.random(), 2) for _ in range(n)]  # many ties
    sel = GallerySelector(10, seed=1)
    _offer(sel, scores)
    sections = dict(sel.sections())
    order = sorted(range(n), key=lambda i: (scores[i], i))  # worst first, earlier first on ties
    assert sections['worst'] == [f'img{i}' for i in order[:5]]
    best = sorted(range(n), key=lambda i: (-scores[i], -i))[:2]
    assert sorted(sections['best']) == sorted(f'img{i}' for i in best)
    assert [scores[int(k[3:])] for k in sections['best']] == sorted(
        (scores[i] for i in best), reverse=True)
    assert dict(sel.sections()) == sections  # asking twice gives the same gallery
    shown = sections['worst'] + sections['best'] + sections['random']
    assert set(shown) <= sel.candidates() and len(sel.candidates()) <= 10 + 5 + 2 + 1
    assert len(sections['random']) == 3 and len(set(shown)) == 10
    assert sel.count == n


def test_random_sample_is_uniform_and_reproducible():
    n, hits = 40, np.zeros(40)
    for seed in range(300):
        sel = GallerySelector(4, seed=seed)
        _offer(sel, [0.5] * n)  # all tied: worst = first 2, best = last 1
        sec = dict(sel.sections())
        assert sec['worst'] == ['img0', 'img1'] and sec['best'] == ['img39']
        for k in sec['random']:
            hits[int(k[3:])] += 1
    assert hits[[0, 1, 39]].sum() == 0
    middle = hits[2:39]
    # 300 draws over 37 images: expected 8.1 each; a 'first images only' bug gives 0s
    assert middle.min() >= 1 and middle.max() <= 22
    a, b = GallerySelector(4, seed=7), GallerySelector(4, seed=7)
    _offer(a, [0.5] * n)
    _offer(b, [0.5] * n)
    assert a.sections() == b.sections()


def test_zero_size_gallery():
    sel = GallerySelector(0)
    _offer(sel, [0.1, 0.2])
    assert all(not keys for _, keys in sel.sections())
    with pytest.raises(ValueError, match='gallery size'):
        GallerySelector(-1)


def test_overlay_mask_by_hand():
    img = np.full((1, 3, 3), 100, np.uint8)
    mask = np.array([[0, 1, 255]], np.uint8)
    out = overlay_mask(img, mask, alpha=0.5)
    # label 0: the photo; label 1: VOC colour (128, 0, 0); 255: white
    assert out.tolist() == [[[100, 100, 100], [114, 50, 50], [178, 178, 178]]]


def test_confidence_image_and_resizing_by_hand():
    conf = np.array([[0.0, 1.0, 0.5]], np.float32)
    out = confidence_image(conf, np.array([[0, 1, 255]], np.uint8))
    # grey = round(255 c); ignored pixel: (128, 0, 0) + grey // 2 = (128+64, 64, 64)
    assert out.tolist() == [[[0, 0, 0], [255, 255, 255], [192, 64, 64]]]
    assert thumbnail_size(375, 500, 192) == (144, 192)
    assert thumbnail_size(10, 20, 192) == (10, 20)  # never enlarged
    lab = np.arange(16).reshape(4, 4)
    # output pixel centres 0.5, 1.5 map to input coordinates 1.0, 3.0
    assert resize_nearest(lab, (2, 2)).tolist() == [[5, 7], [13, 15]]
