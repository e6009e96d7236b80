"""tools/generate_pseudo.py end to end: CLI, exit codes, kill + resume, 2-process gloo, tiny CLIP."""
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / 'tools' / 'generate_pseudo.py'
FAKES_DIR = REPO / 'tests' / 'test_pseudo'
sys.path.insert(0, str(FAKES_DIR))
import pseudo_fakes as pf  # noqa: E402

import wsss_mmseg.datasets  # noqa: E402,F401
from wsss_mmseg.pseudo.job import run_pseudo_job  # noqa: E402


def _env():
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [str(REPO), str(FAKES_DIR)] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    env.setdefault('OMP_NUM_THREADS', '1')
    return env


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _load_tool():
    spec = importlib.util.spec_from_file_location('generate_pseudo_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help_documents_label_formats():
    out = _cli('--help')
    assert out.returncode == 0, out.stderr
    for needle in ('FolderImageLabels', 'image,labels', '--cfg-options', 'cls_labels.npy',
                   'masks/<id>.png', '--launcher', '--save-cams'):
        assert needle in out.stdout


def test_default_work_dir():
    tool = _load_tool()
    assert tool.default_work_dir(Config(dict()), 'configs/x/my_cfg.py') == \
        os.path.join('work_dirs', 'my_cfg', 'pseudo')
    assert tool.default_work_dir(Config(dict(work_dir='/w/run1')), 'a.py') == '/w/run1/pseudo'


def test_cli_run_then_failures_give_exit_code_1(tmp_path):
    ds = pf.folder_dataset(tmp_path / 'data', n=4)
    cfg = pf.write_config(tmp_path / 'cfg.py', dataset=ds)
    out = _cli(cfg, '--work-dir', tmp_path / 'ok', '--save-cams')
    assert out.returncode == 0, out.stderr
    assert len(list((tmp_path / 'ok' / 'cams').glob('*.npy'))) == 4
    assert (tmp_path / 'ok' / 'pseudo.log').is_file()
    # corrupt one image and label another with a class the generator refuses
    (Path(ds['img_dir']) / 'img02.png').write_bytes(b'\x89PNG garbage')
    labels = json.loads(Path(ds['labels']).read_text())
    labels['img03.png'] = ['car']
    Path(ds['labels']).write_text(json.dumps(labels))
    cfg = pf.write_config(tmp_path / 'cfg2.py', dataset=ds, fail_label=6)  # 6 = car
    out = _cli(cfg, '--work-dir', tmp_path / 'bad')
    assert out.returncode == 1
    assert '2 image(s) failed' in out.stderr
    assert 'img02' in out.stderr and 'img02.png' in out.stderr
    assert 'img03' in out.stderr and 'refuses label 6' in out.stderr
    summary = json.loads((tmp_path / 'bad' / 'summary.json').read_text())
    assert summary['counts']['failed'] == 2 and summary['counts']['done'] == 2


def test_cli_unwritable_work_dir(tmp_path):
    ds = pf.folder_dataset(tmp_path / 'data', n=1)
    cfg = pf.write_config(tmp_path / 'cfg.py', dataset=ds)
    (tmp_path / 'file').write_text('not a folder')
    out = _cli(cfg, '--work-dir', tmp_path / 'file' / 'pseudo')
    assert out.returncode == 2  # cannot write (README: exit statuses), before anything else
    assert str(tmp_path / 'file' / 'pseudo') in out.stderr and 'Traceback' not in out.stderr


def test_cli_cfg_options_switch_to_folder_dataset(tmp_path, shared_data):
    ds = pf.folder_dataset(tmp_path / 'data', n=3)
    voc = dict(type='VOCImageLabels', data_root=str(shared_data / 'voc_sample'),
               split='ImageSets/Segmentation/val.txt', labels='cls_labels.json')
    cfg = pf.write_config(tmp_path / 'cfg.py', dataset=voc)
    out = _cli(cfg, '--work-dir', tmp_path / 'o', '--cfg-options',
               'pseudo_dataset._delete_=True', 'pseudo_dataset.type=FolderImageLabels',
               f'pseudo_dataset.img_dir={ds["img_dir"]}', f'pseudo_dataset.labels={ds["labels"]}',
               'pseudo_dataset.class_table=voc20')
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / 'o' / 'masks').iterdir()) == \
        ['img00.png', 'img01.png', 'img02.png']


def test_kill_midway_then_resume_is_byte_identical(tmp_path):
    n = 12
    ds = pf.folder_dataset(tmp_path / 'data', n=n)
    ref_dir = tmp_path / 'ref'
    run_pseudo_job(Config.fromfile(str(pf.write_config(tmp_path / 'ref.py', dataset=ds))),
                   work_dir=ref_dir, save_cams=True)
    reference = pf.tree_bytes(ref_dir)
    assert len(reference) == 3 * n

    cfg = pf.write_config(tmp_path / 'slow.py', dataset=ds, delay=0.25)
    work = tmp_path / 'killed'
    proc = subprocess.Popen([sys.executable, str(TOOL), str(cfg), '--work-dir', str(work),
                             '--save-cams'], cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            masks = list((work / 'masks').glob('*.png')) if (work / 'masks').is_dir() else []
            if len(masks) >= 3:
                break
            if proc.poll() is not None:
                pytest.fail('the job ended before it could be interrupted')
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    partial = pf.tree_bytes(work)
    assert 0 < len(partial) < 3 * n, 'the kill did not land mid-run'
    for name, data in partial.items():  # whatever exists under a final name is complete
        assert data == reference[name], name
    assert not (work / 'summary.json').exists()

    out = _cli(cfg, '--work-dir', work, '--save-cams')
    assert out.returncode == 0, out.stderr
    assert pf.tree_bytes(work) == reference
    assert not list(work.rglob(f'*{".wsss-tmp"}'))
    counts = json.loads((work / 'summary.json').read_text())['counts']
    # an image counts as resumed once its provenance record is written, which follows its
    # files by at most the images in flight in the post-processing workers
    assert counts['done'] == n and counts['skipped_resumed'] >= 1
    assert counts['processed'] + counts['skipped_resumed'] == n


def test_two_process_gloo_run_matches_single_process(tmp_path):
    ds = pf.folder_dataset(tmp_path / 'data', n=7)
    cfg = pf.write_config(tmp_path / 'cfg.py', dataset=ds)
    single = tmp_path / 'single'
    run_pseudo_job(Config.fromfile(str(cfg)), work_dir=single, save_cams=True)
    dist_dir = tmp_path / 'dist'
    out = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
         f'--master_port={_free_port()}', str(TOOL), str(cfg), '--work-dir', str(dist_dir),
         '--save-cams', '--launcher', 'pytorch'],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert pf.tree_bytes(dist_dir) == pf.tree_bytes(single)
    summary = json.loads((dist_dir / 'summary.json').read_text())
    assert summary['world_size'] == 2
    assert [r['assigned'] for r in summary['timings']['per_rank']] == [4, 3]
    assert summary['counts'] == dict(total=7, done=7, processed=7, skipped_resumed=0, failed=0,
                                     evaluation_failed=0)
    assert not (dist_dir / '.pseudo_ranks').exists()


# --------------------------------------------------- real generator, tiny CLIP
def test_end_to_end_tiny_clip_on_voc_sample(tmp_path, shared_data, tiny_clip_path):
    """The real CLIPESGenerator + PseudoMaskMaker with a tiny random CLIP (OpenAI format)."""
    pytest.importorskip('wsss_mmseg.models.generators')
    clip_path = tiny_clip_path
    voc = shared_data / 'voc_sample'
    ids = (voc / 'ImageSets' / 'Segmentation' / 'val.txt').read_text().split()[:3]
    (tmp_path / 'split.txt').write_text('\n'.join(ids) + '\n')
    cfg = tmp_path / 'clip_es.py'
    cfg.write_text(
        f'pseudo_dataset = dict(type="VOCImageLabels", data_root={str(voc)!r}, '
        f'split={str(tmp_path / "split.txt")!r}, labels="cls_labels.json", '
        'gt_dir="SegmentationClass")\n'
        f'generator = dict(type="CLIPESGenerator", clip=dict(model_name=None, '
        f'pretrained={str(clip_path)!r}), class_table="voc20")\n'
        'mask_maker = dict(type="PseudoMaskMaker", bg_power=1, crf=None)\n'
        'pseudo_job = dict(torch_threads=2)\n')
    work = tmp_path / 'out'
    out = _cli(cfg, '--work-dir', work, '--save-cams', timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    labels = json.loads((voc / 'cls_labels.json').read_text())['labels']
    from PIL import Image

    from wsss_mmseg.pseudo.io import load_cam_npy, read_confidence_png, read_mask_png
    for image_id in ids:
        with Image.open(voc / 'JPEGImages' / f'{image_id}.jpg') as img:
            hw = (img.height, img.width)
        mask = read_mask_png(work / 'masks' / f'{image_id}.png')
        assert mask.shape == hw
        assert set(np.unique(mask).tolist()) <= {0} | {c + 1 for c in labels[image_id]}
        conf = read_confidence_png(work / 'confidence' / f'{image_id}.png')
        assert conf.shape == hw and conf.min() >= 0 and conf.max() <= 1
        cams = load_cam_npy(work / 'cams' / f'{image_id}.npy')
        assert cams['keys'].tolist() == labels[image_id]
        assert cams['attn_highres'].dtype == np.float16
        assert cams['cam'].shape == cams['cam_refined'].shape == (len(labels[image_id]),) + hw
        assert np.array_equal(cams['attn_highres'], cams['cam_refined'])
    summary = json.loads((work / 'summary.json').read_text())
    assert summary['evaluation']['num_images'] == 3
    assert summary['config']['generator']['type'] == 'CLIPESGenerator'
    assert (work / 'eval.md').is_file() and (work / 'eval_iou.png').is_file()
    assert [r['torch_threads'] for r in summary['timings']['per_rank']] == [2]


def test_tiny_clip_with_crf_and_confidence_ignore(tmp_path, shared_data, tiny_clip_path):
    """Official CGL-style masks: dense CRF, pixels with confidence < 0.95 -> 255."""
    pytest.importorskip('wsss_mmseg.models.generators')
    pytest.importorskip('wsss_mmseg.models.postprocessors')  # DenseCRF
    pytest.importorskip('pydensecrf')
    voc = shared_data / 'voc_sample'
    (tmp_path / 'split.txt').write_text('2007_001288\n2007_001408\n')
    cfg = Config(dict(
        pseudo_dataset=dict(type='VOCImageLabels', data_root=str(voc),
                            split=str(tmp_path / 'split.txt'), labels='cls_labels.json',
                            gt_dir='SegmentationClass'),
        generator=dict(type='CLIPESGenerator', clip=dict(model_name=None,
                                                         pretrained=tiny_clip_path),
                       class_table='voc20'),
        mask_maker=dict(type='PseudoMaskMaker', crf=dict(type='DenseCRF'), ignore_below=0.95)))
    summary = run_pseudo_job(cfg, work_dir=tmp_path / 'o')
    assert summary['counts']['done'] == 2 and summary['counts']['failed'] == 0
    from wsss_mmseg.pseudo.io import read_confidence_png, read_mask_png
    for image_id in ('2007_001288', '2007_001408'):
        mask = read_mask_png(tmp_path / 'o' / 'masks' / f'{image_id}.png')
        conf = read_confidence_png(tmp_path / 'o' / 'confidence' / f'{image_id}.png')
        disagree = np.mean((mask == 255) != (conf < 0.95))
        assert disagree < 1e-3  # only 16-bit rounding right at the threshold may differ
    ev = summary['evaluation']['variants']
    assert ev['all']['ignored_fraction'] == pytest.approx(ev['conf>=0.95']['ignored_fraction'],
                                                          abs=1e-3)


def test_two_process_gloo_real_generator_matches_single_process(tmp_path, tiny_clip_path):
    """#17.3: the README's torchrun command gives the bytes of one process, with default options.

    The single process runs where 2 cores are available (OMP_NUM_THREADS unset), torchrun
    sets OMP_NUM_THREADS=1: the job pins its own thread count, so the bytes are equal.
    """
    pytest.importorskip('wsss_mmseg.models.generators')
    ds = pf.folder_dataset(tmp_path / 'data', n=4)
    cfg = tmp_path / 'clip_es.py'
    cfg.write_text(
        f'pseudo_dataset = {ds!r}\n'
        f'generator = dict(type="CLIPESGenerator", clip=dict(model_name=None, '
        f'pretrained={tiny_clip_path!r}), class_table="voc20")\n'
        'mask_maker = dict(type="PseudoMaskMaker")\n')
    env = _env()
    env.pop('OMP_NUM_THREADS', None)
    out = subprocess.run([sys.executable, str(TOOL), str(cfg), '--work-dir', str(tmp_path / 'single'),
                          '--save-cams'], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    out = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
         f'--master_port={_free_port()}', str(TOOL), str(cfg), '--work-dir',
         str(tmp_path / 'dist'), '--save-cams', '--launcher', 'pytorch'],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    reference = pf.tree_bytes(tmp_path / 'single')
    assert len(reference) == 12
    assert pf.tree_bytes(tmp_path / 'dist') == reference
