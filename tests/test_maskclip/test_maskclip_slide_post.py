"""Slide inference with the head's post-processors on the whole image (spec maskclip_pacl.md §1.8,
§6.4: PD/KS per window or on the stitched map, as a flag)."""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import wsss_mmseg  # noqa: F401
import wsss_mmseg.models.maskclip  # noqa: F401

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _model(clip_path, slide_post):
    init_default_scope('mmseg')
    cfg = Config.fromfile(str(REPO / 'configs/maskclip_vitb16_voc20.py'))
    cfg.model.clip = dict(model_name=None, pretrained=clip_path)
    cfg.model.decode_head.update(templates='single', prompt_denoising=dict(thresh=0.5), key_smoothing=True)
    cfg.model.slide_post = slide_post
    cfg.model.test_cfg = dict(mode='slide', crop_size=(32, 32), stride=(16, 16))
    return MODELS.build(cfg.model).eval()


def test_image_level_post_processing_runs_once_on_the_averaged_window_features(tiny_clip_path):
    model = _model(tiny_clip_path, 'image')
    x = torch.randn(1, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    meta = [dict(img_shape=(48, 64), ori_shape=(48, 64), pad_shape=(48, 64))]
    with torch.no_grad():
        out = model.slide_inference(x, meta)
        # by hand: 2 x 3 windows of 32 px at stride 16 on a 3 x 4 feature grid (stride 16)
        dense = torch.zeros(1, 32, 3, 4)
        keys = torch.zeros(1, 64, 3, 4)
        cnt = torch.zeros(1, 1, 3, 4)
        for y in (0, 16):
            for xx in (0, 16, 32):
                d, k = model.backbone(x[:, :, y:y + 32, xx:xx + 32])
                dense[:, :, y // 16:y // 16 + 2, xx // 16:xx // 16 + 2] += d
                keys[:, :, y // 16:y // 16 + 2, xx // 16:xx // 16 + 2] += k
                cnt[:, :, y // 16:y // 16 + 2, xx // 16:xx // 16 + 2] += 1
        assert cnt.min() == 1 and cnt.max() == 4
        logits = model.decode_head.forward([dense / cnt, keys / cnt])   # PD + KS once, on the whole grid
        ref = torch.nn.functional.interpolate(logits, size=(48, 64), mode='bilinear', align_corners=False)
    torch.testing.assert_close(out, ref)
    per_window = _model(tiny_clip_path, 'window')
    with torch.no_grad():
        assert not torch.allclose(per_window.slide_inference(x, [dict(m) for m in meta]), out)


def test_bad_slide_post_options(tiny_clip_path):
    with pytest.raises(ValueError, match='slide_post'):
        _model(tiny_clip_path, 'stitched')
    model = _model(tiny_clip_path, 'image')
    model.test_cfg.stride = (8, 8)
    with pytest.raises(ValueError, match='multiples of the backbone stride'):
        model.slide_inference(torch.randn(1, 3, 48, 64), [dict(img_shape=(48, 64))])
