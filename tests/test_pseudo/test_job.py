"""The dataset-scale pseudo-label job (wsss_mmseg.pseudo.job), in process, one rank."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pseudo_fakes as pf  # noqa: E402

import wsss_mmseg.datasets  # noqa: E402,F401  (registers the label sources)
from wsss_mmseg.pseudo import io as pio  # noqa: E402
from wsss_mmseg.pseudo.job import run_pseudo_job, shard_indices  # noqa: E402
from wsss_mmseg.pseudo.options import PseudoConfigError  # noqa: E402
from wsss_mmseg.pseudo.stages import OutputWriter  # noqa: E402
from wsss_mmseg.pseudo.workdir import OutputLayout  # noqa: E402


def _cfg(tmp_path, dataset, **kw):
    return Config.fromfile(str(pf.write_config(tmp_path / 'cfg.py', dataset=dataset, **kw)))


@pytest.fixture
def folder(tmp_path):
    return pf.folder_dataset(tmp_path / 'data', n=6)


def test_shard_indices_disjoint_complete_deterministic():
    ids = [f'id{i}' for i in (5, 3, 9, 1, 0, 7, 2)]
    shards = [shard_indices(ids, rank=r, world_size=3) for r in range(3)]
    flat = sorted(i for s in shards for i in s)
    assert flat == list(range(len(ids)))
    order = sorted(ids)
    for r, s in enumerate(shards):
        assert [ids[i] for i in s] == order[r::3]
    assert shard_indices(ids, rank=0, world_size=1) == sorted(range(7), key=lambda i: ids[i])
    with pytest.raises(ValueError):
        shard_indices(ids, rank=3, world_size=3)


def test_job_writes_outputs_and_summary(tmp_path, folder):
    cfg = _cfg(tmp_path, folder)
    work = tmp_path / 'out'
    summary = run_pseudo_job(cfg, work_dir=work, save_cams=True)
    assert summary['counts'] == dict(total=6, done=6, processed=6, skipped_resumed=0, failed=0,
                                     evaluation_failed=0)
    labels = json.loads(Path(folder['labels']).read_text())
    names = cfg.generator and pf.FakeGenerator(class_table='voc20').class_names
    for fname, cls in labels.items():
        image_id = fname[:-4]
        mask = pio.read_mask_png(work / 'masks' / f'{image_id}.png')
        with Image.open(Path(folder['img_dir']) / fname) as img:
            assert mask.shape == (img.height, img.width)
        allowed = {0} | {names.index(c) + 1 for c in cls}
        assert set(np.unique(mask).tolist()) <= allowed
        conf = pio.read_confidence_png(work / 'confidence' / f'{image_id}.png')
        assert conf.shape == mask.shape and 0 <= conf.min() and conf.max() <= 1
        cam = pio.load_cam_npy(work / 'cams' / f'{image_id}.npy')
        assert cam['keys'].tolist() == [names.index(c) for c in cls]
        assert cam['cam'].shape == (len(cls),) + mask.shape
    on_disk = json.loads((work / 'summary.json').read_text())
    assert on_disk['counts'] == summary['counts']
    assert on_disk['config']['generator']['type'] == pf.FAKE_GENERATOR
    for pkg in ('torch', 'open_clip', 'mmseg', 'mmengine', 'numpy'):
        assert on_disk['versions'][pkg]
    assert on_disk['timings']['images_per_s'] > 0
    assert on_disk['failures'] == [] and not (work / 'failures.txt').exists()
    assert on_disk['evaluation'] is None  # no GT in a plain folder


def test_job_is_deterministic_and_resumes_byte_identically(tmp_path, folder):
    cfg = _cfg(tmp_path, folder)
    a, b = tmp_path / 'a', tmp_path / 'b'
    run_pseudo_job(cfg, work_dir=a, save_cams=True)
    run_pseudo_job(cfg, work_dir=b, save_cams=True)
    ref = pf.tree_bytes(a)
    assert len(ref) == 18 and ref == pf.tree_bytes(b)
    # lose some outputs (as if killed), plus a stale temp file of the killed writer
    (b / 'masks' / 'img01.png').unlink()
    (b / 'confidence' / 'img03.png').unlink()
    (b / 'cams' / 'img05.npy').unlink()
    stale = b / 'masks' / f'.img01.png.deadbeef{pio.TMP_SUFFIX}'
    stale.write_bytes(b'partial png')
    summary = run_pseudo_job(cfg, work_dir=b, save_cams=True)
    assert summary['counts']['processed'] == 3
    assert summary['counts']['skipped_resumed'] == 3
    assert not stale.exists()
    assert pf.tree_bytes(b) == ref
    # without --save-cams the finished images count as done (cams are optional)
    summary = run_pseudo_job(cfg, work_dir=b, save_cams=False)
    assert summary['counts']['skipped_resumed'] == 6


def test_no_resume_recomputes(tmp_path, folder):
    cfg = _cfg(tmp_path, folder)
    run_pseudo_job(cfg, work_dir=tmp_path / 'o')
    summary = run_pseudo_job(cfg, work_dir=tmp_path / 'o', resume=False)
    assert summary['counts']['processed'] == 6 and summary['counts']['skipped_resumed'] == 0


def test_resume_with_changed_settings_is_refused(tmp_path, folder):
    cfg = _cfg(tmp_path, folder)
    run_pseudo_job(cfg, work_dir=tmp_path / 'o')
    cfg.mask_maker.bg_power = 2.0
    with pytest.raises(ValueError, match='mask_maker'):
        run_pseudo_job(cfg, work_dir=tmp_path / 'o')
    summary = run_pseudo_job(cfg, work_dir=tmp_path / 'o', resume=False)
    assert summary['counts']['processed'] == 6
    assert run_pseudo_job(cfg, work_dir=tmp_path / 'o')['counts']['skipped_resumed'] == 6
    # editing the labels file (same path, other content) is noticed too
    labels = json.loads(Path(folder['labels']).read_text())
    labels['img00.png'] = ['horse']
    Path(folder['labels']).write_text(json.dumps(labels))
    with pytest.raises(ValueError, match=r'label files \[.*labels.json'):
        run_pseudo_job(cfg, work_dir=tmp_path / 'o')


def test_failures_are_recorded_and_the_run_continues(tmp_path):
    root = tmp_path / 'data'
    # img01 truncated, img02 empty, img03 no labels, img04 index 25, img05 fails the generator
    dataset, good = pf.failing_voc_dataset(root)
    cfg = _cfg(tmp_path, dataset, fail_label=7)
    work = tmp_path / 'out'
    summary = run_pseudo_job(cfg, work_dir=work)
    assert summary['counts']['failed'] == 6
    assert summary['counts']['processed'] == 1 and summary['counts']['done'] == 1
    by_id = {f['id']: f for f in summary['failures']}
    assert sorted(by_id) == ['img01', 'img02', 'img03', 'img04', 'img05', 'img99']
    assert by_id['img01']['stage'] == 'load' and 'truncated' in by_id['img01']['reason']
    assert by_id['img01']['img_path'].endswith('img01.jpg')
    assert by_id['img02']['stage'] == 'load' and 'empty' in by_id['img02']['reason']
    assert by_id['img03']['reason'] == 'no image-level labels'
    assert by_id['img04']['stage'] == 'labels' and '25' in by_id['img04']['reason']
    assert by_id['img05']['stage'] == 'generate' and 'refuses label 7' in by_id['img05']['reason']
    assert by_id['img99']['stage'] == 'load' and 'not found' in by_id['img99']['reason']
    lines = (work / 'failures.txt').read_text().splitlines()
    assert len(lines) == 6 and lines[0].startswith('img01\t')
    assert (work / 'masks' / 'img00.png').is_file()
    assert not (work / 'masks' / 'img01.png').exists()
    # fixing the data and rerunning processes exactly the failed images
    (root / 'JPEGImages' / 'img01.jpg').write_bytes(good)
    summary = run_pseudo_job(cfg, work_dir=work)
    assert summary['counts']['processed'] == 1 and summary['counts']['skipped_resumed'] == 1
    assert not any(f['id'] == 'img01' for f in summary['failures'])


def test_unwritable_work_dir_fails_before_processing(tmp_path, folder, monkeypatch):
    blocker = tmp_path / 'a_file'
    blocker.write_text('x')
    cfg = _cfg(tmp_path, folder)
    built = []
    monkeypatch.setattr(pf.FakeGenerator, '__init__',
                        lambda self, **kw: built.append(kw) or None)
    with pytest.raises(PermissionError, match=str(blocker / 'out')):
        run_pseudo_job(cfg, work_dir=blocker / 'out')
    assert built == []


def test_class_count_mismatch_is_an_error(tmp_path, folder):
    cfg = _cfg(tmp_path, folder)
    cfg.generator = dict(type=pf.FAKE_GENERATOR, num_classes=80)
    with pytest.raises(ValueError, match='20 dataset classes vs 80 generator classes'):
        run_pseudo_job(cfg, work_dir=tmp_path / 'o')


def test_missing_section_and_unknown_option(tmp_path, folder):
    full = _cfg(tmp_path, folder)
    cfg = Config(dict(pseudo_dataset=full.pseudo_dataset, generator=full.generator))
    with pytest.raises(PseudoConfigError, match='mask_maker'):
        run_pseudo_job(cfg, work_dir=tmp_path / 'o')
    cfg = _cfg(tmp_path, folder)
    cfg.pseudo_job = dict(save_cam=True)
    with pytest.raises(PseudoConfigError, match='save_cam'):
        run_pseudo_job(cfg, work_dir=tmp_path / 'o')


def test_output_writer_validates_generator_and_mask_outputs(tmp_path):
    img = np.zeros((6, 7, 3), np.uint8)
    layout = OutputLayout(tmp_path / 'o')
    task = dict(id='img00', image=img, label_ids=[2], work_hw=(6, 7), image_hw=(6, 7),
                result=dict(keys=np.array([2]), cam=np.zeros((1, 5, 5), np.float32)))
    out = OutputWriter(pf.FakeMaskMaker(), layout)(task)
    assert out['stage'] == 'generate' and 'invalid generator output' in out['reason']

    def bad_mask(result, img):
        return np.zeros((3, 3), np.uint8), np.zeros((3, 3), np.float32)
    task['result'] = dict(keys=np.array([2]), cam=np.zeros((1, 6, 7), np.float32))
    out = OutputWriter(bad_mask, layout)(task)
    assert out['stage'] == 'mask' and 'do not match' in out['reason']
    assert not (tmp_path / 'o' / 'masks' / 'img00.png').exists()
    # a good one: files written, records = [size, crc32] of the bytes on disk
    out = OutputWriter(pf.FakeMaskMaker(), layout)(task)
    import zlib
    data = (tmp_path / 'o' / 'masks' / 'img00.png').read_bytes()
    assert out['files']['masks/img00.png'] == [len(data), zlib.crc32(data)]


def test_job_on_voc_sample_with_evaluation(tmp_path, shared_data):
    voc = shared_data / 'voc_sample'
    dataset = dict(type='VOCImageLabels', data_root=str(voc),
                   split='ImageSets/Segmentation/val.txt', labels='cls_labels.json',
                   gt_dir='SegmentationClass')
    cfg = _cfg(tmp_path, dataset)
    cfg.pseudo_job = dict(fsync=False)
    work = tmp_path / 'out'
    summary = run_pseudo_job(cfg, work_dir=work)
    assert summary['counts']['done'] == 60 and summary['counts']['failed'] == 0
    ev = summary['evaluation']
    assert ev['num_images'] == 60 and set(ev['variants']) == {'all', 'conf>=0.95'}
    assert 0.0 <= ev['variants']['all']['miou'] <= 1.0
    for name in ('eval.json', 'eval.md', 'eval_iou.png'):
        assert (work / name).is_file()
    full = json.loads((work / 'eval.json').read_text())
    assert full['class_names'][:2] == ['background', 'aeroplane']
    assert len(full['variants']['all']['per_class']) == 21
    # thresholding can only add ignored pixels
    assert ev['variants']['conf>=0.95']['ignored_fraction'] >= \
        ev['variants']['all']['ignored_fraction']


def test_job_on_coco_sample_with_80_classes(tmp_path, shared_data):
    coco = shared_data / 'coco_sample'
    dataset = dict(type='COCOImageLabels', data_root=str(coco),
                   ann_file='annotations/instances_subset.json', img_dir='images',
                   gt_dir='SegmentationClass')
    cfg = _cfg(tmp_path, dataset)
    cfg.generator = dict(type=pf.FAKE_GENERATOR, class_table='coco80')
    cfg.pseudo_job = dict(fsync=False, eval_conf_thresholds=[])
    summary = run_pseudo_job(cfg, work_dir=tmp_path / 'out')
    assert summary['counts']['done'] == 20 and summary['counts']['failed'] == 0
    assert summary['evaluation']['num_images'] == 20 and summary['evaluation']['failures'] == []
    assert set(summary['evaluation']['variants']) == {'all'}
    full = json.loads((tmp_path / 'out' / 'eval.json').read_text())
    assert full['num_classes'] == 81
    assert full['class_names'][1] == 'person'  # names of the instances file
    mask = pio.read_mask_png(tmp_path / 'out' / 'masks' / '000000084061.png')
    assert set(np.unique(mask).tolist()) <= {0, 1, 7, 25, 27}  # labels [0, 6, 24, 26] + 1


def test_a_plan_is_used_as_given_and_must_match_the_config(tmp_path, folder, monkeypatch):
    """run_pseudo_job(plan=...) builds no second label source and hashes nothing again."""
    from wsss_mmseg.datasets.image_labels import FolderImageLabels
    from wsss_mmseg.pseudo import job as job_mod
    from wsss_mmseg.pseudo.job import plan_pseudo_job
    cfg = _cfg(tmp_path, folder)
    plan = plan_pseudo_job(cfg, save_cams=True)
    assert sorted(plan.ids) == sorted(n[:-4] for n in json.loads(Path(folder["labels"]).read_text()))
    assert plan.job['save_cams'] is True
    counts = dict(builds=0, fingerprints=0)
    real_init = FolderImageLabels.__init__

    def counting_init(self, *args, **kwargs):
        counts['builds'] += 1
        real_init(self, *args, **kwargs)

    def no_fingerprint(*args, **kwargs):
        counts['fingerprints'] += 1
        raise AssertionError('the plan carries the fingerprint')

    monkeypatch.setattr(FolderImageLabels, '__init__', counting_init)
    monkeypatch.setattr(job_mod, 'config_fingerprint', no_fingerprint)
    # another config or other options than the plan's: refused before anything is written
    other = _cfg(tmp_path, folder)
    other.mask_maker.bg_power = 2.5
    with pytest.raises(ValueError, match=r"other \['mask_maker'\] sections"):
        run_pseudo_job(other, work_dir=tmp_path / 'out', save_cams=True, plan=plan)
    with pytest.raises(ValueError, match=r"other \['pseudo_job'\] sections"):
        run_pseudo_job(cfg, work_dir=tmp_path / 'out', save_cams=False, plan=plan)
    assert not (tmp_path / 'out' / 'masks').exists()
    summary = run_pseudo_job(cfg, work_dir=tmp_path / 'out', save_cams=True, plan=plan)
    assert summary['counts']['processed'] == 6 and summary['fingerprint'] == plan.fingerprint['sha256']
    assert counts == dict(builds=0, fingerprints=0)
    stored = json.loads((tmp_path / 'out' / 'pseudo_fingerprint.json').read_text())
    assert stored == plan.fingerprint
    assert len(list((tmp_path / 'out' / 'cams').glob('*.npy'))) == 6
