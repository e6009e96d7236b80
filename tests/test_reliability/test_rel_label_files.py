"""Hostile list/label files (issue #16 item 7): each case has one exact, asserted outcome.

* a UTF-8 byte-order mark (Windows editors, Excel's "CSV UTF-8") is skipped in split lists, ``.txt``,
  ``.json`` and ``.csv`` label files -- before, it became part of the first id;
* a file that is not UTF-8, JSON nested too deeply for the parser (``RecursionError``) and CSV the
  ``csv`` module rejects (``csv.Error``) are ``ValueError``s naming the file -- before, the bare
  exception named nothing;
* an empty (or comment-only / header-only) labels file or split list is an error naming the file --
  before, the job reported ``done: 0/0`` and exited 0.
"""
import sys
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rel_common  # noqa: E402,F401  (sys.path for the fakes)
import pseudo_fakes as pf  # noqa: E402
import wsss_mmseg.datasets  # noqa: E402,F401
from mmseg.registry import DATASETS  # noqa: E402
from wsss_mmseg.pseudo.job import run_pseudo_job  # noqa: E402

BOM = b'\xef\xbb\xbf'
LATIN1 = 'caf\u00e9 1\n'.encode('latin-1')  # 0xE9 alone is not UTF-8


def _folder(root: Path, name: str, content: bytes):
    (root / 'images').mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(root / 'images' / 'a.png')
    (root / name).write_bytes(content)
    return dict(type='FolderImageLabels', img_dir=str(root / 'images'), labels=str(root / name),
                class_table='voc20')


def _voc(root: Path, split: bytes, labels_name: str = 'l.txt', labels: bytes = b'a 1\n'):
    (root / 'JPEGImages').mkdir(parents=True, exist_ok=True)
    (root / 'split.txt').write_bytes(split)
    (root / labels_name).write_bytes(labels)
    return dict(type='VOCImageLabels', data_root=str(root), split='split.txt', labels=labels_name,
                gt_dir=None)


def _npy_empty_dict(root: Path):
    (root / 'JPEGImages').mkdir(parents=True, exist_ok=True)
    (root / 'split.txt').write_text('a\n')
    np.save(root / 'cls_labels.npy', {}, allow_pickle=True)
    return dict(type='VOCImageLabels', data_root=str(root), split='split.txt',
                labels='cls_labels.npy', gt_dir=None)


# (name, make(root) -> dataset cfg, exception type, message substring, file named in the message)
ERROR_CASES = [
    ('split_not_utf8', lambda r: _voc(r, LATIN1), ValueError, 'not UTF-8', 'split.txt'),
    ('txt_labels_not_utf8', lambda r: _voc(r, b'a\n', labels=LATIN1), ValueError, 'not UTF-8', 'l.txt'),
    ('json_labels_not_utf8', lambda r: _folder(r, 'l.json', '{"a.png": ["caf\u00e9"]}'.encode('latin-1')),
     ValueError, 'not UTF-8', 'l.json'),
    ('csv_labels_not_utf8', lambda r: _folder(r, 'l.csv', 'image,labels\na.png,caf\u00e9\n'.encode('latin-1')),
     ValueError, 'not UTF-8', 'l.csv'),
    ('utf16_csv', lambda r: _folder(r, 'l.csv', 'image,labels\na.png,dog\n'.encode('utf-16')),
     ValueError, 'not UTF-8', 'l.csv'),
    ('json_nested_too_deep', lambda r: _folder(r, 'l.json', b'[' * 200_000),
     ValueError, 'nested too deeply', 'l.json'),
    ('voc_json_nested_too_deep', lambda r: _voc(r, b'a\n', 'l.json', b'{"a": ' + b'[' * 200_000),
     ValueError, 'nested too deeply', 'l.json'),
    ('csv_field_over_limit', lambda r: _folder(r, 'l.csv', b'image,labels\na.png,' + b'd' * 200_000 + b'\n'),
     ValueError, 'malformed CSV (field larger than field limit', 'l.csv:2'),
    ('empty_txt_labels', lambda r: _voc(r, b'a\n', labels=b''), ValueError, 'lists no image', 'l.txt'),
    ('comment_only_txt_labels', lambda r: _voc(r, b'a\n', labels=b'# id idx\n\n'),
     ValueError, 'lists no image', 'l.txt'),
    ('bom_only_txt_labels', lambda r: _voc(r, b'a\n', labels=BOM), ValueError, 'lists no image', 'l.txt'),
    ('empty_split', lambda r: _voc(r, b''), ValueError, 'split list lists no image', 'split.txt'),
    ('empty_json_labels', lambda r: _voc(r, b'a\n', 'l.json', b'{"labels": {}}'),
     ValueError, 'lists no image', 'l.json'),
    ('empty_npy_labels', _npy_empty_dict, ValueError, 'lists no image', 'cls_labels.npy'),
    ('empty_folder_json', lambda r: _folder(r, 'l.json', b'{}'), ValueError, 'lists no image', 'l.json'),
    ('header_only_csv', lambda r: _folder(r, 'l.csv', BOM + b'image,labels\r\n'),
     ValueError, 'lists no image', 'l.csv'),
]


@pytest.mark.parametrize('case', ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_label_file_error_names_the_file(tmp_path, case):
    _, make, exc_type, substring, file_name = case
    cfg = make(tmp_path)
    with pytest.raises(exc_type) as info:
        DATASETS.build(cfg)
    msg = str(info.value)
    assert substring in msg, msg
    assert str(tmp_path / file_name) in msg, msg


BOM_CASES = [
    ('bom_split_and_txt', lambda r: _voc(r, BOM + b'a\r\n', labels=BOM + b'a 1 4\r\n'), [[1, 4]]),
    ('bom_voc_json', lambda r: _voc(r, b'a\n', 'l.json', BOM + b'{"a": [7]}'), [[7]]),
    ('bom_folder_json', lambda r: _folder(r, 'l.json', BOM + b'{"a.png": ["dog", "tv"]}'), [[11, 19]]),
    ('bom_folder_csv', lambda r: _folder(r, 'l.csv', BOM + b'image,labels\r\na.png,cat|couch\r\n'), [[7, 17]]),
]


@pytest.mark.parametrize('case', BOM_CASES, ids=[c[0] for c in BOM_CASES])
def test_bom_is_skipped(tmp_path, case):
    _, make, labels = case
    ds = DATASETS.build(make(tmp_path))
    assert [r['label_ids'] for r in ds] == labels
    assert ds.ids[0] == 'a'


def test_job_over_an_empty_labels_file_fails_instead_of_done_0_of_0(tmp_path):
    cfg_path = pf.write_config(tmp_path / 'cfg.py', dataset=_folder(tmp_path, 'l.json', b'{}'))
    with pytest.raises(ValueError, match='lists no image'):
        run_pseudo_job(Config.fromfile(str(cfg_path)), work_dir=tmp_path / 'out')
    assert not (tmp_path / 'out' / 'summary.json').exists()
