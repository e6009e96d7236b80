"""2-process CPU (gloo) training of a tiny mmseg model through mmseg's own train.py."""
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import mmseg
import pytest

from tests.helpers.synthetic import write_synthetic_seg_dataset

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def mmseg_tool(name: str) -> Path:
    """mmseg's own ``tools/<name>`` as installed with the package (what ``mim`` runs)."""
    path = Path(mmseg.__file__).parent / '.mim' / 'tools' / name
    if not path.is_file():
        pytest.skip(f'mmseg installation has no {path}')
    return path


TINY_CFG = '''
custom_imports = dict(imports=['wsss_mmseg'], allow_failed_imports=False)
default_scope = 'mmseg'
data_root = {root!r}
crop = (48, 48)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[122.771, 116.746, 104.094],
                           std=[68.501, 66.632, 70.323], bgr_to_rgb=True, pad_val=0,
                           seg_pad_val=255, size=crop),
    # plugin component: the frozen CLIP image tower as backbone (tiny random weights)
    backbone=dict(type='FrozenCLIPImageEncoder',
                  clip=dict(model_name=None, pretrained={clip!r}), out_layers=(-1,)),
    decode_head=dict(type='FCNHead', in_channels=64, in_index=0, channels=16, num_convs=1,
                     concat_input=False, dropout_ratio=0.0, num_classes=3, norm_cfg=norm_cfg,
                     loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
    train_cfg=dict(), test_cfg=dict(mode='whole'))
train_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
    dict(type='RandomCrop', crop_size=crop), dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                 dict(type='PackSegInputs')]
dataset = dict(type='BaseSegDataset', data_root=data_root, img_suffix='.png',
               seg_map_suffix='.png', metainfo=dict(classes=('bg', 'a', 'b')),
               data_prefix=dict(img_path='img', seg_map_path='ann'), ann_file='list.txt')
train_dataloader = dict(batch_size=2, num_workers=0, sampler=dict(type='InfiniteSampler', shuffle=True),
                        dataset=dict(**dataset, pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
                      dataset=dict(**dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
train_cfg = dict(type='IterBasedTrainLoop', max_iters=6, val_interval=6)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(timer=dict(type='IterTimerHook'), logger=dict(type='LoggerHook', interval=2),
                     param_scheduler=dict(type='ParamSchedulerHook'),
                     checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=3),
                     sampler_seed=dict(type='DistSamplerSeedHook'))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
model_wrapper_cfg = dict(type='CPUCompatibleDDP')
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
'''


def test_two_process_gloo_training(tmp_path, tiny_clip_path):
    root = tmp_path / 'data'
    write_synthetic_seg_dataset(root, n=8, size=64)
    cfg = tmp_path / 'tiny_cfg.py'
    cfg.write_text(TINY_CFG.format(root=str(root), clip=tiny_clip_path))
    work = tmp_path / 'work'
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
           f'--master_port={_free_port()}', str(mmseg_tool('train.py')), str(cfg),
           '--launcher', 'pytorch', '--work-dir', str(work)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert (work / 'iter_6.pth').is_file(), log[-2000:]
    assert 'Distributed training: True' in log
    # each of the two ranks fell back from nccl to gloo (compat.cpu_dist)
    assert log.count('using the gloo backend') == 2, log[-2000:]
