"""MaskCLIP as a pseudo-label source: generator formula, errors, tools/generate_pseudo.py end to end."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope

import wsss_mmseg  # noqa: F401
import wsss_mmseg.models.maskclip  # noqa: F401
from mmseg.registry import MODELS
from wsss_mmseg.cam.clip_es import resize_maps
from wsss_mmseg.cam.maskclip import vit_dense_features

REPO = Path(__file__).resolve().parents[2]


def _img(h=50, w=70, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _gen(clip_path, **kw):
    init_default_scope('mmseg')
    cfg = dict(type='MaskCLIPGenerator', clip=dict(model_name=None, pretrained=clip_path), class_table='voc20',
               text_table='voc20_readable', templates='single', background='clip_es', device='cpu')
    cfg.update(kw)
    return MODELS.build(cfg)


def _np_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_generate_follows_the_documented_formula(tiny_clip_path):
    """cam / cam_refined re-derived in float64 numpy from spec §1.4 (cosine logits) and §1.6 (KS)."""
    gen = _gen(tiny_clip_path, key_smoothing=dict(type='KeySmoothing'))
    img = _img()
    x = gen.preprocess(img)
    assert x.shape == (1, 3, 64, 80)  # sides rounded up to multiples of 16
    with torch.no_grad():
        feats = vit_dense_features(gen.tower, x)     # dense features are pinned in test_maskclip_dense.py
    dense = feats['dense'][0].double().numpy().reshape(feats['dense'].shape[1], -1).T   # (N, E)
    keys = feats['keys'][0].double().numpy().reshape(feats['keys'].shape[1], -1).T      # (N, C)
    text = np.concatenate([gen.fg_text[[11, 14]].double().numpy(), gen.bg_text.double().numpy()])
    assert text.shape[0] == 2 + 25  # the image's labels + 25 CLIP-ES background words
    cos = (dense / np.linalg.norm(dense, axis=1, keepdims=True)) @ (text / np.linalg.norm(text, axis=1,
                                                                                          keepdims=True)).T
    prob = _np_softmax(100.0 * cos, axis=1)                                               # (N, K + M)
    # key smoothing threshold between the locations' confidences: some are kept, some smoothed
    conf = prob.max(1)
    srt = np.sort(conf)
    gaps = np.diff(srt)
    mid = int(np.argmax(gaps))                     # the widest gap: fp32/fp64 agree on either side
    thresh = float(0.5 * (srt[mid] + srt[mid + 1]))
    gen.ks.thresh = thresh
    kept = conf >= thresh
    assert kept.any() and (~kept).any()
    unit = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    smoothed = (unit @ unit.T) @ prob
    ks = np.where(kept[:, None], prob, smoothed)[:, :2]          # spec §1.6: probabilities everywhere
    out = gen.generate_image(img, [11, 14, 11])  # duplicates dropped in order
    assert out['keys'].tolist() == [11, 14]
    assert out['cam'].shape == (2, 50, 70) and out['cam'].dtype == np.float32
    assert out['cam_refined'].shape == (2, 50, 70) and out['cam_refined'].dtype == np.float32

    def max_norm(m):
        m = np.clip(m, 0, None)
        return (m / m.max(0, keepdims=True)).T.reshape(2, 4, 5)

    np.testing.assert_allclose(out['cam'], resize_maps(torch.from_numpy(max_norm(prob[:, :2])).float(), (50, 70)),
                               atol=2e-5)
    np.testing.assert_allclose(out['cam_refined'], resize_maps(torch.from_numpy(max_norm(ks)).float(), (50, 70)),
                               atol=2e-5)
    # deterministic
    again = gen.generate_image(img, [11, 14])
    assert np.array_equal(again['cam'], out['cam']) and np.array_equal(again['cam_refined'], out['cam_refined'])


def test_restricted_to_the_image_labels_and_options(tiny_clip_path):
    img = _img(seed=1)
    gen = _gen(tiny_clip_path)
    one = gen.generate_image(img, [3])
    two = gen.generate_image(img, [3, 7])
    assert one['cam_refined'] is None
    assert not np.allclose(one['cam'][0], two['cam'][0])  # softmax over the image's own labels
    assert gen.class_names[3] == 'boat'
    with_caa = _gen(tiny_clip_path, caa=dict(type='CAA', box_threshold=0.4, attn_layers=2), mode='clearclip',
                    cam_norm='minmax', legacy_imagenet_norm=True)
    res = with_caa.generate_image(img, [3, 7])
    assert res['cam_refined'].shape == (2, 50, 70)
    assert res['cam'].reshape(2, -1).min(1) == pytest.approx([0.0, 0.0], abs=1e-4)  # bilinear resize


def test_generator_errors(tiny_clip_path, tmp_path):
    gen = _gen(tiny_clip_path)
    with pytest.raises(ValueError, match='at least one image-level label'):
        gen.generate_image(_img(), [])
    with pytest.raises(ValueError, match='out of range'):
        gen.generate_image(_img(), [20])
    with pytest.raises(ValueError, match='uint8'):
        gen.generate_image(_img().astype(np.float32), [1])
    with pytest.raises(ValueError, match='must align'):
        _gen(tiny_clip_path, text_table='context59_readable')
    with pytest.raises(KeyError):
        _gen(tiny_clip_path, background='no_such_set')
    with pytest.raises(ValueError, match='cam_norm'):
        _gen(tiny_clip_path, cam_norm='softmax')
    with pytest.raises(ValueError, match='ResNet CLIPs only'):
        _gen(tiny_clip_path, pos_embed=True)
    from wsss_mmseg.clip import save_openai_format, tiny_clip
    rn = tmp_path / 'tiny_rn.pt'
    save_openai_format(tiny_clip(seed=1, arch='rn', vision_width=16, vision_layers=1, image_size=64,
                                 fp16_round=True), str(rn))
    with pytest.raises(ValueError, match='ViT CLIPs only'):
        _gen(str(rn), caa=dict(type='CAA'))
    rn_gen = _gen(str(rn))
    assert rn_gen.generate_image(_img(), [0])['cam'].shape == (1, 50, 70)


def test_generate_pseudo_tool_with_the_maskclip_config(tmp_path, shared_data, tiny_clip_path):
    voc = shared_data / 'voc_sample'
    ids = (voc / 'ImageSets/Segmentation/val.txt').read_text().split()[:3]
    split = tmp_path / 'split.txt'
    split.write_text('\n'.join(ids) + '\n')
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    out = tmp_path / 'pseudo'
    proc = subprocess.run(
        [sys.executable, str(REPO / 'tools/generate_pseudo.py'), str(REPO / 'configs/maskclip_pseudo_voc.py'),
         '--work-dir', str(out), '--save-cams', '--cfg-options', 'generator.clip.model_name=None',
         f'generator.clip.pretrained={tiny_clip_path}', 'generator.device=cpu', f'pseudo_dataset.data_root={voc}',
         f'pseudo_dataset.split={split}', f'pseudo_dataset.labels={voc / "cls_labels.json"}',
         'pseudo_dataset.gt_dir=SegmentationClass'],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['counts']['done'] == 3 and summary['counts']['failed'] == 0
    for i in ids:
        assert (out / 'masks' / f'{i}.png').is_file() and (out / 'confidence' / f'{i}.png').is_file()
        cams = np.load(out / 'cams' / f'{i}.npy', allow_pickle=True).item()
        assert cams['cam'].shape == cams['cam_refined'].shape and cams['cam'].shape[0] == len(cams['keys'])
    ev = json.loads((out / 'eval.json').read_text())
    assert ev['num_images'] == 3 and 0.0 <= ev['variants']['all']['miou'] <= 100.0
