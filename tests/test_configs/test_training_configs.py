"""The shipped segmenter configs (pseudo labels + CGL) load on this stack and their models build."""
import copy
import os.path as osp
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import MODEL_WRAPPERS, init_default_scope
from mmengine.structures import PixelData

import wsss_mmseg  # noqa: F401
import wsss_mmseg.hooks  # noqa: F401
from wsss_mmseg.text.vocab import class_names

REPO = Path(__file__).resolve().parents[2]
VOC_CONFIGS = ['deeplabv3_cgl_voc', 'deeplabv3plus_cgl_voc', 'segformer_b2_cgl_voc']
ALL_CONFIGS = VOC_CONFIGS + ['deeplabv3_cgl_coco']
GENERATOR_CONFIG = dict(deeplabv3_cgl_voc='clip_es_voc', deeplabv3plus_cgl_voc='clip_es_voc',
                        segformer_b2_cgl_voc='clip_es_voc', deeplabv3_cgl_coco='clip_es_coco')
SECTIONS = ('pseudo_dataset', 'generator', 'mask_maker', 'pseudo_job')


def _load(name: str) -> Config:
    return Config.fromfile(str(REPO / 'configs' / f'{name}.py'))


def _no_download(cfg: Config) -> Config:
    """Model config without pretrained weights (nothing is downloaded in tests)."""
    model = copy.deepcopy(cfg.model)
    model.pretrained = None
    model.backbone.init_cfg = None
    return model


def _heads(model_cfg) -> list:
    return [h for h in (model_cfg.get('decode_head'), model_cfg.get('auxiliary_head')) if h]


@pytest.mark.parametrize('name', ALL_CONFIGS)
def test_config_structure(name):
    cfg = _load(name)
    num_classes = 81 if 'coco' in name else 21
    assert cfg.default_scope == 'mmseg'
    assert 'wsss_mmseg' in cfg.custom_imports['imports']
    assert cfg.custom_imports['allow_failed_imports'] is False
    assert cfg.model_wrapper_cfg == dict(type='CPUCompatibleDDP')
    assert MODEL_WRAPPERS.get('CPUCompatibleDDP') is not None
    assert cfg.work_dir == f'work_dirs/{name}'  # not the generator config's work_dir
    assert [h.type for h in cfg.custom_hooks] == ['PseudoLabelHook', 'NaNLossGuardHook']
    # one source of truth: the generator sections are those of the generator config
    gen = _load(GENERATOR_CONFIG[name])
    for section in SECTIONS:
        assert cfg[section] == gen[section], section
    # training data: pseudo masks + confidence from one folder, CGL on every head
    train = cfg.train_dataloader.dataset
    assert train.type == 'PseudoLabelSegDataset'
    assert train.data_prefix.seg_map_path == osp.join(cfg.pseudo_label_dir, 'masks')
    assert osp.isabs(cfg.pseudo_label_dir)
    assert train.data_root == cfg.pseudo_dataset.data_root
    steps = [t.type for t in train.pipeline]
    assert steps[:2] == ['LoadImageFromFile', 'LoadPseudoLabel']
    assert steps[-1] == 'PackSegInputsWithConfidence' and 'LoadAnnotations' not in steps
    crop = [t for t in train.pipeline if t.type == 'RandomCrop'][0]
    assert tuple(crop.crop_size) == (512, 512)
    assert cfg.model.data_preprocessor.type == 'PseudoLabelDataPreProcessor'
    assert tuple(cfg.model.data_preprocessor.size) == (512, 512)
    for head in _heads(cfg.model):
        assert head.num_classes == num_classes
        assert head.loss_decode == dict(type='CGLLoss', mu=0.95,
                                        loss_weight=head.loss_decode.loss_weight)
    # validation / test: real masks
    for key in ('val_dataloader', 'test_dataloader'):
        val = cfg[key].dataset
        assert 'LoadAnnotations' in [t.type for t in val.pipeline]
        assert val.pipeline[-1].type == 'PackSegInputs'
    assert cfg.val_evaluator.type == 'IoUMetric'
    assert cfg.train_cfg.type == 'IterBasedTrainLoop'


@pytest.mark.parametrize('name', VOC_CONFIGS)
def test_voc_configs_train_on_train_aug_and_validate_on_val(name):
    cfg = _load(name)
    assert cfg.train_dataloader.dataset.ann_file == cfg.pseudo_dataset.split
    assert cfg.pseudo_dataset.split == 'ImageSets/Segmentation/train_aug.txt'
    assert cfg.val_dataloader.dataset.type == 'PascalVOCDataset'
    assert cfg.val_dataloader.dataset.ann_file == 'ImageSets/Segmentation/val.txt'
    assert cfg.val_dataloader.dataset.data_prefix.seg_map_path == 'SegmentationClass'
    assert cfg.train_cfg.max_iters == 20000
    # all VOC segmenters share the labels of the one generator config
    assert cfg.pseudo_label_dir == osp.abspath('work_dirs/clip_es_voc/pseudo')


def test_deeplabv3_solver_and_backbone():
    cfg = _load('deeplabv3_cgl_voc')
    assert cfg.model.pretrained == 'open-mmlab://resnet101_v1c'
    assert cfg.model.backbone.depth == 101 and cfg.model.backbone.type == 'ResNetV1c'
    assert cfg.model.decode_head.type == 'ASPPHead'
    assert cfg.model.auxiliary_head.type == 'FCNHead'
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.momentum, opt.weight_decay) == ('SGD', 0.01, 0.9, 0.0005)
    poly = cfg.param_scheduler[0]
    assert (poly.type, poly.power, poly.end) == ('PolyLR', 0.9, 20000)


def test_variants():
    plus = _load('deeplabv3plus_cgl_voc')
    assert plus.model.decode_head.type == 'DepthwiseSeparableASPPHead'
    assert plus.model.backbone.depth == 101
    seg = _load('segformer_b2_cgl_voc')
    assert seg.model.backbone.type == 'MixVisionTransformer'
    assert seg.model.backbone.num_layers == [3, 4, 6, 3]  # MiT-B2
    assert seg.model.decode_head.type == 'SegformerHead'
    assert seg.optim_wrapper.optimizer.type == 'AdamW'
    assert seg.param_scheduler[-1].end == 20000
    coco = _load('deeplabv3_cgl_coco')
    assert coco.generator.class_table == 'coco80' and coco.generator.box_threshold == 0.7
    assert list(coco.coco_classes) == ['background'] + class_names('coco80')
    assert list(coco.train_dataloader.dataset.metainfo.classes) == list(coco.coco_classes)
    assert list(coco.val_dataloader.dataset.metainfo.classes) == list(coco.coco_classes)
    assert coco.train_cfg.max_iters == coco.param_scheduler[0].end == 100000


def _fake_batch(num_classes: int, size: int = 64, n: int = 2) -> dict:
    """Two packed samples as PackSegInputsWithConfidence makes them (BN needs a batch > 1)."""
    from mmseg.structures import SegDataSample
    gen = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(n):
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, size, size),
                                                         generator=gen))
        sample.gt_confidence = PixelData(data=torch.rand(1, size, size, generator=gen))
        sample.set_metainfo(dict(img_shape=(size, size), ori_shape=(size, size)))
        samples.append(sample)
        inputs.append(torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=gen))
    return dict(inputs=inputs, data_samples=samples)


@pytest.mark.parametrize('name', ALL_CONFIGS)
def test_models_build_and_compute_the_cgl_loss(name):
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    cfg = _load(name)
    model_cfg = _no_download(cfg)
    model_cfg.data_preprocessor.size = (64, 64)
    model = revert_sync_batchnorm(MODELS.build(model_cfg))  # as mmengine does without DDP
    model.train()
    num_classes = model_cfg.decode_head.num_classes
    batch = model.data_preprocessor(_fake_batch(num_classes), True)
    losses = model(**batch, mode='loss')
    cgl = sorted(k for k in losses if k.endswith('loss_cgl'))
    assert cgl == (['aux.loss_cgl', 'decode.loss_cgl'] if 'auxiliary_head' in model_cfg
                   else ['decode.loss_cgl'])
    assert all(torch.isfinite(losses[k]) and losses[k] > 0 for k in cgl)


def test_mu_outside_unit_interval_is_refused():
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    cfg = _load('deeplabv3_cgl_voc')
    cfg.merge_from_dict({'model.decode_head.loss_decode.mu': 1.5})
    with pytest.raises(ValueError, match='mu'):
        MODELS.build(_no_download(cfg))


@pytest.mark.parametrize('name', ALL_CONFIGS)
def test_hook_fingerprint_equals_the_generator_tools(name):
    """Labels made by tools/generate_pseudo.py with the generator config are reused in training."""
    from types import SimpleNamespace

    from wsss_mmseg.hooks import PseudoLabelHook
    from wsss_mmseg.pseudo.job import JOB_DEFAULTS, config_fingerprint
    override = {'generator.clip.pretrained': '/weights/ViT-B-16.pt'}  # as --cfg-options
    train_cfg, gen = _load(name), _load(GENERATOR_CONFIG[name])
    train_cfg.merge_from_dict(override)
    gen.merge_from_dict(override)
    sections = PseudoLabelHook()._generator_cfg(SimpleNamespace(cfg=train_cfg))
    job = dict(JOB_DEFAULTS, **gen.pseudo_job)
    assert config_fingerprint(sections, job) == config_fingerprint(gen, job)
    gen.merge_from_dict({'mask_maker.bg_power': 2})
    assert config_fingerprint(sections, job) != config_fingerprint(gen, job)
