"""End to end on ../shared/data/voc_sample: mim train / mim test of a tiny variant of
configs/pacl_vitb16_voc.py, and tools/patch_alignment.py before and after training."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[2]


def tiny_pacl_config(out_path: Path, *, clip_path: str, voc_root: Path, work_dir: Path,
                     max_iters: int = 15, val_images: int = 6) -> Path:
    """Load the real VOC config, shrink weights/sizes/iterations, dump it to ``out_path``."""
    cfg = Config.fromfile(str(REPO / 'configs' / 'pacl_vitb16_voc.py'))
    clip = dict(model_name=None, pretrained=clip_path)
    crop = (64, 64)
    cfg.work_dir = str(work_dir)
    cfg.model.data_preprocessor.size = crop
    cfg.model.backbone.clip = clip
    cfg.model.decode_head.clip = clip
    cfg.model.decode_head.in_channels = 64  # tiny CLIP ViT width
    train = cfg.train_dataloader
    train.batch_size = 4
    train.num_workers = 0
    train.persistent_workers = False
    train.dataset.source.update(data_root=str(voc_root), split='ImageSets/Segmentation/val.txt',
                                labels='cls_labels.json', gt_dir='SegmentationClass')
    pipe = train.dataset.pipeline
    pipe[1].update(scale=(128, 64), ratio_range=(1.0, 1.25))
    pipe[2].update(crop_size=crop)
    val = cfg.val_dataloader
    val.num_workers = 0
    val.persistent_workers = False
    val.dataset.data_root = str(voc_root)
    val.dataset.indices = val_images
    val.dataset.pipeline[1].update(scale=(2048, 64))
    cfg.test_dataloader = val
    cfg.optim_wrapper.optimizer.lr = 1e-2
    cfg.param_scheduler = [dict(type='CosineAnnealingLR', eta_min=1e-3, by_epoch=False, begin=0, end=max_iters)]
    cfg.train_cfg.update(max_iters=max_iters, val_interval=10 * max_iters)
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = max_iters
    cfg.env_cfg.mp_cfg.mp_start_method = 'fork'
    cfg.dump(str(out_path))
    return out_path


def _mim() -> Path:
    mim = Path(sys.executable).parent / 'mim'
    if not mim.is_file():
        pytest.skip(f'mim not installed next to {sys.executable}')
    return mim


def _run(cmd, cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return log


def _alignment_tool():
    spec = importlib.util.spec_from_file_location('patch_alignment_tool', REPO / 'tools' / 'patch_alignment.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mim_train_lowers_loss_test_reports_miou_and_alignment(tmp_path, tiny_clip_path, shared_data, capsys):
    voc = shared_data / 'voc_sample'
    work = tmp_path / 'work'
    cfg = tiny_pacl_config(tmp_path / 'tiny_pacl.py', clip_path=tiny_clip_path, voc_root=voc, work_dir=work)
    mim = _mim()

    log = _run([mim, 'train', 'mmsegmentation', cfg, '--work-dir', work], cwd=tmp_path)
    losses = [float(v) for v in re.findall(r'decode\.loss_pacl_label: ([0-9.]+)', log)]
    assert len(losses) == 15, log[-3000:]
    assert losses[-1] < 0.8 * losses[0], losses
    ckpt = work / 'iter_15.pth'
    assert ckpt.is_file()

    log = _run([mim, 'test', 'mmsegmentation', cfg, '--checkpoint', ckpt, '--work-dir', work], cwd=tmp_path)
    miou = re.findall(r'mIoU: ([0-9.]+)', log)
    assert miou, log[-3000:]
    assert 0.0 <= float(miou[-1]) <= 100.0

    # the trained checkpoint as a pseudo-label source of the pseudo-label job
    from wsss_mmseg.pseudo.job import run_pseudo_job
    split = tmp_path / 'three.txt'
    split.write_text('\n'.join((voc / 'ImageSets' / 'Segmentation' / 'val.txt').read_text().split()[:3]) + '\n')
    job_cfg = dict(pseudo_dataset=dict(type='VOCImageLabels', data_root=str(voc), split=str(split),
                                       labels='cls_labels.json', gt_dir='SegmentationClass', class_table='voc20'),
                   generator=dict(type='PACLGenerator', model=Config.fromfile(str(cfg)).model.to_dict(),
                                  checkpoint=str(ckpt), device='cpu', max_side=128),
                   mask_maker=dict(type='PseudoMaskMaker', bg_power=1, crf=None),
                   pseudo_job=dict(evaluate=False))
    summary = run_pseudo_job(job_cfg, work_dir=tmp_path / 'pseudo')
    assert len(list((tmp_path / 'pseudo' / 'masks').glob('*.png'))) == 3, summary

    tool = _alignment_tool()
    common = [str(cfg), '--size', '64', '--max-images', '12']
    before = tool.main(common)
    after = tool.main(common + ['--checkpoint', str(ckpt)])
    out = capsys.readouterr().out
    assert out.count('patch_acc') == 2 and out.count('coherence_auc') == 2
    assert 'untrained head' in out and 'iter_15.pth' in out
    for res in (before, after):
        for name in ('raw_clip', 'pacl_head'):
            assert 0.0 <= res[name]['patch_acc'] <= 1.0 and 0.0 <= res[name]['coherence_auc'] <= 1.0
            assert res[name]['fg_patches'] > 0
    # untrained head (init='clip_proj') = raw CLIP; raw CLIP does not change with training
    assert before['pacl_head']['patch_acc'] == pytest.approx(before['raw_clip']['patch_acc'])
    assert after['raw_clip'] == before['raw_clip']
    assert after['pacl_head'] != before['pacl_head']


def test_alignment_tool_bad_input(tmp_path, tiny_clip_path, shared_data):
    cfg = tiny_pacl_config(tmp_path / 'tiny_pacl.py', clip_path=tiny_clip_path,
                           voc_root=shared_data / 'voc_sample', work_dir=tmp_path / 'w')
    tool = _alignment_tool()
    with pytest.raises(FileNotFoundError, match='id list not found'):
        tool.main([str(cfg), '--split', 'nope.txt', '--size', '64'])
    with pytest.raises(ValueError, match='multiple of the patch size'):
        tool.main([str(cfg), '--size', '60', '--max-images', '1'])


def test_caption_config_trains_a_few_iterations(tmp_path, tiny_clip_path, shared_data):
    """configs/pacl_vitb16_coco_captions.py, shrunk: captions JSON over 4 VOC sample images."""
    import json

    from mmengine.runner import Runner
    voc = shared_data / 'voc_sample'
    ids = (voc / 'ImageSets' / 'Segmentation' / 'val.txt').read_text().split()[:4]
    caps = ['a photo of a dog', 'a red bus on a road', 'people sitting on a sofa', 'a cat on a chair']
    ann = tmp_path / 'captions.json'
    ann.write_text(json.dumps(dict(
        images=[dict(id=i, file_name=f'{name}.jpg') for i, name in enumerate(ids)],
        annotations=[dict(image_id=i, caption=c) for i, c in enumerate(caps)])))
    base = tiny_pacl_config(tmp_path / 'tiny_pacl.py', clip_path=tiny_clip_path, voc_root=voc,
                            work_dir=tmp_path / 'work', max_iters=4)
    cfg = Config.fromfile(str(REPO / 'configs' / 'pacl_vitb16_coco_captions.py'))
    tiny = Config.fromfile(str(base))
    cfg.model = tiny.model
    cfg.model.decode_head.loss_decode = [dict(type='PACLInfoNCELoss')]
    cfg.val_dataloader = cfg.test_dataloader = None
    cfg.val_cfg = cfg.test_cfg = cfg.val_evaluator = cfg.test_evaluator = None
    train = cfg.train_dataloader
    train.update(batch_size=4, num_workers=0, persistent_workers=False)
    train.dataset.update(data_root=None, ann_file=str(ann), img_dir=str(voc / 'JPEGImages'))
    train.dataset.pipeline[2].update(scale=(128, 64), ratio_range=(1.0, 1.25))
    train.dataset.pipeline[3].update(crop_size=(64, 64))
    cfg.optim_wrapper = tiny.optim_wrapper
    cfg.param_scheduler = tiny.param_scheduler
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=4, val_interval=100)
    cfg.default_hooks = tiny.default_hooks
    cfg.work_dir = str(tmp_path / 'work')
    cfg.experiment_name = 'pacl_caption_test'
    runner = Runner.from_cfg(cfg)
    runner.train()
    head = runner.model.decode_head
    scale = head.loss_decode[0].params.log_scale
    # the scale starts on its bound (100): it can only move down, and does (by much more than fp noise)
    assert scale.requires_grad and float(scale.detach().exp()) < 100.0 - 1e-3
    assert (tmp_path / 'work' / 'iter_4.pth').is_file()
