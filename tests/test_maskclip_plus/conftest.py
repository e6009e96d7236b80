"""Tiny MaskCLIP+ configs made from the shipped ones (tiny CLIP teacher, ResNetV1c-18 student)."""
import json
from pathlib import Path

import pytest
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[2]
UNSEEN = [15, 16, 17, 18, 19]


def tiny_config(name: str, clip_path: str, *, crop=(64, 64)) -> Config:
    """The real config ``configs/<name>`` shrunk to CPU-test size (same structure and data flow)."""
    cfg = Config.fromfile(str(REPO / 'configs' / name))
    m = cfg.model
    m.pretrained = None
    m.data_preprocessor.size = crop
    m.backbone.update(depth=18, base_channels=16, stem_channels=16, norm_cfg=dict(type='BN', requires_grad=True))
    # ResNet-18/16: stages give 16, 32, 64, 128 channels; the head width = the tiny CLIP text width (32)
    m.decode_head.update(in_channels=128, channels=32, norm_cfg=dict(type='BN', requires_grad=True))
    if m.decode_head.type == 'DepthwiseSeparableASPPHead':
        m.decode_head.update(c1_in_channels=16, c1_channels=8)
    m.teacher.clip = dict(model_name=None, pretrained=clip_path)
    m.teacher.decode_head.templates = 'single'
    return cfg


@pytest.fixture
def voc(shared_data):
    root = shared_data / 'voc_sample'
    if not (root / 'cls_labels.json').is_file():
        pytest.skip(f'{root} is incomplete')
    return root


def split_ids(voc: Path, n_train: int, n_val: int):
    """Training ids that contain an unseen class (so the teacher has pixels to label), then val ids."""
    labels = json.loads((voc / 'cls_labels.json').read_text())['labels']
    ids = (voc / 'ImageSets/Segmentation/val.txt').read_text().split()
    train = [i for i in ids if set(labels[i]) & set(UNSEEN)][:n_train]
    val = [i for i in ids if i not in train][:n_val]
    return train, val
