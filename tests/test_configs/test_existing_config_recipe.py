"""The README recipe: a few lines turn an existing mmseg config into a pseudo-label + CGL config.

The "existing config" is mmseg's own DeepLabV3 VOC config as installed with the package (read in
place). ``RECIPE`` is the README snippet's text; keep the two identical.
"""
import copy
import os.path as osp
from pathlib import Path
from types import SimpleNamespace

import mmseg
import pytest
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope

import wsss_mmseg  # noqa: F401
from wsss_mmseg.hooks import PseudoLabelHook

REPO = Path(__file__).resolve().parents[2]

RECIPE = '''
custom_imports = dict(imports=['wsss_mmseg', 'wsss_mmseg.hooks'], allow_failed_imports=False)
model_wrapper_cfg = dict(type='CPUCompatibleDDP')  # optional: the DDP wrapper that also runs on CPU

pseudo_label_dir = '/data/pseudo/clip_es_voc'  # absolute (a relative one is relative to data_root)
train_dataloader = dict(dataset=dict(
    _delete_=True,
    type='PseudoLabelSegDataset',
    data_root='data/VOCdevkit/VOC2012',
    ann_file='ImageSets/Segmentation/train_aug.txt',  # the images the generator labels
    data_prefix=dict(img_path='JPEGImages', seg_map_path=pseudo_label_dir + '/masks'),
    pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='LoadPseudoLabel'),              # instead of LoadAnnotations
        dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
        dict(type='RandomCrop', crop_size=(512, 512), cat_max_ratio=0.75),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PhotoMetricDistortion'),
        dict(type='PackSegInputsWithConfidence'),  # instead of PackSegInputs
    ]))
model = dict(
    data_preprocessor=dict(type='PseudoLabelDataPreProcessor'),
    decode_head=dict(loss_decode=dict(_delete_=True, type='CGLLoss', mu=0.95)),
    auxiliary_head=dict(
        loss_decode=dict(_delete_=True, type='CGLLoss', mu=0.95, loss_weight=0.4)))
custom_hooks = [dict(type='PseudoLabelHook', generator_config='configs/clip_es_voc.py')]
'''


@pytest.fixture
def mmseg_config() -> str:
    path = osp.join(osp.dirname(mmseg.__file__), '.mim', 'configs', 'deeplabv3',
                    'deeplabv3_r50-d8_4xb4-20k_voc12aug-512x512.py')
    if not osp.isfile(path):
        pytest.skip(f'mmseg installation has no {path}')
    return path


def test_generator_config_cannot_be_a_sibling_base(tmp_path, mmseg_config):
    """Why the recipe uses generator_config: mmengine refuses duplicate keys among bases."""
    cfg_file = tmp_path / 'both.py'
    cfg_file.write_text(f'_base_ = [{mmseg_config!r}, {str(REPO / "configs/clip_es_voc.py")!r}]\n')
    with pytest.raises(KeyError, match='Duplicate key'):
        Config.fromfile(str(cfg_file))


def test_recipe_turns_an_mmseg_config_into_a_cgl_config(tmp_path, mmseg_config, monkeypatch):
    from mmseg.registry import MODELS
    monkeypatch.chdir(REPO)  # generator_config is relative to where training starts
    cfg_file = tmp_path / 'my_deeplabv3_cgl.py'
    cfg_file.write_text(f'_base_ = [{mmseg_config!r}]\n' + RECIPE)
    cfg = Config.fromfile(str(cfg_file))
    train = cfg.train_dataloader.dataset
    assert train.type == 'PseudoLabelSegDataset' and 'datasets' not in train
    assert [t.type for t in train.pipeline][1] == 'LoadPseudoLabel'
    assert cfg.val_dataloader.dataset.type == 'PascalVOCDataset'  # validation: real masks
    assert cfg.model.data_preprocessor.type == 'PseudoLabelDataPreProcessor'
    assert cfg.model.data_preprocessor.size == (512, 512)  # kept from the mmseg config
    assert cfg.model.decode_head.loss_decode == dict(type='CGLLoss', mu=0.95)

    init_default_scope('mmseg')
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.pretrained = None
    model = revert_sync_batchnorm(MODELS.build(model_cfg))
    assert type(model.decode_head.loss_decode).__name__ == 'CGLLoss'

    # the hook takes the generator sections from the generator config, command-line
    # overrides of the training config merged over them
    cfg.merge_from_dict({'generator.clip.pretrained': '/weights/ViT-B-16.pt'})
    hook = PseudoLabelHook(**{k: v for k, v in cfg.custom_hooks[0].items() if k != 'type'})
    sections = hook._generator_cfg(SimpleNamespace(cfg=cfg))
    gen = Config.fromfile(str(REPO / 'configs' / 'clip_es_voc.py'))
    assert sections.pseudo_dataset == gen.pseudo_dataset
    assert sections.mask_maker == gen.mask_maker
    assert sections.generator.clip == dict(model_name='ViT-B-16',
                                           pretrained='/weights/ViT-B-16.pt')
    assert sections.generator.class_table == 'voc20'
