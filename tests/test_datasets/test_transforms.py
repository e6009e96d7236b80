"""LoadPseudoLabel / PackSegInputsWithConfidence: loading, validation, alignment."""
import numpy as np
import pytest
import torch
from PIL import Image

import wsss_mmseg  # noqa: F401  (compat fixes)
from mmcv.transforms import Compose
from mmengine.registry import DefaultScope, init_default_scope
from mmseg.registry import TRANSFORMS

from tests.helpers.pseudo_labels import conf_of_label, quantize_conf, random_label, write_sample
from wsss_mmseg.datasets.transforms import (ALIGN_CHECK_KEY, LoadPseudoLabel,
                                            PackSegInputsWithConfidence, load_confidence_map)
from wsss_mmseg.pseudo.io import write_confidence_png, write_mask_png

init_default_scope('mmseg')


def _lut():
    lut = quantize_conf(conf_of_label(np.arange(256)))
    lut[255] = 0.0
    return lut


def _sample(root, sid='a', h=40, w=52, seed=0):
    rng = np.random.default_rng(seed)
    label = random_label(rng, h, w)
    write_sample(root, sid, rng.integers(0, 255, (h, w, 3), dtype=np.uint8), label)
    return dict(img_path=str(root / 'img' / f'{sid}.png'),
                seg_map_path=str(root / 'pseudo' / 'masks' / f'{sid}.png'),
                conf_path=str(root / 'pseudo' / 'confidence' / f'{sid}.png'),
                seg_fields=[], reduce_zero_label=False, label_map=None), label


def _load(info):
    results = TRANSFORMS.build(dict(type='LoadImageFromFile'))(dict(info))
    return TRANSFORMS.build(dict(type='LoadPseudoLabel'))(results)


def test_registered_and_loads(tmp_path):
    assert isinstance(TRANSFORMS.build(dict(type='LoadPseudoLabel')), LoadPseudoLabel)
    assert isinstance(TRANSFORMS.build(dict(type='PackSegInputsWithConfidence')),
                      PackSegInputsWithConfidence)
    info, label = _sample(tmp_path)
    results = _load(info)
    assert results['gt_seg_map'].dtype == np.uint8
    np.testing.assert_array_equal(results['gt_seg_map'], label)
    assert results['gt_confidence'].dtype == np.float32
    np.testing.assert_array_equal(results['gt_confidence'], quantize_conf(conf_of_label(label)))
    assert results['seg_fields'] == ['gt_seg_map', 'gt_confidence', ALIGN_CHECK_KEY]


def _augment(prob):
    return [
        dict(type='RandomResize', scale=(64, 64), ratio_range=(0.5, 2.0), keep_ratio=True),
        dict(type='RandomCrop', crop_size=(48, 48), cat_max_ratio=0.9),
        dict(type='RandomFlip', prob=prob, direction='horizontal'),
        dict(type='RandomFlip', prob=prob, direction='vertical'),
        dict(type='RandomRotate', prob=prob, degree=30),
        dict(type='Resize', scale=(50, 46), keep_ratio=False),  # (w, h)
        dict(type='Pad', size=(64, 64)),  # mmcv's Pad: pads gt_seg_map only
    ]


@pytest.mark.parametrize('prob', [0.5, 1.0])
@pytest.mark.parametrize('seed', range(4))
def test_alignment_through_mmseg_transforms(tmp_path, seed, prob):
    info, _ = _sample(tmp_path, h=40 + 7 * seed, w=70 - 5 * seed, seed=seed)
    np.random.seed(seed)
    pipeline = Compose([TRANSFORMS.build(t) for t in
                        [dict(type='LoadImageFromFile'), dict(type='LoadPseudoLabel'),
                         *_augment(prob), dict(type='PackSegInputsWithConfidence')]])
    out = pipeline(dict(info))
    sample = out['data_samples']
    label = sample.gt_sem_seg.data[0]
    conf = sample.gt_confidence.data[0]
    assert conf.dtype == torch.float32 and conf.shape == label.shape == (64, 64)
    # confidence is the known function of the label everywhere; padding: label 255, conf 0
    assert torch.equal(conf, torch.from_numpy(_lut())[label])
    assert torch.all(label[46:] == 255) and torch.all(conf[46:] == 0)
    assert torch.all(label[:, 50:] == 255) and torch.all(conf[:, 50:] == 0)
    assert (conf[:46, :50] > 0).any()
    assert sample.metainfo['conf_path'] == info['conf_path']


def test_transform_that_ignores_seg_fields_is_detected(tmp_path):
    info, _ = _sample(tmp_path)
    results = _load(info)
    from mmcv.transforms import RandomFlip as MMCVRandomFlip  # flips gt_seg_map only
    results = MMCVRandomFlip(prob=1.0, direction='horizontal')(results)
    with pytest.raises(ValueError, match='no longer lines up'):
        TRANSFORMS.build(dict(type='PackSegInputsWithConfidence'))(results)


def test_resize_outside_mmseg_scope_is_detected(tmp_path):
    info, _ = _sample(tmp_path)
    results = _load(info)
    with DefaultScope.overwrite_default_scope('mmcv'):
        from mmcv.transforms import TRANSFORMS as MMCV_TRANSFORMS
        resize = MMCV_TRANSFORMS.build(dict(type='RandomResize', scale=(64, 64),
                                            ratio_range=(1.5, 1.5), keep_ratio=True))
    results = resize(results)  # mmcv's Resize: resizes gt_seg_map only
    with pytest.raises(ValueError, match='differ in size'):
        TRANSFORMS.build(dict(type='PackSegInputsWithConfidence'))(results)


def test_pack_zeroes_ignored_pixels_and_clamps():
    label = np.array([[0, 1], [255, 2]], np.uint8)
    conf = np.array([[0.4, 1.0000001], [0.9, 0.2]], np.float32)
    results = dict(img=np.zeros((2, 2, 3), np.uint8), gt_seg_map=label, gt_confidence=conf,
                   seg_fields=['gt_seg_map', 'gt_confidence'], img_shape=(2, 2))
    out = PackSegInputsWithConfidence()(results)
    got = out['data_samples'].gt_confidence.data
    assert got.shape == (1, 2, 2) and got.dtype == torch.float32
    assert torch.equal(got[0], torch.tensor([[0.4, 1.0], [0.0, 0.2]]))


def test_pack_without_confidence_is_plain_pack_seg_inputs():
    results = dict(img=np.zeros((4, 5, 3), np.uint8), gt_seg_map=np.ones((4, 5), np.uint8),
                   seg_fields=['gt_seg_map'], img_shape=(4, 5))
    out = PackSegInputsWithConfidence()(results)
    assert 'gt_confidence' not in out['data_samples']
    assert out['data_samples'].gt_sem_seg.shape == (4, 5)


# ----------------------------------------------------------------- bad input
def test_missing_files_name_the_file(tmp_path):
    info, _ = _sample(tmp_path)
    (tmp_path / 'pseudo' / 'confidence' / 'a.png').unlink()
    with pytest.raises(FileNotFoundError, match='confidence/a.png'):
        _load(info)
    (tmp_path / 'pseudo' / 'masks' / 'a.png').unlink()
    with pytest.raises(FileNotFoundError, match='masks/a.png'):
        _load(info)


def test_size_mismatch(tmp_path):
    info, label = _sample(tmp_path)
    write_confidence_png(info['conf_path'], np.full((40, 50), 0.5))
    with pytest.raises(ValueError, match=r'size mismatch.*confidence .*a\.png is 40x50'):
        _load(info)
    write_mask_png(info['seg_map_path'], label[:, :30])
    with pytest.raises(ValueError, match=r'image .*a\.png is 40x52, mask .*a\.png is 40x30'):
        _load(info)


def test_bad_confidence_values_and_dtypes(tmp_path):
    info, _ = _sample(tmp_path)
    npy = tmp_path / 'pseudo' / 'confidence' / 'a.npy'
    info = dict(info, conf_path=str(npy))
    np.save(npy, np.full((40, 52), 1.5, np.float32))
    with pytest.raises(ValueError, match=r'a\.npy has 2080 value\(s\) outside \[0, 1\]'):
        _load(info)
    conf = np.full((40, 52), 0.5, np.float32)
    conf[0, 0] = np.nan
    np.save(npy, conf)
    with pytest.raises(ValueError, match=r'a\.npy has 1 value'):
        _load(info)
    np.save(npy, np.ones((40, 52), np.int64))
    with pytest.raises(ValueError, match=r'a\.npy has dtype int64'):
        load_confidence_map(npy)
    png8 = tmp_path / 'conf8.png'
    Image.fromarray(np.full((40, 52), 200, np.uint8)).save(png8)
    with pytest.raises(ValueError, match=r'conf8\.png has mode'):
        load_confidence_map(png8)


def test_requires_image_and_rejects_label_remapping(tmp_path):
    info, _ = _sample(tmp_path)
    with pytest.raises(KeyError, match='after LoadImageFromFile'):
        LoadPseudoLabel()(dict(info))
    results = TRANSFORMS.build(dict(type='LoadImageFromFile'))(dict(info, reduce_zero_label=True))
    with pytest.raises(ValueError, match='reduce_zero_label'):
        LoadPseudoLabel()(results)
    results = TRANSFORMS.build(dict(type='LoadImageFromFile'))(dict(info, label_map={1: 2}))
    with pytest.raises(ValueError, match='label_map'):
        LoadPseudoLabel()(results)
    results = TRANSFORMS.build(dict(type='LoadImageFromFile'))(dict(info, conf_path=None))
    with pytest.raises(KeyError, match='conf_path'):
        LoadPseudoLabel()(results)
