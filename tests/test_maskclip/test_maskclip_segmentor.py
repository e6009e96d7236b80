"""MaskCLIP zero-shot segmentor: the shipped configs, whole/slide inference, errors, mmseg's test tool."""
import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import wsss_mmseg  # noqa: F401
import wsss_mmseg.models.maskclip  # noqa: F401
from mmseg.registry import MODELS
from wsss_mmseg.models.maskclip import CLIP_MEAN_255, IMAGENET_MEAN_255, write_empty_checkpoint

REPO = Path(__file__).resolve().parents[2]
CONFIGS = {
    'maskclip_vitb16_voc20.py': 20,
    'maskclip_vitb16_voc21_bg.py': 21,
    'maskclip_vitb16_context59.py': 59,
    'maskclip_vitb16_coco_stuff171.py': 171,
    'maskclip_vitb16_ade150.py': 150,
    'maskclip_vitb16_cityscapes.py': 19,
}


def _tiny_model_cfg(config: str, clip_path: str, **head):
    cfg = Config.fromfile(str(REPO / 'configs' / config))
    cfg.model.clip = dict(model_name=None, pretrained=clip_path)
    cfg.model.decode_head.templates = 'single'  # the real 85 templates are tested end to end below
    cfg.model.decode_head.update(head)
    return cfg


def _metas(h, w):
    return [dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w))]


@pytest.mark.parametrize('config,num_classes', sorted(CONFIGS.items()))
def test_shipped_configs_build_and_infer(config, num_classes, tiny_clip_path):
    init_default_scope('mmseg')
    cfg = _tiny_model_cfg(config, tiny_clip_path)
    assert cfg.test_evaluator.type == 'IoUMetric'
    model = MODELS.build(cfg.model)
    assert model.num_classes == num_classes and model.out_channels == num_classes
    assert model.state_dict() == {}  # nothing to load: the checkpoint may be empty
    assert not list(model.parameters())
    assert model.data_preprocessor.mean.flatten().tolist() == pytest.approx(CLIP_MEAN_255)
    assert model.decode_head.feature_stride == 16
    with torch.no_grad():
        logits = model.inference(torch.randn(1, 3, 40, 56), _metas(40, 56))
    assert logits.shape == (1, num_classes, 40, 56)


def test_background_words_become_class_zero(tiny_clip_path):
    init_default_scope('mmseg')
    model = MODELS.build(_tiny_model_cfg('maskclip_vitb16_voc21_bg.py', tiny_clip_path).model)
    head = model.decode_head
    assert head.num_fg == 20 and head.num_bg == 5  # maskclip_demo: building, ground, grass, tree, sky
    dense, keys = model.extract_feat(torch.randn(1, 3, 32, 48))
    logits = head.forward((dense, keys))
    from wsss_mmseg.cam.maskclip import cosine_logits
    cos = cosine_logits(dense, head.text_embeddings)
    torch.testing.assert_close(logits[:, 0], cos[:, 20:].amax(1))
    torch.testing.assert_close(logits[:, 1:], cos[:, :20])


def test_whole_slide_and_window_errors(tiny_clip_path):
    init_default_scope('mmseg')
    cfg = _tiny_model_cfg('maskclip_vitb16_voc20.py', tiny_clip_path)
    whole = MODELS.build(cfg.model)
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        ref = whole.inference(x, _metas(48, 64))
    cfg.model.test_cfg = dict(mode='slide', crop_size=(48, 64), stride=(16, 16))
    slide = MODELS.build(cfg.model)
    with torch.no_grad():
        one_window = slide.inference(x, _metas(48, 64))
    torch.testing.assert_close(one_window, ref)  # a window = the image is whole inference
    cfg.model.test_cfg = dict(mode='slide', crop_size=(32, 32), stride=(16, 16))
    with torch.no_grad():
        assert MODELS.build(cfg.model).inference(x, _metas(48, 64)).shape == (1, 20, 48, 64)
    cfg.model.test_cfg = dict(mode='slide', crop_size=(64, 64), stride=(32, 32))
    too_big = MODELS.build(cfg.model)
    with pytest.raises(ValueError, match=r'crop_size=\(64, 64\) is larger than the network input \(48, 64\)'):
        too_big.inference(x, _metas(48, 64))
    cfg.model.slide_clamp = True
    with torch.no_grad():
        assert MODELS.build(cfg.model).inference(x, _metas(48, 64)).shape == (1, 20, 48, 64)


def test_surgery_variants_legacy_norm_and_postprocessors(tiny_clip_path):
    init_default_scope('mmseg')
    x = torch.randn(1, 3, 32, 48)
    outs = {}
    for mode in ('maskclip', 'clearclip', 'naclip', 'sclip', 'vanilla'):
        cfg = _tiny_model_cfg('maskclip_vitb16_voc20.py', tiny_clip_path)
        cfg.model.backbone.mode = mode
        with torch.no_grad():
            outs[mode] = MODELS.build(cfg.model).inference(x, _metas(32, 48))
    assert not torch.allclose(outs['maskclip'], outs['clearclip'])
    cfg = _tiny_model_cfg('maskclip_vitb16_voc20.py', tiny_clip_path, key_smoothing=True, prompt_denoising=True)
    cfg.model.legacy_imagenet_norm = True
    model = MODELS.build(cfg.model)
    assert model.data_preprocessor.mean.flatten().tolist() == pytest.approx(IMAGENET_MEAN_255)
    assert model.decode_head.ks.key_norm == 'token' and model.decode_head.pd.thresh == 0.5
    with torch.no_grad():
        assert model.inference(x, _metas(32, 48)).shape == (1, 20, 32, 48)


def test_bad_inputs_give_clear_errors(tiny_clip_path):
    init_default_scope('mmseg')
    cfg = _tiny_model_cfg('maskclip_vitb16_voc20.py', tiny_clip_path)
    bad = copy.deepcopy(cfg)
    bad.model.decode_head.update(class_table=None, classes=[])
    with pytest.raises(ValueError, match='class list is empty'):
        MODELS.build(bad.model)
    bad = copy.deepcopy(cfg)
    bad.model.decode_head.update(class_table='voc20', classes=['aeroplane', 'unicorn'])
    with pytest.raises(KeyError, match='unicorn'):
        MODELS.build(bad.model)
    bad = copy.deepcopy(cfg)
    bad.model.backbone.pos_embed = True
    with pytest.raises(ValueError, match='ResNet CLIPs only'):
        MODELS.build(bad.model)
    bad = copy.deepcopy(cfg)
    bad.model.backbone.mode = 'proxy'
    with pytest.raises(ValueError, match='unknown last-block surgery mode'):
        MODELS.build(bad.model)
    bad = copy.deepcopy(cfg)
    bad.model.data_preprocessor = dict(type='SegDataPreProcessor', mean=[0, 0, 0], std=[1, 1, 1])
    with pytest.raises(ValueError, match='normalisation itself'):
        MODELS.build(bad.model)
    model = MODELS.build(cfg.model)
    with pytest.raises(NotImplementedError, match='training-free'):
        model.decode_head.loss(None, None, None)


def test_resnet_backbone_and_its_options(tmp_path):
    from wsss_mmseg.clip import save_openai_format, tiny_clip
    path = tmp_path / 'tiny_rn.pt'
    save_openai_format(tiny_clip(seed=1, arch='rn', vision_width=16, vision_layers=1, image_size=64,
                                 fp16_round=True), str(path))
    init_default_scope('mmseg')
    cfg = _tiny_model_cfg('maskclip_vitb16_voc20.py', str(path))
    cfg.model.backbone = dict(type='MaskCLIPBackbone', pos_embed=True)
    model = MODELS.build(cfg.model)
    assert model.backbone.stride == 32 and model.decode_head.feature_stride == 32
    with torch.no_grad():
        assert model.inference(torch.randn(1, 3, 50, 70), _metas(50, 70)).shape == (1, 20, 50, 70)
    cfg.model.backbone = dict(type='MaskCLIPBackbone', mode='naclip')
    with pytest.raises(ValueError, match='ViT CLIPs only'):
        MODELS.build(cfg.model)


def test_hidden_tower_moves_with_the_module(tmp_path):
    from wsss_mmseg.clip import save_openai_format, tiny_clip
    path = tmp_path / 'own_tiny.pt'  # own file: build_clip caches per file, the shared model stays fp32
    save_openai_format(tiny_clip(seed=2, fp16_round=True), str(path))
    init_default_scope('mmseg')
    backbone = MODELS.build(dict(type='MaskCLIPBackbone', clip=dict(model_name=None, pretrained=str(path))))
    backbone.double()
    assert backbone.tower.visual.conv1.weight.dtype == torch.float64
    assert backbone.state_dict() == {}


def test_mim_test_on_voc_sample_reports_miou(tmp_path, shared_data, tiny_clip_path):
    voc = shared_data / 'voc_sample'
    mim = Path(sys.executable).parent / 'mim'
    if not mim.is_file():
        pytest.skip(f'mim not installed next to {sys.executable}')
    ids = (voc / 'ImageSets/Segmentation/val.txt').read_text().split()[:3]
    split = tmp_path / 'split.txt'
    split.write_text('\n'.join(ids) + '\n')
    cfg = Config.fromfile(str(REPO / 'configs/maskclip_vitb16_voc20.py'))  # the real config, tiny CLIP
    cfg.model.clip = dict(model_name=None, pretrained=tiny_clip_path)
    cfg.test_dataloader.dataset.update(data_root=str(voc), ann_file=str(split))
    cfg.test_dataloader.dataset.pipeline[1].scale = (512, 96)
    cfg.test_dataloader.num_workers = 0
    tiny_cfg = tmp_path / 'tiny_maskclip_voc20.py'
    cfg.dump(str(tiny_cfg))
    ckpt = write_empty_checkpoint(tmp_path / 'empty.pth')
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    proc = subprocess.run([str(mim), 'test', 'mmsegmentation', str(tiny_cfg), '--checkpoint', ckpt,
                           '--work-dir', str(tmp_path / 'work')], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert 'Load checkpoint from' in log and 'mIoU:' in log, log[-3000:]
    assert 'missing keys' not in log
    assert '|  aeroplane  |' in log or 'aeroplane' in log  # VOC-20 class table, no background row
    assert '| background |' not in log


def test_two_process_test_on_voc_sample(tmp_path, shared_data, tiny_clip_path):
    """Distributed evaluation: the parameter-free segmentor is left unwrapped by CPUCompatibleDDP."""
    import socket
    voc = shared_data / 'voc_sample'
    ids = (voc / 'ImageSets/Segmentation/val.txt').read_text().split()[:4]
    split = tmp_path / 'split.txt'
    split.write_text('\n'.join(ids) + '\n')
    cfg = Config.fromfile(str(REPO / 'configs/maskclip_vitb16_voc20.py'))
    cfg.model.clip = dict(model_name=None, pretrained=tiny_clip_path)
    cfg.test_dataloader.dataset.update(data_root=str(voc), ann_file=str(split))
    cfg.test_dataloader.dataset.pipeline[1].scale = (512, 96)
    cfg.test_dataloader.num_workers = 0
    tiny_cfg = tmp_path / 'tiny_maskclip_voc20.py'
    cfg.dump(str(tiny_cfg))
    ckpt = write_empty_checkpoint(tmp_path / 'empty.pth')
    import mmseg
    test_py = Path(mmseg.__file__).parent / '.mim' / 'tools' / 'test.py'
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    proc = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
                           f'--master_port={port}', str(test_py), str(tiny_cfg), ckpt,
                           '--launcher', 'pytorch', '--work-dir', str(tmp_path / 'work')],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert 'mIoU:' in log, log[-3000:]


def test_logits_resized_on_the_padded_grid(tiny_clip_path):
    init_default_scope('mmseg')
    model = MODELS.build(_tiny_model_cfg('maskclip_vitb16_voc20.py', tiny_clip_path).model)
    x = torch.randn(1, 3, 40, 56)  # padded to 48x64 inside the backbone: a 3x4 grid
    with torch.no_grad():
        feats = model.extract_feat(x)
        grid_logits = model.decode_head.forward(feats)
        assert grid_logits.shape == (1, 20, 3, 4)
        out = model.inference(x, _metas(40, 56))
    expected = torch.nn.functional.interpolate(grid_logits, size=(48, 64), mode='bilinear',
                                               align_corners=False)[..., :40, :56]
    torch.testing.assert_close(out, expected)
