"""PseudoLabelDataPreProcessor: confidence padded like the labels and published for CGLLoss."""
import numpy as np
import pytest
import torch
from mmengine.structures import PixelData

import wsss_mmseg  # noqa: F401  (compat fixes)
import wsss_mmseg.datasets.pseudo_seg  # noqa: F401  (registers PseudoLabelSegDataset)
import wsss_mmseg.datasets.transforms  # noqa: F401  (registers the transforms)
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS, MODELS, TRANSFORMS
from mmseg.structures import SegDataSample

from tests.helpers.pseudo_labels import conf_of_label, quantize_conf, random_label, write_sample
from wsss_mmseg.models import batch_context
from wsss_mmseg.models.data_preprocessor import PseudoLabelDataPreProcessor

init_default_scope('mmseg')
MEAN_STD = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True)


@pytest.fixture(autouse=True)
def _clear_context():
    batch_context.clear()
    yield
    batch_context.clear()


def _lut():
    """Expected confidence per label value (conf_of_label after 16-bit quantisation)."""
    lut = quantize_conf(conf_of_label(np.arange(256)))
    lut[255] = 0.0  # ignored / padded pixels end with confidence 0
    return lut


def _batch(sizes, seed=0, with_conf=(True, True)):
    rng = np.random.default_rng(seed)
    pack = TRANSFORMS.build(dict(type='PackSegInputsWithConfidence'))
    inputs, samples = [], []
    for (h, w), has in zip(sizes, with_conf):
        label = random_label(rng, h, w)
        results = dict(img=rng.integers(0, 255, (h, w, 3), dtype=np.uint8), gt_seg_map=label,
                       seg_fields=['gt_seg_map'], img_shape=(h, w), ori_shape=(h, w))
        if has:
            results['gt_confidence'] = quantize_conf(conf_of_label(label))
        packed = pack(results)
        inputs.append(packed['inputs'])
        samples.append(packed['data_samples'])
    return dict(inputs=inputs, data_samples=samples)


def test_registered():
    pre = MODELS.build(dict(type='PseudoLabelDataPreProcessor', size=(8, 8), **MEAN_STD))
    assert isinstance(pre, PseudoLabelDataPreProcessor)


@pytest.mark.parametrize('pad_cfg', [dict(size=(40, 48)), dict(size_divisor=16)])
def test_pads_confidence_like_labels_and_publishes(pad_cfg):
    pre = PseudoLabelDataPreProcessor(**pad_cfg, seg_pad_val=255, **MEAN_STD)
    sizes = [(33, 40), (24, 47)]
    data = _batch(sizes)
    originals = [s.gt_confidence.data.clone() for s in data['data_samples']]
    out = pre(data, training=True)
    lut = torch.from_numpy(_lut())
    published = batch_context.get_confidence()
    assert published is not None and published.shape[0] == 2
    for i, sample in enumerate(out['data_samples']):
        label = sample.gt_sem_seg.data[0]
        conf = sample.gt_confidence.data[0]
        assert conf.shape == label.shape == tuple(out['inputs'].shape[-2:])
        h, w = sizes[i]
        assert torch.equal(conf[:h, :w], originals[i][0])
        assert torch.all(conf[h:] == 0) and torch.all(conf[:, w:] == 0)
        assert torch.all(label[h:] == 255) and torch.all(label[:, w:] == 255)
        assert torch.equal(conf, lut[label])  # aligned pixel for pixel, padding included
        assert torch.equal(published[i], conf)


def test_eval_mode_and_batches_without_confidence_clear_the_context():
    pre = PseudoLabelDataPreProcessor(size=(40, 48), **MEAN_STD)
    pre(_batch([(33, 40), (24, 47)]), training=True)
    assert batch_context.get_confidence() is not None
    data = _batch([(32, 32), (32, 32)])
    pre(data, training=False)
    assert batch_context.get_confidence() is None
    assert data['data_samples'][0].gt_confidence.shape == (32, 32)  # untouched in eval
    batch_context.set_confidence(torch.zeros(1, 2, 2))
    pre(_batch([(33, 40), (24, 47)], with_conf=(False, False)), training=True)
    assert batch_context.get_confidence() is None


def test_mixed_batch_is_an_error():
    pre = PseudoLabelDataPreProcessor(size=(40, 48), **MEAN_STD)
    with pytest.raises(ValueError, match='1 of 2 samples'):
        pre(_batch([(33, 40), (24, 47)], with_conf=(True, False)), training=True)


def test_batch_augments_refused():
    with pytest.raises(ValueError, match='batch_augments'):
        PseudoLabelDataPreProcessor(size=(8, 8), batch_augments=[dict(type='Foo')], **MEAN_STD)


def test_misaligned_confidence_is_an_error():
    pre = PseudoLabelDataPreProcessor(size=(40, 48), **MEAN_STD)
    sample = SegDataSample()
    sample.gt_sem_seg = PixelData(data=torch.zeros(1, 30, 30, dtype=torch.long))
    sample.gt_confidence = PixelData(data=torch.ones(1, 29, 30))
    data = dict(inputs=[torch.zeros(3, 30, 30, dtype=torch.uint8)], data_samples=[sample])
    with pytest.raises(ValueError, match='does not pad to gt_sem_seg'):
        pre(data, training=True)


def test_real_transforms_then_preprocessor_keep_alignment(tmp_path):
    rng = np.random.default_rng(3)
    ids = []
    for i, (h, w) in enumerate([(50, 70), (64, 40), (45, 45), (70, 66)]):
        write_sample(tmp_path, f's{i}', rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
                     random_label(rng, h, w))
        ids.append(f's{i}')
    (tmp_path / 'list.txt').write_text('\n'.join(ids) + '\n')
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadPseudoLabel'),
                dict(type='RandomResize', scale=(64, 64), ratio_range=(0.5, 1.5), keep_ratio=True),
                dict(type='RandomCrop', crop_size=(40, 40), cat_max_ratio=0.9),
                dict(type='RandomFlip', prob=0.5), dict(type='RandomRotate', prob=0.5, degree=20),
                dict(type='PackSegInputsWithConfidence')]
    ds = DATASETS.build(dict(type='PseudoLabelSegDataset', data_root=str(tmp_path),
                             ann_file='list.txt', img_suffix='.png',
                             data_prefix=dict(img_path='img', seg_map_path='pseudo/masks'),
                             pipeline=pipeline))
    pre = PseudoLabelDataPreProcessor(size=(48, 48), **MEAN_STD)
    lut = torch.from_numpy(_lut())
    for rep in range(3):
        samples = [ds[i] for i in range(len(ds))]
        data = dict(inputs=[s['inputs'] for s in samples],
                    data_samples=[s['data_samples'] for s in samples])
        out = pre(data, training=True)
        conf = batch_context.get_confidence()
        labels = torch.stack([s.gt_sem_seg.data[0] for s in out['data_samples']])
        assert conf.shape == labels.shape == (4, 48, 48)
        assert (labels == 255).any() and (labels != 255).any()
        assert torch.equal(conf, lut[labels])
