"""PACLGenerator builds the network input exactly as the model's data preprocessor (issue #13.6),
and PACLHead derives its input width from the CLIP ViT (issue #17.6)."""
import numpy as np
import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope

import wsss_mmseg  # noqa: F401
import wsss_mmseg.models.pacl  # noqa: F401
from wsss_mmseg.clip import save_openai_format, tiny_clip
from wsss_mmseg.models.pacl import PACLGenerator, PACLHead

MEAN, STD = [10.0, 100.0, 200.0], [1.0, 2.0, 4.0]   # asymmetric: a channel swap shows


def _model(clip_path, *, bgr_to_rgb, in_channels=None):
    clip = dict(model_name=None, pretrained=clip_path)
    return dict(type='EncoderDecoder',
                data_preprocessor=dict(type='SegDataPreProcessor', mean=MEAN, std=STD, bgr_to_rgb=bgr_to_rgb),
                backbone=dict(type='FrozenCLIPImageEncoder', clip=clip, out_layers=(-1,)),
                decode_head=dict(type='PACLHead', clip=clip, in_channels=in_channels, class_table='voc20',
                                 templates='single', background=['sky']),
                train_cfg=ConfigDict(), test_cfg=ConfigDict(mode='whole'))


@pytest.mark.parametrize('bgr_to_rgb', [True, False])
def test_generator_input_equals_what_the_preprocessor_makes_of_the_loaded_bgr_image(tiny_clip_path, bgr_to_rgb):
    init_default_scope('mmseg')
    gen = PACLGenerator(_model(tiny_clip_path, bgr_to_rgb=bgr_to_rgb), device='cpu')
    rgb = np.array([[[1, 2, 3], [4, 5, 6]]], dtype=np.uint8)           # 1 x 2 RGB pixels
    x = gen._normalise(rgb)[0].numpy()
    # by hand: mmseg loads BGR; the preprocessor swaps to RGB iff bgr_to_rgb, then (v - mean) / std
    order = [0, 1, 2] if bgr_to_rgb else [2, 1, 0]                    # channel c of the tensor = RGB[order[c]]
    expected = np.stack([(rgb[..., order[c]].astype(np.float64) - MEAN[c]) / STD[c] for c in range(3)])
    np.testing.assert_allclose(x, expected, rtol=0, atol=1e-6)
    # and it is what the model's own preprocessor makes of the BGR tensor mmseg would load
    bgr = torch.from_numpy(rgb[..., ::-1].copy()).permute(2, 0, 1)
    ref = gen.model.data_preprocessor(dict(inputs=[bgr], data_samples=None), training=False)['inputs'][0]
    np.testing.assert_allclose(x, ref.numpy(), atol=1e-6)


def test_head_input_width_is_derived_from_the_clip_vit(tmp_path):
    path = tmp_path / 'clip_w128.pt'
    save_openai_format(tiny_clip(seed=2, vision_width=128), str(path))   # not ViT-B/16 768
    clip = dict(model_name=None, pretrained=str(path))
    head = PACLHead(clip=clip, class_table='voc20', templates='single', background=['sky'])
    assert head.in_channels == 128 and head.embedder is not None
    out = head.forward([torch.randn(1, 128, 2, 3)])
    assert out.shape == (1, 21, 2, 3)
    with pytest.raises(ValueError, match="in_channels=64 does not match the CLIP ViT width 128"):
        PACLHead(clip=clip, in_channels=64, class_table='voc20', templates='single', background=['sky'])
