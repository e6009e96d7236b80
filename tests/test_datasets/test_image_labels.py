"""Image-level label sources (wsss_mmseg.datasets.image_labels)."""
import csv
import json

import numpy as np
import pytest
from mmseg.registry import DATASETS
from PIL import Image

from wsss_mmseg.datasets import (COCOImageLabels, FolderImageLabels, UnknownClassError,
                                 VOCImageLabels, load_label_file)
from wsss_mmseg.datasets.image_labels import labels_from_mask, safe_relative_path
from wsss_mmseg.text.vocab import class_names


# ------------------------------------------------------------ shared data
def _voc(shared_data, **kw):
    args = dict(data_root=str(shared_data / 'voc_sample'),
                split='ImageSets/Segmentation/val.txt', gt_dir='SegmentationClass')
    args.update(kw)
    return VOCImageLabels(**args)


def test_voc_sample_labels_file_matches_gt_derived(shared_data):
    from_file = _voc(shared_data, labels='cls_labels.json')
    from_gt = _voc(shared_data)
    assert len(from_file) == len(from_gt) == 60
    assert from_file.class_names == class_names('voc20')
    assert list(from_file) == list(from_gt)
    rec = from_file[0]
    assert set(rec) == {'id', 'img_path', 'label_ids', 'gt_path'}
    assert rec['id'] == '2007_001154' and rec['label_ids'] == [15, 17]
    assert rec['img_path'].endswith('JPEGImages/2007_001154.jpg')
    assert rec['gt_path'].endswith('SegmentationClass/2007_001154.png')
    assert from_file.ids[:3] == ['2007_001154', '2007_001288', '2007_001408']


def test_voc_built_from_registry(shared_data):
    ds = DATASETS.build(dict(type='VOCImageLabels', data_root=str(shared_data / 'voc_sample'),
                             split='ImageSets/Segmentation/val.txt',
                             labels='cls_labels.json', gt_dir='SegmentationClass'))
    assert isinstance(ds, VOCImageLabels) and len(ds) == 60


def test_voc_label_file_formats_agree(shared_data, tmp_path):
    labels = json.loads((shared_data / 'voc_sample' / 'cls_labels.json').read_text())['labels']
    # plain JSON {id: [...]}
    (tmp_path / 'plain.json').write_text(json.dumps(labels))
    # CLIP-ES text list
    (tmp_path / 'list.txt').write_text(
        '# id idx...\n' + ''.join(f'{k} {" ".join(map(str, v))}\n' for k, v in labels.items()))
    # IRN cls_labels.npy: integer keys (2007_001154 -> 2007001154), 20-dim multi-hot
    irn = {}
    for k, v in labels.items():
        hot = np.zeros(20, np.float32)
        hot[v] = 1
        irn[int(k.replace('_', ''))] = hot
    np.save(tmp_path / 'cls_labels.npy', irn, allow_pickle=True)
    ref = _voc(shared_data, labels='cls_labels.json')
    for name in ('plain.json', 'list.txt', 'cls_labels.npy'):
        ds = _voc(shared_data, labels=str(tmp_path / name))
        got = [sorted(r['label_ids']) for r in ds]
        assert got == [sorted(r['label_ids']) for r in ref], name


def test_voc_gt_dir_absent_means_no_gt(shared_data):
    ds = _voc(shared_data, labels='cls_labels.json', gt_dir='SegmentationClassAug')
    assert all(r['gt_path'] is None for r in ds)
    with pytest.raises(FileNotFoundError, match='SegmentationClassAug'):
        _voc(shared_data, gt_dir='SegmentationClassAug')  # nothing to derive labels from


def test_coco_sample_instances_match_labels_file(shared_data):
    root = shared_data / 'coco_sample'
    inst = COCOImageLabels(str(root), ann_file='annotations/instances_subset.json',
                           img_dir='images', gt_dir='SegmentationClass')
    listed = COCOImageLabels(str(root), ann_file='cls_labels.json', img_dir='images',
                             gt_dir='SegmentationClass', split='image_list.txt')
    ref = json.loads((root / 'cls_labels.json').read_text())
    assert len(inst) == 20 and inst.num_classes == 80
    assert inst.class_names == ref['class_names']
    assert listed.class_names == class_names('coco80')
    by_id = {r['id']: r for r in inst}
    for r in listed:
        assert by_id[r['id']] == r
        assert r['label_ids'] == ref['labels'][r['id']]
        assert r['gt_path'] is not None and r['img_path'].endswith(r['id'] + '.jpg')
    # the GT masks agree with the labels except crowd regions (255)
    mask = np.asarray(Image.open(by_id['000000022275']['gt_path']))
    assert set(labels_from_mask(mask)) <= set(by_id['000000022275']['label_ids'])


def _instances(tmp_path):
    data = dict(
        images=[dict(id=1, file_name='a.jpg'), dict(id=2, file_name='sub/b.jpg'),
                dict(id=3, file_name='c.jpg')],
        annotations=[dict(id=10, image_id=1, category_id=18, iscrowd=0),
                     dict(id=11, image_id=1, category_id=1, iscrowd=1),
                     dict(id=12, image_id=2, category_id=90, iscrowd=0)],
        categories=[dict(id=90, name='toothbrush'), dict(id=1, name='person'),
                    dict(id=18, name='dog')])
    (tmp_path / 'inst.json').write_text(json.dumps(data))
    return data


def test_coco_instances_contiguous_indices_crowd_and_unlabeled(tmp_path):
    _instances(tmp_path)
    ds = COCOImageLabels(str(tmp_path), ann_file='inst.json', img_dir='imgs')
    assert ds.class_names == ['person', 'dog', 'toothbrush']  # sorted by category id
    assert [r['id'] for r in ds] == ['a', 'sub/b']
    assert ds[0]['label_ids'] == [0, 1] and ds[1]['label_ids'] == [2]
    assert ds.num_dropped_unlabeled == 1
    assert ds[1]['img_path'] == str(tmp_path / 'imgs' / 'sub' / 'b.jpg')
    no_crowd = COCOImageLabels(str(tmp_path), ann_file='inst.json', img_dir='imgs',
                               include_crowd=False, drop_unlabeled=False)
    assert [r['label_ids'] for r in no_crowd] == [[1], [2], []]


def test_coco_refuses_escaping_file_names(tmp_path):
    data = _instances(tmp_path)
    data['images'][0]['file_name'] = '../../etc/passwd.jpg'
    (tmp_path / 'inst.json').write_text(json.dumps(data))
    with pytest.raises(ValueError, match='leaves the root'):
        COCOImageLabels(str(tmp_path), ann_file='inst.json', img_dir='imgs')


# ----------------------------------------------------- split / label files
def _voc_tree(tmp_path, split_lines, labels_text='a 1\nb 2\nc 3\n'):
    (tmp_path / 'JPEGImages').mkdir(exist_ok=True)
    (tmp_path / 'split.txt').write_text('\n'.join(split_lines) + '\n')
    (tmp_path / 'labels.txt').write_text(labels_text)
    return dict(data_root=str(tmp_path), split='split.txt', labels='labels.txt', gt_dir=None)


def test_split_with_relative_paths(tmp_path):
    ds = VOCImageLabels(**_voc_tree(tmp_path, ['JPEGImages/a.jpg', 'b', '  c  ', '', '# x']))
    assert ds.ids == ['a', 'b', 'c']
    assert ds[0]['img_path'] == str(tmp_path / 'JPEGImages' / 'a.jpg')
    assert ds[1]['label_ids'] == [2]


@pytest.mark.parametrize('line, msg', [
    ('/JPEGImages/a.jpg', 'absolute path'),
    ('../outside/a.jpg', 'leaves the root'),
    ('JPEGImages/../../a.jpg', 'leaves the root'),
])
def test_split_refuses_unsafe_paths(tmp_path, line, msg):
    with pytest.raises(ValueError, match=msg) as info:
        VOCImageLabels(**_voc_tree(tmp_path, ['b', line]))
    assert 'split.txt:2' in str(info.value)


def test_duplicate_ids_are_reported(tmp_path):
    with pytest.raises(ValueError, match=r"duplicate image id 'b'.*split.txt:1.*split.txt:3"):
        VOCImageLabels(**_voc_tree(tmp_path, ['b', 'a', 'b']))
    with pytest.raises(ValueError, match='duplicate id .a. on lines 1 and 3'):
        load_label_file_text(tmp_path, 'a 1\nb 2\na 3\n')
    (tmp_path / 'dup.json').write_text('{"a": [1], "a": [2]}')
    with pytest.raises(ValueError, match="duplicate key 'a'"):
        load_label_file(tmp_path / 'dup.json')


def load_label_file_text(tmp_path, text):
    (tmp_path / 'l.txt').write_text(text)
    return load_label_file(tmp_path / 'l.txt')


def test_label_file_errors(tmp_path):
    with pytest.raises(KeyError, match="'zz' has no entry"):
        VOCImageLabels(**_voc_tree(tmp_path, ['a', 'zz']))
    with pytest.raises(ValueError, match=r'l.txt:2'):
        load_label_file_text(tmp_path, 'a 1\nb dog\n')
    (tmp_path / 'bad.json').write_text('{"a": [1.5]}')
    with pytest.raises(ValueError, match='not an integer'):
        load_label_file(tmp_path / 'bad.json')
    with pytest.raises(FileNotFoundError, match='missing.json'):
        load_label_file(tmp_path / 'missing.json')
    assert load_label_file_text(tmp_path, 'a 3 1 3\nb\n') == {'a': [3, 1], 'b': []}


def test_labels_from_gt_missing_mask_raises_on_access(tmp_path):
    (tmp_path / 'gt').mkdir()
    Image.fromarray(np.array([[0, 3], [255, 15]], np.uint8)).save(tmp_path / 'gt' / 'a.png')
    (tmp_path / 'split.txt').write_text('a\nb\n')
    ds = VOCImageLabels(str(tmp_path), split='split.txt', gt_dir='gt')
    assert ds[0]['label_ids'] == [2, 14]
    with pytest.raises(FileNotFoundError, match="'b'"):
        ds[1]
    assert ds.gt_items() == [dict(id='a', gt_path=str(tmp_path / 'gt' / 'a.png')),
                             dict(id='b', gt_path=None)]


def test_safe_relative_path():
    assert safe_relative_path('a/./b.jpg', root='/r', where='w') == 'a/b.jpg'
    assert safe_relative_path('a\\b.jpg', root='/r', where='w') == 'a/b.jpg'
    for bad in ('/x', 'C:/x', '\\x', '..', 'a/../../b', '.'):
        with pytest.raises(ValueError, match='w'):
            safe_relative_path(bad, root='/r', where='w')


# ------------------------------------------------------------------ folder
def _images(folder, names):
    for n in names:
        p = folder / n
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new('RGB', (8, 6), (10, 20, 30)).save(p)


def test_folder_json_names_to_indices(tmp_path):
    _images(tmp_path / 'img', ['a.jpg', 'sub/b.png', 'c.jpg', 'unlisted.jpg'])
    (tmp_path / 'labels.json').write_text(json.dumps({
        'a.jpg': ['dog', 'Person'], 'sub/b': 'cat;sofa', 'c.jpg': ['  TVmonitor ']}))
    ds = FolderImageLabels(img_dir=str(tmp_path / 'img'), labels=str(tmp_path / 'labels.json'),
                           class_table='voc20')
    names = class_names('voc20')
    assert ds.ids == ['a', 'sub/b', 'c']
    assert ds[0]['label_ids'] == [names.index('dog'), names.index('person')]
    assert ds[1]['label_ids'] == [names.index('cat'), names.index('sofa')]
    assert ds[1]['img_path'] == str(tmp_path / 'img' / 'sub' / 'b.png')
    assert ds[2]['label_ids'] == [names.index('tvmonitor')]
    assert ds[0]['gt_path'] is None


def test_folder_csv_with_custom_classes(tmp_path):
    _images(tmp_path / 'img', ['x.jpg', 'y.jpg', 'z.jpg'])
    with open(tmp_path / 'labels.csv', 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['image', 'labels'])
        w.writerow(['x.jpg', 'red car|Tree'])
        w.writerow(['y.jpg', 'tree;red  car'])
        w.writerow(['z.jpg', ''])
    ds = DATASETS.build(dict(type='FolderImageLabels', img_dir='img', labels='labels.csv',
                             classes=['tree', 'red car', 'sky, blue'], data_root=str(tmp_path)))
    assert [r['label_ids'] for r in ds] == [[1, 0], [0, 1], []]
    assert ds.class_names == ['tree', 'red car', 'sky, blue']


def test_folder_unknown_class_name_error(tmp_path):
    _images(tmp_path / 'img', ['a.jpg', 'b.jpg'])
    (tmp_path / 'labels.json').write_text(json.dumps({'a.jpg': ['dog'], 'b.jpg': ['dgo', 'cat']}))
    with pytest.raises(UnknownClassError) as info:
        FolderImageLabels(img_dir=str(tmp_path / 'img'), labels=str(tmp_path / 'labels.json'),
                          class_table='voc20')
    msg = str(info.value)
    assert str(tmp_path / 'labels.json') in msg
    assert "'b.jpg'" in msg and "'dgo'" in msg and "'dog'" in msg and 'voc20' in msg
    assert isinstance(info.value, KeyError)


def test_folder_format_errors(tmp_path):
    _images(tmp_path / 'img', ['a.jpg', 'a.png'])
    lab = tmp_path / 'l.csv'
    lab.write_text('file,classes\na.jpg,dog\n')
    kw = dict(img_dir=str(tmp_path / 'img'), class_table='voc20')
    with pytest.raises(ValueError, match='header'):
        FolderImageLabels(labels=str(lab), **kw)
    lab.write_text('image,labels\na.jpg,dog,cat\n')
    with pytest.raises(ValueError, match=r'l.csv:2.*2 columns'):
        FolderImageLabels(labels=str(lab), **kw)
    (tmp_path / 'l.json').write_text(json.dumps({'a': ['dog']}))
    with pytest.raises(ValueError, match='matches several images'):
        FolderImageLabels(labels=str(tmp_path / 'l.json'), **kw)
    (tmp_path / 'l.json').write_text(json.dumps({'/etc/a.jpg': ['dog']}))
    with pytest.raises(ValueError, match='absolute'):
        FolderImageLabels(labels=str(tmp_path / 'l.json'), **kw)
    (tmp_path / 'l.json').write_text(json.dumps({'a.jpg': ['dog'], 'a.png': ['cat']}))
    with pytest.raises(ValueError, match="duplicate image id 'a'"):
        FolderImageLabels(labels=str(tmp_path / 'l.json'), **kw)
    (tmp_path / 'l.txt').write_text('a.jpg dog\n')
    with pytest.raises(ValueError, match='.json or .csv'):
        FolderImageLabels(labels=str(tmp_path / 'l.txt'), **kw)
    with pytest.raises(ValueError, match='class_table'):
        FolderImageLabels(img_dir=str(tmp_path / 'img'), labels=str(tmp_path / 'l.json'))
    with pytest.raises(ValueError, match='--cfg-options'):
        FolderImageLabels(img_dir=None, labels=None, class_table='voc20')
    with pytest.raises(FileNotFoundError, match='nowhere'):
        FolderImageLabels(img_dir=str(tmp_path / 'nowhere'), labels=str(lab), class_table='voc20')


def test_folder_missing_image_is_a_record_not_an_error(tmp_path):
    _images(tmp_path / 'img', ['a.jpg'])
    (tmp_path / 'l.json').write_text(json.dumps({'a.jpg': ['dog'], 'gone.jpg': ['cat']}))
    ds = FolderImageLabels(img_dir=str(tmp_path / 'img'), labels=str(tmp_path / 'l.json'),
                           class_table='voc20')
    assert ds[1]['img_path'] == str(tmp_path / 'img' / 'gone.jpg')  # the job reports it


# ------------------------------------- COCO spellings, BOM, NFC (#17 item 4, #16 item 7)
def test_folder_csv_with_official_coco_names_and_bom(tmp_path):
    """A CSV written by Excel (UTF-8 BOM) with COCO's own names maps onto coco80's CLIP-ES spellings."""
    _images(tmp_path / 'img', ['a.jpg', 'b.jpg'])
    (tmp_path / 'labels.csv').write_bytes(
        b'\xef\xbb\xbfimage,labels\r\na.jpg,couch|tv|person\r\nb.jpg,motorcycle;potted plant;dining table;airplane\r\n')
    ds = FolderImageLabels(img_dir=str(tmp_path / 'img'), labels=str(tmp_path / 'labels.csv'),
                           class_table='coco80')
    # COCO-80 contiguous indices, category-id order: person 0, airplane 4, motorcycle 3,
    # couch 57, potted plant 58, dining table 60, tv 62
    assert [r['label_ids'] for r in ds] == [[57, 62, 0], [3, 58, 60, 4]]


def test_voc_spellings_find_explicit_coco_classes(tmp_path):
    """Explicit classes in COCO spelling (as an instances JSON gives them) are found by VOC spellings."""
    _images(tmp_path / 'img', ['a.jpg'])
    (tmp_path / 'labels.json').write_text(json.dumps({'a.jpg': ['sofa', 'tvmonitor']}))
    ds = FolderImageLabels(img_dir=str(tmp_path / 'img'), labels=str(tmp_path / 'labels.json'),
                           classes=['person', 'couch', 'tv'])
    assert ds[0]['label_ids'] == [1, 2]


def test_bom_in_split_list_and_txt_labels(tmp_path):
    """Before: the BOM became part of the first id ('\\ufeffa' has no entry / unknown image)."""
    (tmp_path / 'JPEGImages').mkdir()
    (tmp_path / 'split.txt').write_bytes(b'\xef\xbb\xbfa\r\nb\r\n')
    (tmp_path / 'labels.txt').write_bytes(b'\xef\xbb\xbfa 1 4\r\nb 2\r\n')
    ds = VOCImageLabels(data_root=str(tmp_path), split='split.txt', labels='labels.txt', gt_dir=None)
    assert ds.ids == ['a', 'b']
    assert [r['label_ids'] for r in ds] == [[1, 4], [2]]
    (tmp_path / 'labels.json').write_bytes(b'\xef\xbb\xbf{"a": [3], "b": [0]}')
    assert load_label_file(tmp_path / 'labels.json') == {'a': [3], 'b': [0]}


def test_folder_names_compared_after_nfc(tmp_path):
    _images(tmp_path / 'img', ['a.jpg'])
    (tmp_path / 'labels.json').write_text(json.dumps({'a.jpg': ['cafe\u0301', 'Cre\u0300me']}),
                                          encoding='utf-8')
    ds = FolderImageLabels(img_dir=str(tmp_path / 'img'), labels=str(tmp_path / 'labels.json'),
                           classes=['tea', 'caf\u00e9', 'cr\u00e8me'])
    assert ds[0]['label_ids'] == [1, 2]
