"""LoadConfidentRegions: AffinityNet targets from a saved CAM file (classic_wsss.md, SEAM row:
la_crf 4.0 / ha_crf 24.0)."""
from __future__ import annotations

import numpy as np
import pytest

from wsss_mmseg.datasets.affinity_labels import LoadConfidentRegions
from wsss_mmseg.pseudo.io import save_cam_npy


def test_labels_from_a_saved_cam_file(tmp_path):
    cams = np.array([[[0.9, 0.5, 0.1, 0.0, 0.15]],
                     [[0.0, 0.2, 0.3, 0.05, 0.0]]], np.float32)
    save_cam_npy(tmp_path / 'img1.npy', [2, 6], cams)
    t = LoadConfidentRegions(cam_dir=str(tmp_path), crf=False, cache=True)
    results = dict(img=np.zeros((1, 5, 3), np.uint8), img_id='img1', seg_fields=[])
    out = t(results)
    # see test_affinity_random_walk.test_confident_regions_on_a_toy_cam for the hand values
    assert out['gt_seg_map'].tolist() == [[3, 3, 7, 0, 255]]
    assert out['seg_fields'] == ['gt_seg_map']
    (tmp_path / 'img1.npy').unlink()  # cached: no second read
    again = t(dict(img=np.zeros((1, 5, 3), np.uint8), img_id='img1'))
    assert again['gt_seg_map'].tolist() == [[3, 3, 7, 0, 255]]


def test_bad_inputs_name_the_image_and_folder(tmp_path):
    t = LoadConfidentRegions(cam_dir=str(tmp_path / 'cams'), crf=False)
    with pytest.raises(FileNotFoundError, match=r"'img9'.*cams"):
        t(dict(img=np.zeros((2, 2, 3), np.uint8), img_id='img9'))
    (tmp_path / 'cams').mkdir()
    save_cam_npy(tmp_path / 'cams' / 'img9.npy', [0], np.zeros((1, 3, 3), np.float32))
    with pytest.raises(ValueError, match='img9.npy.*right after'):
        t(dict(img=np.zeros((2, 2, 3), np.uint8), img_id='img9'))
    with pytest.raises(ValueError, match='la < ha'):
        LoadConfidentRegions(cam_dir='x', la=24, ha=4)
