"""MultiLabelClassifier (+ SEAM, MDC), the label dataset/packing, metric and generator errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from mmseg.registry import DATASETS, MODELS, TRANSFORMS
from mmseg.structures import SegDataSample

from tests.test_classic.tiny import tiny_classifier
from wsss_mmseg.classic.mixup import multi_hot


def _batch(n=2, num_classes=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = [torch.randint(0, 256, (3, 64, 64), generator=g, dtype=torch.uint8)
              for _ in range(n)]
    samples = []
    for i in range(n):
        s = SegDataSample()
        s.gt_multilabel = multi_hot([i % num_classes, (i + 3) % num_classes], num_classes)
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


@pytest.mark.parametrize('variant', ['seam', 'mdc'])
def test_classifier_losses_predict_and_cams(variant):
    torch.manual_seed(0)
    if variant == 'seam':
        cfg = tiny_classifier(equivariance=dict(type='SEAMLoss', scale=0.5, loss_weight=1.0))
    else:
        cfg = tiny_classifier(head=dict(type='MDCHead', in_channels=64, num_classes=20,
                                        dilations=(1, 3, 6, 9)))
    model = MODELS.build(cfg)
    data = model.data_preprocessor(_batch(), training=True)
    losses = model.loss(data['inputs'], data['data_samples'])
    keys = {'loss_cls', 'loss_cls_scaled', 'loss_er'} if variant == 'seam' else {'loss_cls'}
    assert set(losses) == keys
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    data = model.data_preprocessor(_batch(), training=False)
    out = model.predict(data['inputs'], data['data_samples'])
    scores = out[0].pred_multilabel_score
    assert scores.shape == (20,) and ((0 <= scores) & (scores <= 1)).all()
    cams = model.encode_decode(data['inputs'])
    assert cams.shape == (2, 20, 64, 64) and cams.min() >= 0 and cams.max() <= 1
    assert model._forward(data['inputs']).shape == (2, 20)


def test_missing_label_vector_is_an_error():
    model = MODELS.build(tiny_classifier())
    data = model.data_preprocessor(_batch(), training=True)
    del data['data_samples'][1].gt_multilabel
    with pytest.raises(KeyError, match='gt_multilabel'):
        model.loss(data['inputs'], data['data_samples'])


def test_label_dataset_and_packing(shared_data, tmp_path):
    voc = shared_data / 'voc_sample'
    split = tmp_path / 'split.txt'
    split.write_text('2007_001154\n2007_001408\n')
    ds = DATASETS.build(dict(
        type='ImageLevelLabelDataset',
        source=dict(type='VOCImageLabels', data_root=str(voc), split=str(split),
                    labels='cls_labels.json', gt_dir=None),
        pipeline=[dict(type='LoadImageFromFile'), dict(type='Resize', scale=(32, 32),
                                                       keep_ratio=False),
                  dict(type='PackMultiLabelInputs')]))
    assert len(ds) == 2 and ds.metainfo['classes'][0] == 'aeroplane'
    item = ds[1]
    assert item['inputs'].shape == (3, 32, 32)
    vec = item['data_samples'].gt_multilabel
    assert vec.shape == (20,) and set(torch.nonzero(vec).flatten().tolist()) == {4, 14, 15}
    assert item['data_samples'].metainfo['img_id'] == '2007_001408'
    with pytest.raises(KeyError, match='label_ids'):
        TRANSFORMS.build(dict(type='PackMultiLabelInputs'))(dict(img=np.zeros((4, 4, 3))))
    with pytest.raises(ValueError, match='source'):
        DATASETS.build(dict(type='ImageLevelLabelDataset', source='voc'))


def test_erase_regions_transform(tmp_path):
    from PIL import Image
    t = TRANSFORMS.build(dict(type='EraseRegions', erase_dir=str(tmp_path), fill=(5, 6, 7)))
    mask = np.zeros((6, 8), np.uint8)
    mask[2:4, 1:3] = 1
    Image.fromarray(mask).save(tmp_path / 'a.png')
    img = np.full((6, 8, 3), 100, np.uint8)
    out = t(dict(img=img.copy(), img_id='a'))
    assert (out['img'][mask == 1] == [5, 6, 7]).all() and (out['img'][mask == 0] == 100).all()
    with pytest.raises(FileNotFoundError, match='b.png'):
        t(dict(img=img.copy(), img_id='b'))
    with pytest.raises(ValueError, match='shape'):
        t(dict(img=np.zeros((3, 3, 3), np.uint8), img_id='a'))
    noop = TRANSFORMS.build(dict(type='EraseRegions'))
    assert np.array_equal(noop(dict(img=img.copy()))['img'], img)


def test_multilabel_metric_through_evaluator():
    from mmengine.evaluator import Evaluator
    ev = Evaluator(dict(type='MultiLabelMetric', thr=0.5))
    samples = []
    for score, label in (([0.9, 0.2], [1, 0]), ([0.3, 0.8], [0, 1]), ([0.6, 0.1], [0, 1])):
        s = SegDataSample()
        s.pred_multilabel_score = torch.tensor(score)
        s.gt_multilabel = torch.tensor(label, dtype=torch.float32)
        samples.append(s)
    ev.process(samples)
    res = ev.evaluate(3)
    # class 0: AP 1; class 1: positives ranked 1st and 3rd -> (1 + 2/3) / 2
    assert res['multilabel/mAP'] == pytest.approx(100 * (1 + (1 + 2 / 3) / 2) / 2)
    assert set(res) >= {'multilabel/F1', 'multilabel/precision', 'multilabel/recall'}
    bad = Evaluator(dict(type='MultiLabelMetric'))
    with pytest.raises(KeyError, match='pred_multilabel_score'):
        bad.process([SegDataSample()])


def test_generator_argument_errors(tmp_path):
    from wsss_mmseg.models.classic import ClassifierCAMGenerator
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        ClassifierCAMGenerator(checkpoint=str(tmp_path / 'nope.pth'), model=tiny_classifier())
    with pytest.raises(ValueError, match='exactly one'):
        ClassifierCAMGenerator(checkpoint='x.pth')
    with pytest.raises(ValueError, match='target_layer'):
        ClassifierCAMGenerator(checkpoint='x.pth', model=tiny_classifier(), method='gradcam')
    model = MODELS.build(tiny_classifier(num_classes=3))
    ckpt = tmp_path / 'm.pth'
    torch.save(dict(state_dict=model.state_dict(), meta={}), ckpt)
    with pytest.raises(ValueError, match='3 classes'):
        ClassifierCAMGenerator(checkpoint=str(ckpt), model=tiny_classifier(num_classes=3),
                               class_table='voc20', device='cpu')
    gen = ClassifierCAMGenerator(checkpoint=[str(ckpt), str(ckpt)],
                                 model=tiny_classifier(num_classes=3), classes=['a', 'b', 'c'],
                                 method='gradcam', target_layer='backbone.layer4', device='cpu',
                                 scales=(1.0, 0.5))
    img = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    res = gen.generate_image(img, [2, 0])
    assert res['keys'].tolist() == [2, 0] and res['cam'].shape == (2, 40, 50)
    assert res['cam'].dtype == np.float32 and res['cam_refined'] is None
    again = gen.generate_image(img, [2, 0])
    assert again['cam'].tobytes() == res['cam'].tobytes()
    with pytest.raises(ValueError, match='out of range'):
        gen.generate_image(img, [3])
    with pytest.raises(ValueError, match='uint8'):
        gen.generate_image(img.astype(np.float32), [0])
