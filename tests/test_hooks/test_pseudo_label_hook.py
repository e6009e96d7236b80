"""PseudoLabelHook on a real mmengine Runner built from configs/deeplabv3_cgl_voc.py.

The generator sections are swapped for the deterministic fakes of
``tests/test_pseudo/pseudo_fakes.py`` (no CLIP, milliseconds per image) and the
data for synthetic images, so every decision of the hook can be exercised
quickly: generate, reuse, resume, regenerate on a fingerprint change, failures,
uncovered training images, locking, ``generator_config``.
"""
import copy
import fcntl
import itertools
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

REPO = Path(__file__).resolve().parents[2]
FAKES_DIR = REPO / 'tests' / 'test_pseudo'
sys.path.insert(0, str(FAKES_DIR))
import pseudo_fakes as pf  # noqa: E402

import wsss_mmseg  # noqa: E402,F401
from wsss_mmseg.hooks import PseudoLabelHook  # noqa: E402
from wsss_mmseg.pseudo.io import write_confidence_png  # noqa: E402
from wsss_mmseg.pseudo.workdir import LOCK_FILE  # noqa: E402

N = 6


def _cfg(tmp: Path, *, n_train: int = N, extra_train_ids=(), **hook) -> Config:
    """The real DeepLabV3 CGL config, tiny model, fake generator, synthetic folder data."""
    data = tmp / 'data'
    if not (data / 'labels.json').is_file():
        pf.folder_dataset(data, n=N)
    ids = [f'img{i:02d}' for i in range(n_train)] + list(extra_train_ids)
    (tmp / 'train.txt').write_text('\n'.join(ids) + '\n')
    cfg = Config.fromfile(str(REPO / 'configs' / 'deeplabv3_cgl_voc.py'))
    cfg.pseudo_dataset = dict(type='FolderImageLabels', img_dir=str(data / 'images'),
                              labels=str(data / 'labels.json'), class_table='voc20')
    cfg.generator = dict(type=pf.FAKE_GENERATOR, class_table='voc20')
    cfg.mask_maker = dict(type=pf.FAKE_MASK_MAKER, bg_power=1.0)
    cfg.pseudo_job = dict(log_interval=1, evaluate=False)
    m = cfg.model
    m.pretrained = None
    m.data_preprocessor.size = (32, 32)
    m.backbone.update(depth=18, base_channels=8, stem_channels=8)
    for part in (m.backbone, m.decode_head, m.auxiliary_head):
        part.norm_cfg = dict(type='BN', requires_grad=True)
    m.decode_head.update(in_channels=64, channels=8)
    m.auxiliary_head.update(in_channels=32, channels=8)
    tr = cfg.train_dataloader
    tr.update(batch_size=2, num_workers=0, persistent_workers=False)
    tr.dataset.update(data_root=str(data), ann_file=str(tmp / 'train.txt'), img_suffix='.png')
    tr.dataset.data_prefix = dict(img_path='images', seg_map_path=str(tmp / 'pseudo' / 'masks'))
    for t in tr.dataset.pipeline:
        if t.type == 'RandomResize':
            t.scale = (96, 48)
        if t.type == 'RandomCrop':
            t.crop_size = (32, 32)
    cfg.val_dataloader = cfg.test_dataloader = None
    cfg.val_cfg = cfg.test_cfg = cfg.val_evaluator = cfg.test_evaluator = None
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=2)
    cfg.param_scheduler = []
    cfg.default_hooks.pop('visualization')
    cfg.custom_hooks = [dict(type='PseudoLabelHook', **hook)]
    cfg.work_dir = str(tmp / 'work')
    cfg.experiment_name = f'hooktest_{tmp.name}'
    return cfg


_RUNS = itertools.count()


def _runner(cfg: Config) -> Runner:
    cfg = copy.deepcopy(cfg)
    cfg.experiment_name = f'{cfg.experiment_name}_{next(_RUNS)}'  # one logger per runner
    return Runner.from_cfg(cfg)


def _hook(runner: Runner) -> PseudoLabelHook:
    return next(h for h in runner.hooks if isinstance(h, PseudoLabelHook))


def _run_hook(cfg: Config) -> tuple:
    runner = _runner(cfg)
    hook = _hook(runner)
    hook.before_train(runner)
    return runner, hook


def _mtimes(folder: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob('*.png'))}


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match='mode must be one of'):
        PseudoLabelHook(mode='always')


def test_generate_then_reuse_then_resume(tmp_path):
    cfg = _cfg(tmp_path)
    runner, hook = _run_hook(cfg)
    assert hook.last_action == 'generate'
    masks = tmp_path / 'pseudo' / 'masks'
    assert len(list(masks.glob('*.png'))) == N
    assert len(list((tmp_path / 'pseudo' / 'confidence').glob('*.png'))) == N
    batch = next(runner.train_loop.dataloader_iterator)  # the first batch reads the new files
    sample = batch['data_samples'][0]
    # the crop is at most 32x32 (smaller where the unseeded RandomResize drew a small scale)
    h, w = sample.gt_confidence.data.shape[-2:]
    assert 0 < h <= 32 and 0 < w <= 32 and (h, w) == tuple(sample.gt_sem_seg.data.shape[-2:])

    before = _mtimes(masks)
    _, hook = _run_hook(cfg)
    assert hook.last_action == 'reuse'
    assert _mtimes(masks) == before  # nothing rewritten

    (masks / 'img03.png').unlink()  # an interrupted run: only that image is made again
    _, hook = _run_hook(cfg)
    assert hook.last_action == 'resume'
    after = _mtimes(masks)
    assert set(after) == set(before)
    assert {k for k in after if after[k] != before[k]} == {'img03.png'}


def test_labels_of_another_configuration_are_never_deleted(tmp_path):
    """#17.1: e.g. classic CAM labels the README points the CGL training at."""
    cfg = _cfg(tmp_path)
    _run_hook(cfg)
    pseudo = tmp_path / 'pseudo'
    before = pf.tree_bytes(pseudo)
    old_fp = (pseudo / 'pseudo_fingerprint.json').read_bytes()
    (pseudo / 'keep_me.txt').write_text('user file')
    cfg.mask_maker.bg_power = 3.0  # another configuration made the labels
    runner = _runner(cfg)
    with pytest.raises(ValueError, match=r"never deletes or overwrites.*mode='reuse'.*mode='regenerate'"):
        _hook(runner).before_train(runner)
    assert pf.tree_bytes(pseudo) == before  # untouched
    assert (pseudo / 'pseudo_fingerprint.json').read_bytes() == old_fp
    # a resumed training gets the same answer
    runner = _runner(cfg)
    runner.train_loop._iter = 5
    with pytest.raises(ValueError, match='never deletes or overwrites'):
        _hook(runner).before_train(runner)
    # mode='reuse': trains on them as they are
    cfg.custom_hooks = [dict(type='PseudoLabelHook', mode='reuse')]
    _, hook = _run_hook(cfg)
    assert hook.last_action == 'reuse' and pf.tree_bytes(pseudo) == before
    # mode='regenerate': the old set is moved aside, never deleted
    cfg.custom_hooks = [dict(type='PseudoLabelHook', mode='regenerate')]
    _, hook = _run_hook(cfg)
    assert hook.last_action == 'regenerate'
    kept = list((pseudo / 'superseded').iterdir())
    assert len(kept) == 1 and pf.tree_bytes(kept[0]) == before
    assert (kept[0] / 'pseudo_fingerprint.json').read_bytes() == old_fp
    assert (pseudo / 'keep_me.txt').read_text() == 'user file'
    assert pf.tree_bytes(pseudo)['masks/img01.png'] != before['masks/img01.png']
    cfg.custom_hooks = [dict(type='PseudoLabelHook')]
    _, hook = _run_hook(cfg)
    assert hook.last_action == 'reuse'


def test_labels_file_edit_changes_the_fingerprint(tmp_path):
    cfg = _cfg(tmp_path)
    _run_hook(cfg)
    labels_file = tmp_path / 'data' / 'labels.json'
    labels = json.loads(labels_file.read_text())
    labels['img00.png'] = ['dog']
    labels_file.write_text(json.dumps(labels))
    runner = _runner(cfg)
    with pytest.raises(ValueError, match=r'label files \[.*labels.json'):
        _hook(runner).before_train(runner)


def test_failures_stop_training_with_a_list(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.generator.fail_label = 3  # 'boat': img01 (and others with it) fail
    labels = json.loads((tmp_path / 'data' / 'labels.json').read_text())
    failing = sorted(n[:-4] for n, v in labels.items() if 'boat' in v)
    assert failing
    runner = _runner(cfg)
    with pytest.raises(RuntimeError) as err:
        _hook(runner).before_train(runner)
    msg = str(err.value)
    assert f'{len(failing)} image(s) failed' in msg and 'Training stopped' in msg
    for image_id in failing:
        assert image_id in msg
    assert 'refuses label 3' in msg and 'allow_failures=True' in msg
    # the finished images are kept: the next run only retries the failed ones
    assert len(list((tmp_path / 'pseudo' / 'masks').glob('*.png'))) == N - len(failing)


def test_allow_failures_trains_without_them(tmp_path):
    cfg = _cfg(tmp_path, allow_failures=True)
    cfg.generator.fail_label = 3
    labels = json.loads((tmp_path / 'data' / 'labels.json').read_text())
    n_fail = sum('boat' in v for v in labels.values())
    runner, hook = _run_hook(cfg)
    dataset = runner.train_loop.dataloader.dataset
    assert len(dataset) == N - n_fail
    assert all('img01' not in dataset.get_data_info(i)['img_path'] for i in range(len(dataset)))
    batch = next(runner.train_loop.dataloader_iterator)
    assert len(batch['inputs']) == 2


def test_training_images_not_covered_by_the_generator(tmp_path):
    cfg = _cfg(tmp_path, n_train=3, extra_train_ids=['not_labelled'])
    (tmp_path / 'data' / 'images' / 'not_labelled.png').write_bytes(
        (tmp_path / 'data' / 'images' / 'img00.png').read_bytes())
    runner = _runner(cfg)
    with pytest.raises(FileNotFoundError) as err:
        _hook(runner).before_train(runner)
    msg = str(err.value)
    assert '1 of 4 training image(s)' in msg
    assert str(tmp_path / 'pseudo' / 'masks' / 'not_labelled.png') in msg
    assert 'does not cover' in msg


def test_reuse_mode_never_generates(tmp_path):
    cfg = _cfg(tmp_path, mode='reuse')
    runner = _runner(cfg)
    with pytest.raises(FileNotFoundError, match=r'img00\.png'):
        _hook(runner).before_train(runner)
    assert not (tmp_path / 'pseudo' / 'masks').exists()
    # labels made by another program (no fingerprint, no generator sections needed)
    _run_hook(_cfg(tmp_path))
    (tmp_path / 'pseudo' / 'pseudo_fingerprint.json').unlink()
    cfg = _cfg(tmp_path, mode='reuse')
    for section in ('pseudo_dataset', 'generator', 'mask_maker', 'pseudo_job'):
        cfg.pop(section)
    _, hook = _run_hook(cfg)
    assert hook.last_action == 'reuse'
    # sections whose label source is gone: reuse still works (only the fingerprint is unchecked)
    cfg = _cfg(tmp_path, mode='reuse')
    cfg.pseudo_dataset.labels = str(tmp_path / 'gone.json')
    _, hook = _run_hook(cfg)
    assert hook.last_action == 'reuse'
    cfg.custom_hooks = [dict(type='PseudoLabelHook', mode='auto')]
    runner = _runner(cfg)
    with pytest.raises(FileNotFoundError, match='gone.json'):
        _hook(runner).before_train(runner)


def test_outputs_of_unknown_origin_are_not_deleted_in_auto_mode(tmp_path):
    cfg = _cfg(tmp_path)
    _run_hook(cfg)
    (tmp_path / 'pseudo' / 'pseudo_fingerprint.json').unlink()
    runner = _runner(cfg)
    with pytest.raises(ValueError, match="settings are unknown.*mode='reuse'"):
        _hook(runner).before_train(runner)
    assert len(list((tmp_path / 'pseudo' / 'masks').glob('*.png'))) == N


def test_out_dir_must_match_the_dataset(tmp_path):
    cfg = _cfg(tmp_path, out_dir=str(tmp_path / 'elsewhere'))
    runner = _runner(cfg)
    with pytest.raises(ValueError, match='differs from the folder the train dataset reads'):
        _hook(runner).before_train(runner)
    cfg = _cfg(tmp_path, out_dir=str(tmp_path / 'pseudo'))
    assert _run_hook(cfg)[1].last_action == 'generate'


def test_missing_generator_sections(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.pop('generator')
    runner = _runner(cfg)
    with pytest.raises(KeyError, match="lacks \\['generator'\\]"):
        _hook(runner).before_train(runner)


def test_generator_config_file_with_overrides(tmp_path):
    cfg = _cfg(tmp_path)
    gen_file = tmp_path / 'gen_cfg.py'
    gen_file.write_text(
        f'pseudo_dataset = {cfg.pseudo_dataset.to_dict()!r}\n'
        f'generator = {cfg.generator.to_dict()!r}\n'
        f'mask_maker = {cfg.mask_maker.to_dict()!r}\n'
        f'pseudo_job = {cfg.pseudo_job.to_dict()!r}\n')
    for section in ('pseudo_dataset', 'generator', 'pseudo_job'):
        cfg.pop(section)
    cfg.mask_maker = dict(bg_power=2.0)  # merged over the file's mask_maker
    cfg.custom_hooks = [dict(type='PseudoLabelHook', generator_config=str(gen_file))]
    runner, hook = _run_hook(cfg)
    assert hook.last_action == 'generate'
    summary = json.loads((tmp_path / 'pseudo' / 'summary.json').read_text())
    assert summary['config']['mask_maker'] == dict(type=pf.FAKE_MASK_MAKER, bg_power=2.0)
    cfg.custom_hooks = [dict(type='PseudoLabelHook', generator_config='no/such/file.py')]
    runner = _runner(cfg)
    with pytest.raises(FileNotFoundError, match='generator_config not found'):
        _hook(runner).before_train(runner)


def test_concurrent_generation_is_refused(tmp_path):
    cfg = _cfg(tmp_path)
    lock_path = tmp_path / 'pseudo' / LOCK_FILE
    lock_path.parent.mkdir(parents=True)
    with open(lock_path, 'a+') as other:  # another process generating into the same folder
        other.write('host elsewhere pid 1\n')
        other.flush()
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        runner = _runner(cfg)
        with pytest.raises(RuntimeError, match='in use by another pseudo-label job.*host elsewhere pid 1'):
            _hook(runner).before_train(runner)
    assert not (tmp_path / 'pseudo' / 'masks').exists()
    assert _run_hook(cfg)[1].last_action == 'generate'  # released -> fine


def test_generation_leaves_threads_and_random_state_alone(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.pseudo_job.torch_threads = 1
    runner = _runner(cfg)
    assert runner.train_loop is not None  # built before the hook runs, as in Runner.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
        _hook(runner).before_train(runner)
        assert torch.get_num_threads() == 2
        assert random.getstate() == states[0]
        assert np.array_equal(np.random.get_state()[1], states[1])
        assert torch.equal(torch.get_rng_state(), states[2])
    finally:
        torch.set_num_threads(threads)


def test_bad_label_files_at_training_time_name_the_file(tmp_path):
    cfg = _cfg(tmp_path)
    runner, _ = _run_hook(cfg)
    conf = tmp_path / 'pseudo' / 'confidence'
    for p in conf.glob('*.png'):  # every confidence map with the wrong size
        write_confidence_png(p, np.full((5, 7), 0.5, np.float32), fsync=False)
    with pytest.raises(ValueError, match=r'size mismatch: image .*confidence .*\.png is 5x7'):
        next(runner.train_loop.dataloader_iterator)
    for p in conf.glob('*.png'):
        p.unlink()
    runner = _runner(cfg)
    _hook(runner).before_train(runner)  # auto: remade, training reads them
    next(runner.train_loop.dataloader_iterator)


def test_wrapped_train_dataset(tmp_path):
    cfg = _cfg(tmp_path, allow_failures=True)
    cfg.train_dataloader.dataset = dict(type='RepeatDataset', times=2,
                                        dataset=cfg.train_dataloader.dataset)
    runner, hook = _run_hook(cfg)  # the folder is found inside the wrapper
    assert hook.last_action == 'generate'
    assert len(list((tmp_path / 'pseudo' / 'masks').glob('*.png'))) == N
    (tmp_path / 'pseudo' / 'confidence' / 'img02.png').unlink()
    cfg.custom_hooks = [dict(type='PseudoLabelHook', mode='reuse', allow_failures=True)]
    runner = _runner(cfg)
    with pytest.raises(ValueError, match='found RepeatDataset'):
        _hook(runner).before_train(runner)


def test_train_dataset_without_pseudo_label_dataset_falls_back_to_work_dir(tmp_path):
    cfg = _cfg(tmp_path)
    work_pseudo = Path(cfg.work_dir) / 'pseudo'
    cfg.train_dataloader.dataset = dict(
        type='BaseSegDataset', data_root=str(tmp_path / 'data'), img_suffix='.png',
        seg_map_suffix='.png', ann_file=str(tmp_path / 'train.txt'),
        data_prefix=dict(img_path='images', seg_map_path=str(work_pseudo / 'masks')),
        pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                  dict(type='RandomCrop', crop_size=(32, 32)), dict(type='PackSegInputs')])
    _, hook = _run_hook(cfg)
    assert hook.last_action == 'generate'
    assert len(list((work_pseudo / 'masks').glob('*.png'))) == N


def test_a_running_generator_job_is_not_disturbed(tmp_path):
    from wsss_mmseg.pseudo.job import acquire_work_dir_lock
    cfg = _cfg(tmp_path)
    _run_hook(cfg)
    cfg.custom_hooks = [dict(type='PseudoLabelHook', mode='regenerate')]
    handle = acquire_work_dir_lock(tmp_path / 'pseudo')  # tools/generate_pseudo.py running
    try:
        runner = _runner(cfg)
        with pytest.raises(RuntimeError, match='in use by another pseudo-label job'):
            _hook(runner).before_train(runner)
    finally:
        handle.close()
    assert len(list((tmp_path / 'pseudo' / 'masks').glob('*.png'))) == N  # nothing deleted
    assert _run_hook(cfg)[1].last_action == 'regenerate'


def test_report_after_generation(tmp_path):
    cfg = _cfg(tmp_path, report=True)
    _, hook = _run_hook(cfg)
    assert hook.last_action == 'generate'
    index = tmp_path / 'pseudo' / 'report' / 'index.html'
    assert index.is_file() and 'img00' in index.read_text()


def test_hook_builds_the_label_source_and_fingerprint_once(tmp_path, monkeypatch):
    """One generating hook run: the plan (dataset + fingerprint) is made once and handed to the job."""
    from wsss_mmseg.datasets.image_labels import FolderImageLabels
    from wsss_mmseg.pseudo import job as job_mod
    from wsss_mmseg.pseudo import workdir
    builds, fingerprints = [], []
    real_init = FolderImageLabels.__init__

    def counting_init(self, *args, **kwargs):
        builds.append(kwargs.get('labels'))
        real_init(self, *args, **kwargs)

    real_fp = workdir.config_fingerprint

    def counting_fp(*args, **kwargs):
        fingerprints.append(1)
        return real_fp(*args, **kwargs)

    monkeypatch.setattr(FolderImageLabels, '__init__', counting_init)
    monkeypatch.setattr(workdir, 'config_fingerprint', counting_fp)
    monkeypatch.setattr(job_mod, 'config_fingerprint', counting_fp)
    cfg = _cfg(tmp_path)
    _, hook = _run_hook(cfg)
    assert hook.last_action == 'generate'
    assert len(list((tmp_path / 'pseudo' / 'masks').glob('*.png'))) == N
    assert builds == [str(tmp_path / 'data' / 'labels.json')]
    assert len(fingerprints) == 1
    # a resume (one image missing) is planned once too
    (tmp_path / 'pseudo' / 'masks' / 'img02.png').unlink()
    builds.clear()
    fingerprints.clear()
    _, hook = _run_hook(cfg)
    assert hook.last_action == 'resume'
    assert len(builds) == 1 and len(fingerprints) == 1


def test_lock_is_released_when_the_plan_fails_after_taking_it(tmp_path):
    """The decision fails with the lock held (labels of another configuration): it is released."""
    from wsss_mmseg.pseudo.workdir import acquire_work_dir_lock
    cfg = _cfg(tmp_path)
    _run_hook(cfg)
    cfg.mask_maker.bg_power = 3.0
    runner = _runner(cfg)
    with pytest.raises(ValueError, match='never deletes or overwrites') as err:
        _hook(runner).before_train(runner)
    assert err.value is not None  # the traceback (and its frames) are still alive here
    acquire_work_dir_lock(tmp_path / 'pseudo').close()  # free: another job could start
    # and after a reuse the lock is not held either
    cfg.custom_hooks = [dict(type='PseudoLabelHook', mode='reuse')]
    runner, hook = _run_hook(cfg)
    assert hook.last_action == 'reuse'
    acquire_work_dir_lock(tmp_path / 'pseudo').close()
