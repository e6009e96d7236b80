"""Work-dir rules (issue #16): never two settings in one folder, provenance, validation, exit codes.

Each case is one the issue lists as failing before; expected outcomes are written out by hand.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pseudo_fakes as pf  # noqa: E402

import wsss_mmseg.datasets  # noqa: E402,F401
import wsss_mmseg.models  # noqa: E402,F401
from wsss_mmseg.pseudo.job import run_pseudo_job  # noqa: E402
from wsss_mmseg.pseudo.options import PseudoConfigError  # noqa: E402
from wsss_mmseg.pseudo.workdir import (FINGERPRINT_FILE, WorkDirConflictError,  # noqa: E402
                                       inspect_work_dir, move_aside, read_provenance)

REPO = Path(__file__).resolve().parents[2]


def _cfg(tmp_path, dataset, **kw):
    return Config.fromfile(str(pf.write_config(tmp_path / 'cfg.py', dataset=dataset, **kw)))


@pytest.fixture
def folder(tmp_path):
    return pf.folder_dataset(tmp_path / 'data', n=6)


def _fork_run(cfg, work, fault, resume=True):
    """Run the job in a forked child killed by the fault hook; returns the wait status."""
    pid = os.fork()
    if pid == 0:
        os.environ['WSSS_MMSEG_FAULT'] = fault
        os.environ.pop('WSSS_MMSEG_FAULT_PATH', None)
        try:
            run_pseudo_job(cfg, work_dir=work, resume=resume, logger=None)
        finally:
            os._exit(3)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.02)
    os.kill(pid, 9)
    pytest.fail('child hung')


def test_interrupted_no_resume_then_plain_rerun_never_mixes(tmp_path, folder):
    """#16.1: old settings A, interrupted --no-resume with B, then the plain command with B."""
    cfg_a = _cfg(tmp_path, folder)
    cfg_a.pseudo_job.postprocess_workers = 0
    work = tmp_path / 'o'
    run_pseudo_job(cfg_a, work_dir=work)
    old = pf.tree_bytes(work)
    cfg_b = _cfg(tmp_path, folder)
    cfg_b.pseudo_job.postprocess_workers = 0
    cfg_b.mask_maker.bg_power = 2.5
    reference = tmp_path / 'ref'
    run_pseudo_job(cfg_b, work_dir=reference)
    new = pf.tree_bytes(reference)
    assert old['masks/img00.png'] != new['masks/img00.png']

    status = _fork_run(cfg_b, work, 'between_images:2', resume=False)
    assert os.WIFSIGNALED(status)
    summary = run_pseudo_job(cfg_b, work_dir=work)  # the plain command
    assert summary['counts']['skipped_resumed'] == 2 and summary['counts']['processed'] == 4
    assert pf.tree_bytes(work) == new  # nothing of A left among the outputs
    (kept,) = list((work / 'superseded').iterdir())  # A was moved aside, not deleted
    assert pf.tree_bytes(kept) == old


def test_weights_content_is_part_of_the_fingerprint(tmp_path, folder):
    """#16.2: the same path with other content is another model."""
    weights = tmp_path / 'w.pt'
    weights.write_bytes(b'model one')
    cfg = _cfg(tmp_path, folder)
    cfg.generator.weights = str(weights)
    run_pseudo_job(cfg, work_dir=tmp_path / 'o')
    fp = json.loads((tmp_path / 'o' / FINGERPRINT_FILE).read_text())
    assert list(fp['settings']['weights']) == [str(weights)]
    assert run_pseudo_job(cfg, work_dir=tmp_path / 'o')['counts']['skipped_resumed'] == 6
    weights.write_bytes(b'model two')
    with pytest.raises(WorkDirConflictError, match=r'weights content \[.*w\.pt'):
        run_pseudo_job(cfg, work_dir=tmp_path / 'o')


@pytest.mark.parametrize('what', ['missing', 'corrupt'])
def test_outputs_without_a_valid_fingerprint_are_refused(tmp_path, folder, what):
    cfg = _cfg(tmp_path, folder)
    run_pseudo_job(cfg, work_dir=tmp_path / 'o')
    fp = tmp_path / 'o' / FINGERPRINT_FILE
    if what == 'missing':
        fp.unlink()
    else:
        fp.write_text('{"sha2')
    with pytest.raises(WorkDirConflictError, match='settings they were made with are unknown'):
        run_pseudo_job(cfg, work_dir=tmp_path / 'o')
    summary = run_pseudo_job(cfg, work_dir=tmp_path / 'o', resume=False)
    assert summary['counts']['processed'] == 6


def test_fingerprint_is_written_only_after_validation_and_model_build(tmp_path, folder):
    """#16.3: a typo leaves no fingerprint that would refuse the corrected command."""
    cfg = _cfg(tmp_path, folder)
    cfg.generator.colour = 'blue'  # unknown argument: the generator cannot be built
    with pytest.raises(TypeError, match='colour') as info:
        run_pseudo_job(cfg, work_dir=tmp_path / 'o')
    assert info.value.wsss_config_section == f'generator ({pf.FAKE_GENERATOR})'
    assert not (tmp_path / 'o' / FINGERPRINT_FILE).exists()
    cfg.generator.pop('colour')
    assert run_pseudo_job(cfg, work_dir=tmp_path / 'o')['counts']['processed'] == 6


def test_corrupt_outputs_are_not_done(tmp_path, folder):
    """#16.8: a zeroed mask, a truncated confidence map, a garbage CAM are recomputed."""
    cfg = _cfg(tmp_path, folder)
    work = tmp_path / 'o'
    run_pseudo_job(cfg, work_dir=work, save_cams=True)
    ref = pf.tree_bytes(work)
    mask = work / 'masks' / 'img01.png'
    mask.write_bytes(bytes(len(mask.read_bytes())))  # same size, zeroed
    conf = work / 'confidence' / 'img02.png'
    conf.write_bytes(conf.read_bytes()[:40])
    cam = work / 'cams' / 'img04.npy'
    data = bytearray(cam.read_bytes())
    data[-3] ^= 0xFF  # one flipped byte, same size
    cam.write_bytes(bytes(data))
    state = inspect_work_dir(work, [f'img{i:02d}' for i in range(6)],
                             json.loads((work / FINGERPRINT_FILE).read_text()), save_cams=True)
    assert sorted(set(f'img{i:02d}' for i in range(6)) - set(state.done)) == ['img01', 'img02', 'img04']
    # 'size' verification catches the truncation only
    state = inspect_work_dir(work, [f'img{i:02d}' for i in range(6)],
                             json.loads((work / FINGERPRINT_FILE).read_text()), save_cams=True, verify='size')
    assert sorted(set(f'img{i:02d}' for i in range(6)) - set(state.done)) == ['img02']
    summary = run_pseudo_job(cfg, work_dir=work, save_cams=True)
    assert summary['counts']['processed'] == 3 and summary['counts']['skipped_resumed'] == 3
    assert pf.tree_bytes(work) == ref


def test_provenance_records_size_and_crc_of_the_written_bytes(tmp_path, folder):
    import zlib
    cfg = _cfg(tmp_path, folder)
    run_pseudo_job(cfg, work_dir=tmp_path / 'o')
    sha = json.loads((tmp_path / 'o' / FINGERPRINT_FILE).read_text())['sha256']
    rec = read_provenance(tmp_path / 'o', sha)
    assert sorted(rec) == [f'img{i:02d}' for i in range(6)]
    data = (tmp_path / 'o' / 'masks' / 'img03.png').read_bytes()
    assert rec['img03']['masks/img03.png'] == [len(data), zlib.crc32(data)]
    assert read_provenance(tmp_path / 'o', 'another') == {}
    # a torn last line (killed writer) is ignored
    with open(tmp_path / 'o' / '.provenance' / 'rank0.jsonl', 'ab') as f:
        f.write(b'{"id": "img05", "fp": "' + sha.encode() + b'", "fil')
    assert sorted(read_provenance(tmp_path / 'o', sha)) == sorted(rec)


def test_move_aside_moves_everything_and_deletes_nothing(tmp_path):
    for sub in ('masks', 'confidence', '.provenance'):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / 'a').write_bytes(b'x')
    for name in ('summary.json', FINGERPRINT_FILE, 'eval.md', 'notes.txt'):
        (tmp_path / name).write_text('{}')
    dest = move_aside(tmp_path, dict(sha256='0123456789abcdef'))
    assert dest.parent == tmp_path / 'superseded' and dest.name.endswith('-0123456789ab')
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        ['masks', 'confidence', '.provenance', 'summary.json', FINGERPRINT_FILE, 'eval.md'])
    assert sorted(p.name for p in tmp_path.iterdir()) == ['notes.txt', 'superseded']
    assert move_aside(tmp_path) is None


@pytest.mark.parametrize('section, key, value, match', [
    ('mask_maker', 'ignore_below', 2, r'mask_maker.ignore_below must be in \[0.0, 1.0\], got 2'),
    ('mask_maker', 'ignore_below', -0.5, r'mask_maker.ignore_below must be in \[0.0, 1.0\]'),
    ('mask_maker', 'crf', dict(type='DenseCRF', iters=0), 'crf.iters must be >= 1, got 0'),
    ('pseudo_job', 'eval_conf_thresholds', [1.5], r'pseudo_job.eval_conf_thresholds must be in \[0.0, 1.0\]'),
    ('pseudo_job', 'log_interval', 'abc', "pseudo_job.log_interval must be an integer, got 'abc'"),
    ('pseudo_job', 'torch_threads', 0, 'pseudo_job.torch_threads must be >= 1'),
    ('pseudo_job', 'fsync', 'yes', 'pseudo_job.fsync must be True or False'),
])
def test_every_option_is_validated_before_the_first_image(tmp_path, folder, section, key, value, match):
    """#16.6: the error names the option; no image is touched and no fingerprint written."""
    cfg = _cfg(tmp_path, folder)
    if section == 'mask_maker':
        cfg.mask_maker = dict(type='PseudoMaskMaker', **{key: value})
    else:
        cfg.pseudo_job[key] = value
    with pytest.raises(PseudoConfigError, match=match):
        run_pseudo_job(cfg, work_dir=tmp_path / 'o')
    assert not (tmp_path / 'o' / 'masks').exists() or not any((tmp_path / 'o' / 'masks').iterdir())
    assert not (tmp_path / 'o' / FINGERPRINT_FILE).exists()


def test_classes_are_matched_by_name_not_by_count(tmp_path):
    """#16.5: 20 custom names against the VOC generator are refused, naming the pairs."""
    names = pf.write_images(tmp_path / 'images', 2)
    classes = ['café', '猫'] + [f'thing{i}' for i in range(18)]
    (tmp_path / 'labels.json').write_text(json.dumps({n: ['café'] for n in names}))
    dataset = dict(type='FolderImageLabels', img_dir=str(tmp_path / 'images'),
                   labels=str(tmp_path / 'labels.json'), classes=classes)
    cfg = _cfg(tmp_path, dataset)
    with pytest.raises(PseudoConfigError, match="0: dataset 'café' vs generator 'aeroplane'"):
        run_pseudo_job(cfg, work_dir=tmp_path / 'o')
    cfg.generator = dict(type=pf.FAKE_GENERATOR, num_classes=20)
    cfg.generator['class_table'] = None
    # the same names on both sides work (here: the fake's c0..c19 vs the dataset's): refused too
    with pytest.raises(PseudoConfigError, match='name their classes differently'):
        run_pseudo_job(cfg, work_dir=tmp_path / 'o')


def test_large_images_work_at_a_bounded_size_and_are_upsampled(tmp_path):
    """#16.4: maps/CRF at the working size, the final mask and confidence at the image size."""
    img = np.random.RandomState(0).randint(0, 256, (90, 300, 3)).astype(np.uint8)
    (tmp_path / 'images').mkdir()
    Image.fromarray(img).save(tmp_path / 'images' / 'big.png')
    (tmp_path / 'labels.json').write_text(json.dumps({'big.png': ['dog']}))
    dataset = dict(type='FolderImageLabels', img_dir=str(tmp_path / 'images'),
                   labels=str(tmp_path / 'labels.json'), class_table='voc20')
    cfg = _cfg(tmp_path, dataset)
    cfg.generator.max_side = 100
    cfg.pseudo_job.postprocess_workers = 0
    run_pseudo_job(cfg, work_dir=tmp_path / 'o')
    from wsss_mmseg.pseudo.io import read_confidence_png, read_mask_png
    mask = read_mask_png(tmp_path / 'o' / 'masks' / 'big.png')
    conf = read_confidence_png(tmp_path / 'o' / 'confidence' / 'big.png')
    assert mask.shape == conf.shape == (90, 300)
    # expected: the fake's mask at the working size 30x100 (PIL bilinear), nearest-upsampled x3
    small = np.asarray(Image.fromarray(img).resize((100, 30), Image.BILINEAR))
    gen = pf.FakeGenerator(class_table='voc20')
    small_mask, _ = pf.FakeMaskMaker()(gen.generate_one(small, [11]), small)
    np.testing.assert_array_equal(mask[1::3, 1::3], small_mask)
    # a memory cap below the estimate: recorded as a failure with the reason, job goes on
    cfg.pseudo_job.max_image_memory = 100_000
    summary = run_pseudo_job(cfg, work_dir=tmp_path / 'o2')
    assert summary['failures'][0]['stage'] == 'memory'
    assert 'pseudo_job.max_image_memory' in summary['failures'][0]['reason']


def test_a_bad_image_inside_a_batch_fails_alone(tmp_path, folder):
    """#12.3: the rest of the batch is still written."""
    cfg = _cfg(tmp_path, folder, fail_label=int(
        next(v for v in [3, 7, 11, 14, 17, 0, 4, 8, 12, 15, 18, 1, 5, 9, 13, 16, 19, 2, 6, 10])))
    cfg.generator.batch_size = 6
    labels = json.loads(Path(folder['labels']).read_text())
    from wsss_mmseg.text.vocab import class_names
    voc = class_names('voc20')
    failing = sorted(n[:-4] for n, v in labels.items() if voc[cfg.generator.fail_label] in v)
    assert 0 < len(failing) < 6
    summary = run_pseudo_job(cfg, work_dir=tmp_path / 'o')
    assert sorted(f['id'] for f in summary['failures']) == failing
    assert summary['counts']['processed'] == 6 - len(failing)


def _cli(*args, env=None):
    e = dict(os.environ)
    e['PYTHONPATH'] = os.pathsep.join([str(REPO), str(Path(__file__).resolve().parent)])
    return subprocess.run([sys.executable, str(REPO / 'tools' / 'generate_pseudo.py'), *args],
                          capture_output=True, text=True, env=e, timeout=300)


def test_cli_exit_codes(tmp_path, folder):
    """#16.9: 0 done, 1 images/evaluation failed, 2 cannot write, 3 bad config or work dir."""
    cfg = pf.write_config(tmp_path / 'cfg.py', dataset=folder)
    work = tmp_path / 'o'
    assert _cli(str(cfg), '--work-dir', str(work)).returncode == 0
    bad = _cli(str(cfg), '--work-dir', str(tmp_path / 'o3'), '--cfg-options', 'pseudo_job.log_interval=0')
    assert bad.returncode == 3 and 'pseudo_job.log_interval must be >= 1' in bad.stderr
    (work / FINGERPRINT_FILE).unlink()
    refused = _cli(str(cfg), '--work-dir', str(work))
    assert refused.returncode == 3 and 'settings they were made with are unknown' in refused.stderr
    blocker = tmp_path / 'file'
    blocker.write_text('x')
    unwritable = _cli(str(cfg), '--work-dir', str(blocker / 'o'))
    assert unwritable.returncode == 2 and str(blocker) in unwritable.stderr
    assert 'Traceback' not in unwritable.stderr
