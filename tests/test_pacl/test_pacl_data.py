"""PACL training datasets: image-level labels (multi-hot), captions, empty label sets, bad files."""
import json

import numpy as np
import pytest
from mmengine.registry import init_default_scope
from PIL import Image

import wsss_mmseg  # noqa: F401
from wsss_mmseg.datasets.pacl_data import (PACLCaptionDataset, PACLImageLabelDataset, SampleCaption,
                                           load_caption_file, multi_hot)

init_default_scope('mmseg')
PACK = dict(type='PackSegInputs', meta_keys=('img_path', 'ori_shape', 'img_shape', 'img_labels'))


def _write_voc(root, labels):
    (root / 'JPEGImages').mkdir(parents=True)
    (root / 'ImageSets').mkdir()
    for i, name in enumerate(labels):
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(root / 'JPEGImages' / f'{name}.jpg')
    (root / 'ImageSets' / 'train.txt').write_text('\n'.join(labels) + '\n')
    (root / 'labels.json').write_text(json.dumps(labels))
    return dict(type='VOCImageLabels', data_root=str(root), split='ImageSets/train.txt', labels='labels.json',
                gt_dir=None, class_table='voc20')


def test_voc_sample_multi_hot_and_packing(shared_data):
    voc = shared_data / 'voc_sample'
    ds = PACLImageLabelDataset(
        source=dict(type='VOCImageLabels', data_root=str(voc), split='ImageSets/Segmentation/val.txt',
                    labels='cls_labels.json', gt_dir='SegmentationClass'),
        pipeline=[dict(type='LoadImageFromFile'), dict(type='Resize', scale=(64, 64), keep_ratio=False), PACK])
    labels = json.loads((voc / 'cls_labels.json').read_text())['labels']
    assert len(ds) == 60 and ds.metainfo['classes'][0] == 'aeroplane'
    info = ds.get_data_info(0)
    img_id = info['img_id']
    assert sorted(np.flatnonzero(info['img_labels']).tolist()) == sorted(labels[img_id])
    item = ds[0]
    assert item['inputs'].shape == (3, 64, 64)
    assert item['data_samples'].metainfo['img_labels'].shape == (20,)
    assert 'gt_sem_seg' not in item['data_samples']


def test_empty_label_set_modes(tmp_path):
    src = _write_voc(tmp_path / 'voc', {'a': [0, 3], 'b': [], 'c': [19]})
    skipped = PACLImageLabelDataset(source=src, pipeline=[])
    assert [d['img_id'] for d in skipped] == ['a', 'c'] and skipped.num_skipped == 1
    kept = PACLImageLabelDataset(source=src, empty_labels='background', pipeline=[])
    assert len(kept) == 3
    assert kept.get_data_info(1)['img_labels'].sum() == 0      # background-only image: all negatives
    with pytest.raises(ValueError, match="image b .* empty label set"):
        PACLImageLabelDataset(source=src, empty_labels='error', pipeline=[])
    with pytest.raises(ValueError, match='empty_labels must be one of'):
        PACLImageLabelDataset(source=src, empty_labels='drop', pipeline=[])
    only_empty = _write_voc(tmp_path / 'voc2', {'b': []})
    with pytest.raises(ValueError, match='no images with labels'):
        PACLImageLabelDataset(source=only_empty, pipeline=[])


def test_seg_map_dir_for_the_dense_prior(tmp_path):
    src = _write_voc(tmp_path / 'voc', {'a': [0]})
    ds = PACLImageLabelDataset(source=src, seg_map_dir=tmp_path / 'pseudo', conf_dir=tmp_path / 'conf',
                               pipeline=[])
    assert ds.get_data_info(0)['seg_map_path'] == str(tmp_path / 'pseudo' / 'a.png')
    assert ds.get_data_info(0)['conf_path'] == str(tmp_path / 'conf' / 'a.png')


def test_multi_hot():
    assert multi_hot([0, 2], 4).tolist() == [1, 0, 1, 0]
    with pytest.raises(ValueError, match='out of range'):
        multi_hot([4], 4)


def _write_captions(root, *, missing=False):
    (root / 'img').mkdir(parents=True)
    for name in ('x.jpg', 'y.jpg'):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / 'img' / name)
    images = [dict(id=1, file_name='x.jpg'), dict(id=2, file_name='y.jpg'), dict(id=3, file_name='z.jpg')]
    anns = [dict(image_id=1, caption='a cat'), dict(image_id=1, caption='a sleeping cat'),
            dict(image_id=2, caption='a dog')]
    if missing:
        anns.append(dict(image_id=3, caption='nobody has this file'))
    path = root / 'captions.json'
    path.write_text(json.dumps(dict(images=images, annotations=anns)))
    return path


def test_caption_dataset_and_sampling(tmp_path):
    path = _write_captions(tmp_path)
    ds = PACLCaptionDataset(ann_file=str(path), img_dir=str(tmp_path / 'img'),
                            pipeline=[dict(type='LoadImageFromFile'), dict(type='SampleCaption', mode='first'),
                                      dict(type='PackSegInputs', meta_keys=('img_path', 'caption'))])
    assert len(ds) == 2            # z.jpg has no caption and is not needed
    assert ds[0]['data_samples'].metainfo['caption'] == 'a cat'
    assert ds.get_data_info(0)['captions'] == ['a cat', 'a sleeping cat']
    picked = {SampleCaption('random').transform(dict(captions=['a', 'b']))['caption'] for _ in range(50)}
    assert picked == {'a', 'b'}
    with pytest.raises(KeyError, match='captions'):
        SampleCaption().transform(dict(img_path='q.jpg'))


def test_caption_file_errors(tmp_path):
    path = _write_captions(tmp_path, missing=True)
    with pytest.raises(FileNotFoundError, match=r'references 1 missing image.*z\.jpg'):
        load_caption_file(path, tmp_path / 'img')
    with pytest.raises(FileNotFoundError, match='caption file not found'):
        load_caption_file(tmp_path / 'nope.json', tmp_path)
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps(dict(images=[dict(id=1, file_name='x.jpg')],
                                   annotations=[dict(image_id=9, caption='c')])))
    with pytest.raises(ValueError, match='unknown image_id 9'):
        load_caption_file(bad, tmp_path / 'img')
    bad.write_text('{"images": 1}')
    with pytest.raises(ValueError, match="'images' and 'annotations'"):
        load_caption_file(bad, tmp_path / 'img')
