"""MaskCLIP+ Context / COCO-Stuff configs carry the official values (spec maskclip_pacl.md §2.4,
§2.5) and build with a random CLIP of ViT-B/16's text width."""
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import wsss_mmseg  # noqa: F401
from wsss_mmseg.text import class_names

from .conftest import REPO

CONTEXT_UNSEEN = ['cow', 'motorbike', 'sofa', 'cat', 'boat', 'fence', 'bird', 'tvmonitor', 'keyboard', 'aeroplane']
STUFF_UNSEEN = ['cow', 'giraffe', 'suitcase', 'frisbee', 'skateboard', 'carrot', 'scissors', 'cardboard', 'clouds',
                'grass', 'playingfield', 'river', 'road', 'tree', 'wall-concrete']


def test_context_config_values():
    cfg = Config.fromfile(str(REPO / 'configs/maskclip_plus_deeplabv3plus_r101_context.py'))
    names = class_names('context59')
    assert [names[i - 1] for i in cfg.model.pseudo_classes] == CONTEXT_UNSEEN   # ids shifted by background 0
    assert cfg.model.learn_bg and cfg.model.decode_head.type == 'DepthwiseSeparableASPPHead'
    assert cfg.model.decode_head.dilations == (1, 12, 24, 36) and cfg.model.decode_head.dropout_ratio == 0
    assert cfg.train_cfg.max_iters == 40000 and cfg.param_scheduler[0].end == 40000
    assert cfg.optim_wrapper.optimizer.lr == 0.004 and cfg.optim_wrapper.optimizer.weight_decay == 1e-4
    crop = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'RandomCrop'][0]
    assert tuple(crop.crop_size) == (480, 480) and cfg.train_dataloader.dataset.type == 'PascalContextDataset'
    assert cfg.custom_hooks[0].switch_ratio == 0.1 and cfg.train_dataloader.batch_size == 4


def test_coco_stuff_config_values():
    cfg = Config.fromfile(str(REPO / 'configs/maskclip_plus_deeplabv2_r101_coco_stuff.py'))
    names = class_names('coco_stuff171')
    assert [names[i] for i in cfg.model.pseudo_classes] == STUFF_UNSEEN
    assert not cfg.model.learn_bg and cfg.model.decode_head.type == 'ASPPV2Head'
    assert cfg.train_cfg.max_iters == 80000 and cfg.param_scheduler[0].end == 80000
    assert cfg.optim_wrapper.optimizer.lr == 0.01 and cfg.optim_wrapper.optimizer.weight_decay == 5e-4
    assert cfg.train_dataloader.dataset.type == 'COCOStuffDataset'


@pytest.mark.parametrize('name,classes', [('maskclip_plus_deeplabv3plus_r101_context.py', 60),
                                          ('maskclip_plus_deeplabv2_r101_coco_stuff.py', 171)])
def test_configs_build(name, classes, tmp_path):
    from wsss_mmseg.clip import save_openai_format, tiny_clip
    clip = tmp_path / 'clip512.pt'
    save_openai_format(tiny_clip(seed=0, embed_dim=512), str(clip))
    init_default_scope('mmseg')
    cfg = Config.fromfile(str(REPO / 'configs' / name))
    cfg.model.pretrained = None
    cfg.model.backbone.update(depth=18)
    cfg.model.decode_head.in_channels = 512
    if 'c1_in_channels' in cfg.model.decode_head:
        cfg.model.decode_head.c1_in_channels = 64
    cfg.model.teacher.clip = dict(model_name=None, pretrained=str(clip))
    cfg.model.teacher.decode_head.templates = 'single'
    m = MODELS.build(cfg.model)
    assert m.num_classes == classes and m.decode_head.channels == 512
