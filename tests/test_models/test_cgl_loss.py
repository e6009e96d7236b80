"""CGLLoss: registry, mu attribute, batch context, standard mmseg heads, tiny training run."""
import copy

import numpy as np
import pytest
import torch

import wsss_mmseg  # noqa: F401  (compat fixes, registries)
import wsss_mmseg.datasets.pseudo_seg  # noqa: F401  (registers PseudoLabelSegDataset)
import wsss_mmseg.datasets.transforms  # noqa: F401  (registers the transforms)
import wsss_mmseg.models.data_preprocessor  # noqa: F401  (registers the preprocessor)
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS, TRANSFORMS

from tests.helpers.pseudo_labels import random_label, write_pseudo_label_dataset
from wsss_mmseg.losses import cgl_cross_entropy
from wsss_mmseg.models import batch_context
from wsss_mmseg.models.cgl_loss import CGLLoss

init_default_scope('mmseg')


@pytest.fixture(autouse=True)
def _clear_context():
    batch_context.clear()
    yield
    batch_context.clear()


def _inputs(seed=0, b=2, c=4, h=10, w=12):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, h, w, generator=g)
    labels = torch.randint(0, c, (b, h, w), generator=g)
    labels[:, 0] = 255
    conf = torch.rand(b, h, w, generator=g)
    return logits, labels, conf


# ----------------------------------------------------------------- the module
def test_registered_and_built_from_config():
    loss = MODELS.build(dict(type='CGLLoss', mu=0.9, soft=True, loss_weight=0.5,
                             loss_name='loss_x'))
    assert isinstance(loss, CGLLoss)
    assert loss.mu == 0.9 and loss.soft and loss.loss_weight == 0.5 and loss.loss_name == 'loss_x'
    assert 'mu=0.9' in repr(loss)


def test_forward_reads_batch_context_and_matches_pure_function():
    logits, labels, conf = _inputs()
    batch_context.set_confidence(conf)
    loss = CGLLoss(mu=0.6, loss_weight=2.0)
    got = loss(logits, labels, weight=None, ignore_index=255)
    torch.testing.assert_close(got, 2.0 * cgl_cross_entropy(logits, labels, conf, mu=0.6))
    ref_labels = labels.clone()
    ref_labels[conf < 0.6] = 255
    ref = torch.nn.CrossEntropyLoss(ignore_index=255)(logits, ref_labels)
    torch.testing.assert_close(got / 2, ref)
    per_pixel = loss(logits, labels, reduction_override='none')
    assert per_pixel.shape == labels.shape


def test_mu_is_changeable_and_validated():
    logits, labels, conf = _inputs(1)
    batch_context.set_confidence(conf)
    loss = CGLLoss(mu=0.95)
    high = loss(logits, labels)
    loss.mu = 0.0
    assert loss.mu == 0.0
    torch.testing.assert_close(loss(logits, labels),
                               torch.nn.CrossEntropyLoss(ignore_index=255)(logits, labels))
    assert not torch.equal(high, loss(logits, labels))
    for bad in (1.5, -0.2, float('nan'), 'x'):
        with pytest.raises(ValueError, match='mu'):
            loss.mu = bad
        with pytest.raises(ValueError, match='mu'):
            CGLLoss(mu=bad)
    assert loss.mu == 0.0


def test_missing_context():
    logits, labels, _ = _inputs(2)
    with pytest.raises(ValueError, match='no batch confidence'):
        CGLLoss(mu=0.95)(logits, labels)
    with pytest.raises(ValueError, match='no batch confidence'):
        CGLLoss(mu=0.0, soft=True)(logits, labels)
    plain = CGLLoss(mu=0.0)(logits, labels)  # documented: plain CE
    torch.testing.assert_close(plain, torch.nn.CrossEntropyLoss(ignore_index=255)(logits, labels))


def test_context_shape_and_call_errors():
    logits, labels, conf = _inputs(3)
    batch_context.set_confidence(conf[:, :-1])
    with pytest.raises(ValueError, match='batch confidence shape'):
        CGLLoss()(logits, labels)
    batch_context.set_confidence(conf)
    with pytest.raises(ValueError, match='ignore_index'):
        CGLLoss()(logits, labels, ignore_index=0)
    with pytest.raises(TypeError, match='unsupported'):
        CGLLoss()(logits, labels, foo=1)
    with pytest.raises(ValueError, match='avg_factor'):
        CGLLoss()(logits, labels, avg_factor=3.0)
    with pytest.raises(ValueError):
        batch_context.set_confidence(conf.long())


# ------------------------------------------------------- standard mmseg heads
NORM = dict(type='BN', requires_grad=True)
RESNET = dict(type='ResNetV1c', depth=18, stem_channels=16, base_channels=8, num_stages=4,
              out_indices=(0, 1, 2, 3), dilations=(1, 1, 1, 1), strides=(1, 2, 2, 2),
              norm_cfg=NORM, contract_dilation=True)
MIT = dict(type='MixVisionTransformer', in_channels=3, embed_dims=8, num_stages=4,
           num_layers=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], patch_sizes=[7, 3, 3, 3],
           sr_ratios=[8, 4, 2, 1], out_indices=(0, 1, 2, 3), mlp_ratio=2, drop_rate=0.0,
           attn_drop_rate=0.0, drop_path_rate=0.0)
NUM_CLASSES = 4
COMMON = dict(num_classes=NUM_CLASSES, norm_cfg=NORM, dropout_ratio=0.0, align_corners=False,
              loss_decode=dict(type='CGLLoss', mu=0.5))
HEADS = {
    'deeplabv3': (RESNET, dict(type='ASPPHead', in_channels=64, in_index=3, channels=16,
                               dilations=(1, 2, 3, 4), **COMMON)),
    'deeplabv3plus': (RESNET, dict(type='DepthwiseSeparableASPPHead', in_channels=64, in_index=3,
                                   channels=16, dilations=(1, 2, 3, 4), c1_in_channels=8,
                                   c1_channels=8, **COMMON)),
    'segformer': (MIT, dict(type='SegformerHead', in_channels=[8, 16, 32, 64],
                            in_index=[0, 1, 2, 3], channels=16, **COMMON)),
    'upernet': (RESNET, dict(type='UPerHead', in_channels=[8, 16, 32, 64], in_index=[0, 1, 2, 3],
                             pool_scales=(1, 2, 3, 6), channels=16, **COMMON)),
}
AUX = dict(type='FCNHead', in_channels=32, in_index=2, channels=8, num_convs=1,
           concat_input=False, num_classes=NUM_CLASSES, norm_cfg=NORM, dropout_ratio=0.0,
           align_corners=False, loss_decode=dict(type='CGLLoss', mu=0.5, loss_weight=0.4))
PREPROCESSOR = dict(type='PseudoLabelDataPreProcessor', mean=[123.675, 116.28, 103.53],
                    std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0, seg_pad_val=255,
                    size=(64, 64))


def _model_cfg(name, with_aux):
    backbone, head = HEADS[name]
    cfg = dict(type='EncoderDecoder', data_preprocessor=PREPROCESSOR,
               backbone=copy.deepcopy(backbone), decode_head=copy.deepcopy(head),
               train_cfg=dict(), test_cfg=dict(mode='whole'))
    if with_aux:
        cfg['auxiliary_head'] = copy.deepcopy(AUX)
    return cfg


def _packed_batch(sizes=((64, 64), (56, 60)), seed=0):
    """A collated batch made by PackSegInputsWithConfidence (second sample gets padded)."""
    rng = np.random.default_rng(seed)
    pack = TRANSFORMS.build(dict(type='PackSegInputsWithConfidence'))
    inputs, samples = [], []
    for i, (h, w) in enumerate(sizes):
        label = random_label(rng, h, w, num_classes=NUM_CLASSES)
        results = dict(img=rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
                       gt_seg_map=label, gt_confidence=rng.random((h, w)).astype(np.float32),
                       seg_fields=['gt_seg_map', 'gt_confidence'], img_shape=(h, w),
                       ori_shape=(h, w), img_path=f'img{i}.png', conf_path=f'conf{i}.png')
        packed = pack(results)
        inputs.append(packed['inputs'])
        samples.append(packed['data_samples'])
    return dict(inputs=inputs, data_samples=samples)


@pytest.mark.parametrize('name,with_aux', [('deeplabv3', True), ('deeplabv3plus', False),
                                           ('segformer', False), ('upernet', True)])
def test_standard_heads_train_with_cgl(name, with_aux):
    torch.manual_seed(0)
    model = MODELS.build(_model_cfg(name, with_aux))
    model.train()
    data = model.data_preprocessor(_packed_batch(), training=True)
    conf = batch_context.get_confidence()
    assert conf is not None and conf.shape == (2, 64, 64)
    losses = model.loss(data['inputs'], data['data_samples'])
    keys = ['decode.loss_cgl'] + (['aux.loss_cgl'] if with_aux else [])
    for key in keys:
        assert torch.isfinite(losses[key]) and losses[key] > 0
    sum(losses[k] for k in keys).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    # Reference: mmseg's CrossEntropyLoss(avg_non_ignore=True) on labels where conf < mu -> 255.
    model.zero_grad()
    model.decode_head.loss_decode = MODELS.build(dict(
        type='CrossEntropyLoss', avg_non_ignore=True, loss_name='loss_cgl'))
    if with_aux:
        model.auxiliary_head.loss_decode = MODELS.build(dict(
            type='CrossEntropyLoss', avg_non_ignore=True, loss_weight=0.4, loss_name='loss_cgl'))
    ref_samples = copy.deepcopy(data['data_samples'])
    for i, sample in enumerate(ref_samples):
        sample.gt_sem_seg.data[0][conf[i] < 0.5] = 255
    ref = model.loss(data['inputs'], ref_samples)
    for key in keys:
        torch.testing.assert_close(losses[key].detach(), ref[key].detach(), rtol=1e-5, atol=1e-6)


def test_eval_mode_clears_context():
    model = MODELS.build(_model_cfg('deeplabv3', False))
    model.data_preprocessor(_packed_batch(), training=True)
    assert batch_context.get_confidence() is not None
    model.data_preprocessor(_packed_batch(sizes=((64, 64), (64, 64))), training=False)
    assert batch_context.get_confidence() is None


# ------------------------------------------------------------- end to end run
def _runner_cfg(root, work_dir, max_iters):
    crop = (48, 48)
    dataset = dict(
        type='PseudoLabelSegDataset', data_root=str(root), ann_file='list.txt', img_suffix='.png',
        metainfo=dict(classes=('background', 'a', 'b')),
        data_prefix=dict(img_path='img', seg_map_path=str(root / 'pseudo' / 'masks')),
        check_files=True,
        pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadPseudoLabel'),
                  dict(type='RandomResize', scale=(64, 64), ratio_range=(0.75, 1.25),
                       keep_ratio=True),
                  dict(type='RandomCrop', crop_size=crop), dict(type='RandomFlip', prob=0.5),
                  dict(type='PackSegInputsWithConfidence')])
    model = _model_cfg('deeplabv3', False)
    model['data_preprocessor'] = dict(PREPROCESSOR, size=crop)
    model['backbone']['out_indices'] = (3,)
    model['decode_head'].update(in_index=0, num_classes=3,
                                loss_decode=dict(type='CGLLoss', mu=0.95))
    return dict(
        model=model, work_dir=str(work_dir), default_scope='mmseg',
        train_dataloader=dict(batch_size=4, num_workers=0,
                              sampler=dict(type='InfiniteSampler', shuffle=True), dataset=dataset),
        optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=max_iters),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1), checkpoint=None,
                           timer=dict(type='IterTimerHook')),
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo')),
        randomness=dict(seed=0), log_level='WARNING')


def test_runner_trains_tiny_deeplabv3_with_cgl(tmp_path):
    from mmengine.config import Config
    from mmengine.runner import Runner
    root = tmp_path / 'data'
    write_pseudo_label_dataset(root, n=8, size=64)
    runner = Runner.from_cfg(Config(_runner_cfg(root, tmp_path / 'work', max_iters=10)))
    runner.train()
    assert isinstance(runner.model.decode_head.loss_decode, CGLLoss)
    values = runner.message_hub.get_scalar('train/loss').data[0]
    assert len(values) == 10 and np.isfinite(values).all()
    assert values[-1] < 0.9 * values[0], values
    assert values[-3:].mean() < values[:3].mean(), values
