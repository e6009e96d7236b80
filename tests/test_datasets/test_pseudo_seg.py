"""PseudoLabelSegDataset: file listing, confidence folder, metainfo, missing files."""
import numpy as np
import pytest

import wsss_mmseg  # noqa: F401  (compat fixes)
import wsss_mmseg.datasets.transforms  # noqa: F401  (registers the transforms)
from mmengine.registry import init_default_scope
from mmseg.datasets import PascalVOCDataset
from mmseg.registry import DATASETS

from tests.helpers.pseudo_labels import quantize_conf, random_label, write_sample
from wsss_mmseg.datasets.pseudo_seg import PseudoLabelSegDataset
from wsss_mmseg.pseudo.io import voc_palette

init_default_scope('mmseg')


def _write(root, n=3, seed=0):
    rng = np.random.default_rng(seed)
    ids = []
    for i in range(n):
        sid = f'2007_{i:06d}'
        write_sample(root, sid, rng.integers(0, 255, (20, 24, 3), dtype=np.uint8),
                     random_label(rng, 20, 24))
        ids.append(sid)
    (root / 'train.txt').write_text('\n'.join(ids) + '\n')
    return ids


def _build(root, **kwargs):
    cfg = dict(type='PseudoLabelSegDataset', data_root=str(root), ann_file='train.txt',
               img_suffix='.png',
               data_prefix=dict(img_path='img', seg_map_path=str(root / 'pseudo' / 'masks')))
    cfg.update(kwargs)
    return DATASETS.build(cfg)


def test_lists_images_masks_and_confidence(tmp_path):
    ids = _write(tmp_path)
    ds = _build(tmp_path)
    assert isinstance(ds, PseudoLabelSegDataset) and len(ds) == 3
    for i, sid in enumerate(ids):
        info = ds.get_data_info(i)
        assert info['img_path'] == str(tmp_path / 'img' / f'{sid}.png')
        assert info['seg_map_path'] == str(tmp_path / 'pseudo' / 'masks' / f'{sid}.png')
        # default: sibling confidence/ folder of the masks folder
        assert info['conf_path'] == str(tmp_path / 'pseudo' / 'confidence' / f'{sid}.png')


def test_default_metainfo_is_voc(tmp_path):
    _write(tmp_path)
    ds = _build(tmp_path)
    assert ds.metainfo['classes'] == PascalVOCDataset.METAINFO['classes']
    assert len(ds.metainfo['classes']) == 21
    assert ds.metainfo['palette'] == PascalVOCDataset.METAINFO['palette']
    assert ds.metainfo['palette'] == voc_palette(21).tolist()


def test_custom_classes_keep_label_values(tmp_path):
    _write(tmp_path)
    ds = _build(tmp_path, metainfo=dict(classes=('background', 'cat', 'dog')))
    assert ds.metainfo['classes'] == ('background', 'cat', 'dog')
    assert ds.metainfo['palette'] == voc_palette(3).tolist()
    assert ds.metainfo['label_map'] is None  # no remapping of pseudo-mask values
    coco = tuple(['background'] + [f'c{i}' for i in range(80)])
    ds = _build(tmp_path, metainfo=dict(classes=coco))
    assert len(ds.metainfo['palette']) == 81 and ds.metainfo['label_map'] is None
    ds = _build(tmp_path, metainfo=dict(classes=('a', 'b'), palette=[[1, 2, 3], [4, 5, 6]]))
    assert ds.metainfo['palette'] == [[1, 2, 3], [4, 5, 6]]


def test_conf_dir_options(tmp_path):
    ids = _write(tmp_path)
    (tmp_path / 'pseudo' / 'confidence').rename(tmp_path / 'conf_elsewhere')
    ds = _build(tmp_path, conf_dir='conf_elsewhere')  # relative to data_root
    assert ds.get_data_info(0)['conf_path'] == str(tmp_path / 'conf_elsewhere' / f'{ids[0]}.png')
    ds = _build(tmp_path, conf_dir=str(tmp_path / 'conf_elsewhere'))  # absolute
    assert ds.get_data_info(1)['conf_path'] == str(tmp_path / 'conf_elsewhere' / f'{ids[1]}.png')
    ds = _build(tmp_path, data_prefix=dict(img_path='img', seg_map_path='pseudo/masks',
                                           conf_path='conf_elsewhere'))
    assert ds.get_data_info(2)['conf_path'] == str(tmp_path / 'conf_elsewhere' / f'{ids[2]}.png')
    assert ds.get_data_info(2)['seg_map_path'] == str(
        tmp_path / 'pseudo' / 'masks' / f'{ids[2]}.png')
    with pytest.raises(ValueError, match='conf_dir'):
        _build(tmp_path, conf_dir='x', data_prefix=dict(img_path='img', seg_map_path='pseudo/masks',
                                                         conf_path='y'))


def test_npy_confidence_suffix(tmp_path):
    ids = _write(tmp_path)
    conf = np.random.default_rng(0).random((20, 24)).astype(np.float32)
    np.save(tmp_path / 'pseudo' / 'confidence' / f'{ids[0]}.npy', conf)
    ds = _build(tmp_path, conf_suffix='.npy', indices=[0],
                pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadPseudoLabel')])
    out = ds[0]
    assert out['conf_path'].endswith(f'{ids[0]}.npy')
    np.testing.assert_array_equal(out['gt_confidence'], conf)


def test_pipeline_loads_label_and_confidence(tmp_path):
    ids = _write(tmp_path)
    ds = _build(tmp_path, pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadPseudoLabel')])
    out = ds[1]
    from PIL import Image
    mask = np.array(Image.open(tmp_path / 'pseudo' / 'masks' / f'{ids[1]}.png'))
    np.testing.assert_array_equal(out['gt_seg_map'], mask)
    assert out['gt_confidence'].dtype == np.float32
    expected = quantize_conf(np.where(mask == 255, 0.5, (mask.astype(float) + 1) / 32))
    np.testing.assert_array_equal(out['gt_confidence'], expected)


def test_missing_files(tmp_path):
    ids = _write(tmp_path)
    (tmp_path / 'pseudo' / 'masks' / f'{ids[0]}.png').unlink()
    (tmp_path / 'pseudo' / 'confidence' / f'{ids[2]}.png').unlink()
    with pytest.raises(FileNotFoundError) as err:
        _build(tmp_path, check_files=True)
    msg = str(err.value)
    assert '2 file(s)' in msg and f'masks/{ids[0]}.png' in msg and f'confidence/{ids[2]}.png' in msg
    # lazily: the transform names the missing file
    ds = _build(tmp_path, pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadPseudoLabel')],
                serialize_data=False, max_refetch=0)
    with pytest.raises(FileNotFoundError, match=f'masks/{ids[0]}.png'):
        ds.prepare_data(0)
    with pytest.raises(FileNotFoundError, match=f'confidence/{ids[2]}.png'):
        ds.prepare_data(2)


def test_bad_configuration(tmp_path):
    _write(tmp_path)
    with pytest.raises(FileNotFoundError, match='nope.txt'):
        _build(tmp_path, ann_file='nope.txt')
    with pytest.raises(FileNotFoundError, match='image folder'):
        _build(tmp_path, data_prefix=dict(img_path='no_img', seg_map_path='pseudo/masks'))
    with pytest.raises(ValueError, match='seg_map_path'):
        _build(tmp_path, data_prefix=dict(img_path='img'))
