"""Tests of the shipped text vocabulary (JSON data) and its loaders."""
import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wsss_mmseg.text import vocab
from wsss_mmseg.text.vocab import (background_words, class_names, list_tables, load_name_file,
                                   resolve_alias, resolve_classes, synonyms, table_info, templates)

REPO = Path(__file__).resolve().parents[2]

VOC20 = ['aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
         'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa',
         'train', 'tvmonitor']


@pytest.mark.parametrize('table,length', [
    ('voc20', 20), ('voc21', 21), ('coco80', 80), ('context59', 59), ('context60', 60),
    ('coco_stuff171', 171), ('ade150', 150), ('cityscapes19', 19), ('voc20_readable', 20),
    ('context59_readable', 59), ('coco_stuff171_readable', 171), ('coco80_readable', 80)])
def test_table_lengths(table, length):
    names = class_names(table)
    assert len(names) == length
    assert len({' '.join(n.split()).lower() for n in names}) == length


def test_voc_tables_exact():
    assert class_names('voc20') == VOC20
    assert class_names('voc21') == ['background'] + VOC20
    readable = class_names('voc20_readable')
    assert readable[0] == 'airplane' and readable[-1] == 'tv monitor'
    assert readable[10] == 'dining table' and readable[15] == 'potted plant'
    # readable differs from the XML names only in the multi-word spellings
    assert sum(a != b for a, b in zip(readable, VOC20)) == 4


def test_coco80_clip_es_order_and_spellings():
    coco = class_names('coco80')
    official = class_names('coco80_readable')
    assert coco[:5] == ['person', 'bicycle', 'car', 'motorbike', 'aeroplane']
    assert coco[-1] == 'toothbrush' and coco[31] == 'snowboard' and coco[78] == 'hair drier'
    diff = {b: a for a, b in zip(coco, official) if a != b}
    assert diff == {'motorcycle': 'motorbike', 'airplane': 'aeroplane', 'couch': 'sofa',
                    'potted plant': 'pottedplant', 'dining table': 'diningtable',
                    'tv': 'tvmonitor'}
    assert official == class_names('coco_stuff171')[:80]


def test_spot_checks_other_tables():
    assert class_names('cityscapes19')[:3] == ['road', 'sidewalk', 'building']
    assert class_names('cityscapes19')[-1] == 'bicycle'
    ade = class_names('ade150')
    assert ade[0] == 'wall' and ade[7] == 'bed ' and ade[-1] == 'flag'
    assert class_names('context59')[0] == 'aeroplane' and class_names('context59')[-1] == 'wood'
    assert class_names('context60')[0] == 'background'
    assert class_names('context60')[1:] == class_names('context59')
    stuff = class_names('coco_stuff171')
    assert stuff[80] == 'banner' and stuff[-1] == 'wood' and 'wall-brick' in stuff
    assert class_names('coco_stuff171_readable')[stuff.index('wall-brick')] == 'brick wall'
    assert class_names('context59_readable')[54] == 'tv monitor'


def _mmseg_metainfo_classes():
    spec = importlib.util.find_spec('mmseg')
    if spec is None or not spec.submodule_search_locations:
        pytest.skip('mmseg absent')
    root = Path(list(spec.submodule_search_locations)[0]) / 'datasets'
    out = {}
    for fn, cls in [('voc.py', 'PascalVOCDataset'), ('pascal_context.py', 'PascalContextDataset59'),
                    ('pascal_context.py', 'PascalContextDataset'),
                    ('coco_stuff.py', 'COCOStuffDataset'), ('ade.py', 'ADE20KDataset'),
                    ('cityscapes.py', 'CityscapesDataset')]:
        tree = ast.parse((root / fn).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name == cls:
                for st in node.body:
                    target = getattr(st.targets[0], 'id', '') if isinstance(st, ast.Assign) else ''
                    if target == 'METAINFO':
                        for kw in st.value.keywords:
                            if kw.arg == 'classes':
                                out[cls] = list(ast.literal_eval(kw.value))
    return out


def test_tables_equal_installed_mmseg_metainfo():
    mm = _mmseg_metainfo_classes()
    assert class_names('voc21') == mm['PascalVOCDataset']
    assert class_names('context59') == mm['PascalContextDataset59']
    assert class_names('context60') == mm['PascalContextDataset']
    assert class_names('coco_stuff171') == mm['COCOStuffDataset']
    assert class_names('ade150') == mm['ADE20KDataset']
    assert class_names('cityscapes19') == mm['CityscapesDataset']


def test_clip_es_synonyms():
    voc = synonyms('clip_es_voc')
    assert voc == {'bird': 'bird avian', 'chair': 'chair seat',
                   'person': 'person with clothes,people,human', 'tvmonitor': 'tvmonitor screen'}
    official = synonyms('clip_es_coco_official')
    assert len(official) == 13
    assert official['snowboard'] == 'sknowboard'
    assert official['hair drier'] == 'hairdrier,blowdrier'
    assert official['baseball glove'] == 'glove' and official['tie'] == 'necktie'
    fixed = synonyms('clip_es_coco')
    assert 'snowboard' not in fixed
    assert {k: v for k, v in official.items() if k != 'snowboard'} == fixed
    for name in ('clip_es_coco_official', 'clip_es_coco'):
        assert set(synonyms(name)) <= set(class_names('coco80'))
    assert set(voc) <= set(VOC20)
    assert 'sknowboard' in table_info('clip_es_coco_official', kind='synonyms')['note']


def test_synonym_and_background_aliases():
    assert resolve_alias('clip_es', kind='synonyms', table='voc21') == 'clip_es_voc'
    assert resolve_alias('clip_es', kind='synonyms', table='coco80') == 'clip_es_coco_official'
    assert resolve_alias('clip_es', kind='background', table='coco80') == 'clip_es_coco'
    assert resolve_alias('clip_es_voc', kind='synonyms', table=None) == 'clip_es_voc'
    with pytest.raises(KeyError, match='ade150'):
        resolve_alias('clip_es', kind='synonyms', table='ade150')


def test_background_words():
    voc = background_words('clip_es_voc')
    assert len(voc) == 25
    assert voc[:7] == ['ground', 'land', 'grass', 'tree', 'building', 'wall', 'sky']
    assert voc[13:15] == ['keyboard', 'helmet'] and voc[-1] == 'sign'
    coco = background_words('clip_es_coco')
    assert len(coco) == 23
    assert coco == [w for w in voc if w not in ('keyboard', 'sign')]
    assert background_words('maskclip_demo') == ['building', 'ground', 'grass', 'tree', 'sky']


def test_templates():
    assert templates('clip_es') == ['a clean origami {}.']
    assert templates('single') == ['a photo of a {}.']
    assert len(templates('openai80')) == 80 and len(templates('scene5')) == 5
    assert templates('maskclip85') == templates('openai80') + templates('scene5')
    assert templates('scene5')[0] == 'there is a {} in the scene.'
    assert templates('scene5')[-1] == 'this is one {} in the scene.'
    assert len(templates('pacl7')) == 7 and templates('pacl7')[2] == 'a origami {}.'
    for name in list_tables(kind='templates'):
        for t in templates(name):
            assert t.count('{}') == 1


def test_openai80_equals_open_clip():
    zsm = pytest.importorskip('open_clip.zero_shot_metadata')
    assert templates('openai80') == [t('{}') for t in zsm.OPENAI_IMAGENET_TEMPLATES]
    assert templates('pacl7') == [t('{}') for t in zsm.SIMPLE_IMAGENET_TEMPLATES]


def test_unknown_tables_list_available():
    for fn, kind in [(class_names, 'class_names'), (synonyms, 'synonyms'),
                     (background_words, 'background'), (templates, 'templates')]:
        with pytest.raises(KeyError) as e:
            fn('nope')
        msg = str(e.value)
        assert "'nope'" in msg
        for avail in list_tables(kind=kind):
            assert avail in msg
    with pytest.raises(KeyError, match='clip_es'):  # aliases are mentioned, not silently used
        synonyms('clip_es')
    with pytest.raises(KeyError, match='kind'):
        list_tables(kind='colours')
    with pytest.raises(KeyError):
        class_names('_comment')


def test_loaders_return_copies():
    names = class_names('voc20')
    names[0] = 'xxx'
    assert class_names('voc20')[0] == 'aeroplane'
    syn = synonyms('clip_es_voc')
    syn['bird'] = 'xxx'
    assert synonyms('clip_es_voc')['bird'] == 'bird avian'


def test_resolve_classes():
    assert resolve_classes(['person', 'dog', 0], table='voc20') == [14, 11, 0]
    assert resolve_classes('person', table='voc21') == [15]
    assert resolve_classes(3, table='voc20') == [3]
    assert resolve_classes(['Person', ' TV  monitor '], table='voc20_readable') == [14, 19]
    assert resolve_classes(['bed'], table='ade150') == [7]
    np = pytest.importorskip('numpy')
    assert resolve_classes([np.int64(2)], table='voc20') == [2]


def test_resolve_classes_errors():
    with pytest.raises(KeyError) as e:
        resolve_classes(['dog', 'persn'], table='voc20')
    msg = str(e.value)
    assert "'persn'" in msg and "'voc20'" in msg and "'person'" in msg
    with pytest.raises(KeyError) as e:  # no close match: still names class and table
        resolve_classes(['zebra'], table='cityscapes19')
    assert "'zebra'" in str(e.value) and "'cityscapes19'" in str(e.value)
    assert 'did you mean' not in str(e.value)
    with pytest.raises(KeyError, match='available.*voc20'):
        resolve_classes(['dog'], table='voc_20')
    # VOC's 'tvmonitor' is another spelling of the readable table's 'tv monitor' (index 19) ...
    assert resolve_classes(['tvmonitor'], table='voc20_readable') == [19]
    with pytest.raises(KeyError) as e:  # ... and a misspelling of it is suggested the table's entry
        resolve_classes(['tvmonitr'], table='voc20_readable')
    assert "did you mean 'tv monitor'" in str(e.value)
    with pytest.raises(IndexError, match='20'):
        resolve_classes([20], table='voc20')
    with pytest.raises(IndexError, match='-1'):
        resolve_classes([-1], table='voc20')
    with pytest.raises(TypeError, match='bool'):
        resolve_classes([True], table='voc20')
    with pytest.raises(TypeError):
        resolve_classes([1.5], table='voc20')
    with pytest.raises(ValueError, match='more than once'):
        resolve_classes(['dog', 11], table='voc20')
    with pytest.raises(ValueError, match='no classes'):
        resolve_classes([], table='voc20')


def test_load_name_file(tmp_path):
    p = tmp_path / 'cls.txt'
    p.write_text('# comment\nsky,wall,tree\n\n person \n')
    assert load_name_file(p) == ['sky,wall,tree', 'person']
    j = tmp_path / 'cls.json'
    j.write_text(json.dumps(['cat', 'dog']))
    assert load_name_file(j) == ['cat', 'dog']
    with pytest.raises(FileNotFoundError, match='missing.txt'):
        load_name_file(tmp_path / 'missing.txt')
    (tmp_path / 'empty.txt').write_text('\n# only a comment\n')
    with pytest.raises(ValueError, match='empty.txt'):
        load_name_file(tmp_path / 'empty.txt')
    (tmp_path / 'bad.json').write_text('{"a": 1}')
    with pytest.raises(ValueError, match='bad.json'):
        load_name_file(tmp_path / 'bad.json')


@pytest.fixture
def fake_data_dir(tmp_path, monkeypatch):
    for f in vocab.DATA_DIR.glob('*.json'):
        (tmp_path / f.name).write_text(f.read_text())
    monkeypatch.setattr(vocab, 'DATA_DIR', tmp_path)
    vocab._load_kind.cache_clear()
    yield tmp_path
    vocab._load_kind.cache_clear()


def test_malformed_data_files_are_reported(fake_data_dir):
    path = fake_data_dir / 'templates.json'
    data = json.loads(path.read_text())
    data['broken'] = {'source': 'test', 'templates': ['no placeholder']}
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match='templates.json.*broken'):
        templates('single')
    vocab._load_kind.cache_clear()
    (fake_data_dir / 'synonyms.json').write_text('{not json')
    with pytest.raises(ValueError, match='synonyms.json'):
        synonyms('clip_es_voc')
    os.remove(fake_data_dir / 'background.json')
    with pytest.raises(FileNotFoundError, match='background.json'):
        background_words('clip_es_voc')


def test_duplicate_class_names_rejected(fake_data_dir):
    path = fake_data_dir / 'class_names.json'
    data = json.loads(path.read_text())
    data['dups'] = {'source': 'test', 'names': ['cat', 'Cat ']}
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match='not unique'):
        class_names('voc20')


def test_text_package_does_not_import_mmseg():
    """Load wsss_mmseg/text standalone (bypassing the plugin's __init__)."""
    code = (
        'import importlib.util, sys\n'
        f'd = {str(REPO / "wsss_mmseg" / "text")!r}\n'
        'spec = importlib.util.spec_from_file_location("standalone_text", d + "/__init__.py",'
        ' submodule_search_locations=[d])\n'
        'm = importlib.util.module_from_spec(spec); sys.modules["standalone_text"] = m\n'
        'spec.loader.exec_module(m)\n'
        'assert m.class_names("voc20")[0] == "aeroplane"\n'
        'bad = [k for k in sys.modules if k.split(".")[0] in ("mmseg", "mmengine", "mmcv")]\n'
        'assert not bad, bad\n'
        'print("ok")\n')
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == 'ok'
