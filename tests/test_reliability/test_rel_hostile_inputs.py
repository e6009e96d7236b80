"""Hostile or broken inputs: every corpus case has one exact, asserted outcome."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rel_common  # noqa: E402,F401  (sys.path for the fakes)
import corpus  # noqa: E402
import pseudo_fakes as pf
import wsss_mmseg.datasets  # noqa: F401
from mmseg.registry import DATASETS
from wsss_mmseg.pseudo import io as pio
from wsss_mmseg.pseudo.job import run_pseudo_job
from wsss_mmseg.utils.images import load_rgb

@pytest.fixture(scope='module')
def corpus_run(tmp_path_factory):
    """One job over the whole image corpus (fake generator)."""
    root = tmp_path_factory.mktemp('corpus')
    cases = corpus.write_image_cases(root / 'images')
    (root / 'labels.json').write_text(json.dumps({c.name: c.labels for c in cases}))
    ds = dict(type='FolderImageLabels', img_dir=str(root / 'images'),
              labels=str(root / 'labels.json'), class_table='voc20')
    cfg = Config.fromfile(str(pf.write_config(root / 'cfg.py', dataset=ds)))
    summary = run_pseudo_job(cfg, work_dir=root / 'out')
    return root, cases, summary


def test_corpus_is_large_enough(corpus_run):
    _, cases, summary = corpus_run
    assert len(cases) + len(corpus.label_file_cases()) >= 30
    assert summary['counts']['total'] == len(cases)
    assert summary['counts']['failed'] == sum(not c.ok for c in cases)


@pytest.mark.parametrize('index', range(32))
def test_image_case_outcome(corpus_run, index):
    root, cases, summary = corpus_run
    assert len(cases) == 32
    case = cases[index]
    image_id = Path(case.name).stem
    failures = {f['id']: f for f in summary['failures']}
    mask_path = root / 'out' / 'masks' / f'{image_id}.png'
    if case.ok:
        assert image_id not in failures, failures.get(image_id)
        mask = pio.read_mask_png(mask_path)
        assert mask.shape == case.shape
        conf = pio.read_confidence_png(root / 'out' / 'confidence' / f'{image_id}.png')
        assert conf.shape == case.shape
        assert set(np.unique(mask).tolist()) <= {0, 12}  # background or 'dog'
    else:
        f = failures[image_id]
        assert f['stage'] == case.stage, f
        assert case.reason in f['reason'], f
        assert not mask_path.exists()
        if case.stage == 'load':  # the reason names the file
            assert case.name in f['reason'] or 'not found' in f['reason'], f


@pytest.mark.parametrize('name', [c[0] for c in corpus.label_file_cases()])
def test_label_file_case_raises_at_construction(tmp_path, name):
    (case,) = [c for c in corpus.label_file_cases() if c[0] == name]
    _, make, exc_type, substring = case
    cfg = make(tmp_path)
    with pytest.raises(exc_type) as info:
        DATASETS.build(cfg)
    assert substring in str(info.value)
    assert str(tmp_path) in str(info.value) or 'duplicate image id' in str(info.value)


def test_exif_policy_default_stored_orientation_opt_in_display(tmp_path):
    """Default: stored pixel order (matches VOC/COCO masks); exif_transpose=True: displayed."""
    p = tmp_path / 'rot.jpg'
    p.write_bytes(corpus.exif_rotated_jpeg(24, 40, 6))
    stored = load_rgb(p)
    shown = load_rgb(p, exif_transpose=True)
    assert stored.shape == (24, 40, 3) and shown.shape == (40, 24, 3)
    # orientation 6 = rotate 90 deg clockwise for display
    np.testing.assert_array_equal(shown, np.rot90(stored, k=-1))


def test_exif_transpose_job_mask_follows_the_displayed_image(tmp_path):
    (tmp_path / 'images').mkdir()
    (tmp_path / 'images' / 'rot.jpg').write_bytes(corpus.exif_rotated_jpeg(24, 40, 6))
    (tmp_path / 'labels.json').write_text(json.dumps({'rot.jpg': ['dog']}))
    ds = dict(type='FolderImageLabels', img_dir=str(tmp_path / 'images'),
              labels=str(tmp_path / 'labels.json'), class_table='voc20')
    cfg = Config.fromfile(str(pf.write_config(
        tmp_path / 'cfg.py', dataset=ds, extra='pseudo_job.update(exif_transpose=True)\n')))
    run_pseudo_job(cfg, work_dir=tmp_path / 'out')
    assert pio.read_mask_png(tmp_path / 'out' / 'masks' / 'rot.png').shape == (40, 24)


@pytest.mark.parametrize('labels,reason', [
    ('a -1\n', 'out of range'), ('a 20\n', 'out of range'), ('a 3 99999999999\n', 'out of range'),
    ('a\n', 'no image-level labels')])
def test_label_index_problems_are_per_image_failures(tmp_path, labels, reason):
    root = tmp_path / 'voc'
    (root / 'JPEGImages').mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / 'JPEGImages' / 'a.jpg')
    (root / 'split.txt').write_text('a\n')
    (root / 'l.txt').write_text(labels)
    ds = dict(type='VOCImageLabels', data_root=str(root), split='split.txt', labels='l.txt',
              gt_dir=None)
    summary = run_pseudo_job(Config.fromfile(str(pf.write_config(tmp_path / 'c.py', dataset=ds))),
                             work_dir=tmp_path / 'out')
    (f,) = summary['failures']
    assert f['stage'] == 'labels' and reason in f['reason'], f


def test_gt_mask_of_the_wrong_size_is_an_evaluation_failure(tmp_path):
    ds = pf.folder_dataset(tmp_path / 'data', n=2)
    gt = tmp_path / 'gt'
    gt.mkdir()
    names = sorted(json.loads(Path(ds['labels']).read_text()))
    with Image.open(Path(ds['img_dir']) / names[0]) as im:
        Image.fromarray(np.zeros((im.height, im.width), np.uint8)).save(gt / 'img00.png')
    Image.fromarray(np.zeros((3, 5), np.uint8)).save(gt / 'img01.png')
    cfg = Config.fromfile(str(pf.write_config(tmp_path / 'c.py', dataset=dict(ds, gt_dir=str(gt)))))
    summary = run_pseudo_job(cfg, work_dir=tmp_path / 'out')
    assert summary['counts']['failed'] == 0
    ev = summary['evaluation']
    assert ev['num_images'] == 1
    (f,) = ev['failures']
    assert f['id'] == 'img01' and 'shape' in f['reason'] and 'img01.png' in f['reason']


# ------------------------------------------------- training-time pseudo labels
def _load_pseudo(tmp_path, mask, conf_writer, img_hw=(8, 10)):
    from wsss_mmseg.datasets.transforms import LoadPseudoLabel
    seg = tmp_path / 'm.png'
    conf = tmp_path / 'c.png'
    Image.fromarray(mask).save(seg)
    conf_writer(conf)
    results = dict(img_shape=img_hw, seg_map_path=str(seg), conf_path=str(conf), seg_fields=[],
                   reduce_zero_label=False)
    return LoadPseudoLabel().transform(results)


def test_load_pseudo_label_good_pair(tmp_path):
    out = _load_pseudo(tmp_path, np.zeros((8, 10), np.uint8),
                       lambda p: pio.write_confidence_png(p, np.full((8, 10), 0.5, np.float32)))
    assert out['gt_seg_map'].shape == (8, 10)


@pytest.mark.parametrize('what', ['mask_size', 'conf_size', 'conf_8bit', 'conf_rgb', 'mask_rgb',
                                  'conf_truncated'])
def test_load_pseudo_label_refuses_broken_files(tmp_path, what):
    good_conf = lambda p: pio.write_confidence_png(p, np.full((8, 10), 0.5, np.float32))  # noqa
    mask = np.zeros((8, 10), np.uint8)
    writer = good_conf
    if what == 'mask_size':
        mask = np.zeros((8, 11), np.uint8)
    elif what == 'conf_size':
        writer = lambda p: pio.write_confidence_png(p, np.ones((7, 10), np.float32))  # noqa
    elif what == 'conf_8bit':
        writer = lambda p: Image.fromarray(np.full((8, 10), 200, np.uint8)).save(p)  # noqa
    elif what == 'conf_rgb':
        writer = lambda p: Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(p)  # noqa
    elif what == 'conf_truncated':
        def writer(p):
            good_conf(p)
            p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    with pytest.raises((ValueError, OSError)) as info:
        if what == 'mask_rgb':
            from wsss_mmseg.datasets.transforms import LoadPseudoLabel
            seg = tmp_path / 'm.png'
            Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(seg)
            good_conf(tmp_path / 'c.png')
            LoadPseudoLabel().transform(dict(img_shape=(8, 10), seg_map_path=str(seg),
                                             conf_path=str(tmp_path / 'c.png'), seg_fields=[],
                                             reduce_zero_label=False))
        else:
            _load_pseudo(tmp_path, mask, writer)
    msg = str(info.value)
    assert 'm.png' in msg or 'c.png' in msg, msg
