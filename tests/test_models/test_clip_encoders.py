"""Registered CLIP encoders: shapes, equality with the pure layer, frozen, errors."""
import pytest
import torch

import wsss_mmseg  # noqa: F401
from mmseg.registry import MODELS
from wsss_mmseg.clip import CLIPViT, build_clip, get_tokenizer, save_openai_format, tiny_clip
from wsss_mmseg.text.encoder import class_embeddings


def _enc(path, **kw):
    return MODELS.build(dict(type='FrozenCLIPImageEncoder', clip=dict(model_name=None, pretrained=path), **kw))


def test_vit_dense_maps_match_pure_layer(tiny_clip_path):
    enc = _enc(tiny_clip_path, out_layers=(0, -1), out_dense=True)
    x = torch.randn(2, 3, 64, 96)
    layer0, last, dense = enc(x)
    assert layer0.shape == (2, 64, 4, 6) and last.shape == (2, 64, 4, 6)
    assert dense.shape == (2, 32, 4, 6)
    vit = CLIPViT(build_clip(None, tiny_clip_path).visual)
    ref = vit.forward_features(x)['dense'][:, 1:, :]  # (B, N, E), row-major grid
    torch.testing.assert_close(dense.flatten(2).transpose(1, 2), ref)
    torch.testing.assert_close(dense[:, :, 1, 2], ref[:, 1 * 6 + 2])


def test_vit_pads_sides_that_are_not_patch_multiples(tiny_clip_path):
    enc = _enc(tiny_clip_path)
    (out,) = enc(torch.randn(1, 3, 70, 64))
    assert out.shape == (1, 64, 5, 4)


def test_frozen_and_stays_eval(tiny_clip_path):
    enc = _enc(tiny_clip_path)
    enc.train()
    assert not any(p.requires_grad for p in enc.parameters())
    assert not enc.tower.training


def test_resnet_dense(tmp_path):
    path = tmp_path / 'rn.pt'
    save_openai_format(tiny_clip(seed=1, arch='rn', fp16_round=True), str(path))
    enc = _enc(str(path), out_dense=True)
    feat, dense = enc(torch.randn(1, 3, 64, 64))
    assert feat.shape[-2:] == (2, 2) and dense.shape[:2] == (1, 32)
    with pytest.raises(ValueError, match='ViT blocks'):
        _enc(str(path), out_layers=(0, 1))


def test_nothing_requested_is_an_error(tiny_clip_path):
    with pytest.raises(ValueError, match='returns nothing'):
        _enc(tiny_clip_path, out_layers=())


def test_text_encoder_matches_class_embeddings(tiny_clip_path):
    enc = MODELS.build(dict(type='FrozenCLIPTextEncoder', clip=dict(model_name=None, pretrained=tiny_clip_path),
                            class_table='voc20', synonyms='clip_es', background='clip_es'))
    fg, bg = enc()
    assert fg.shape == (20, 32) and bg.shape == (25, 32)
    ref_fg, ref_bg = class_embeddings(build_clip(None, tiny_clip_path), get_tokenizer('ViT-B-16'),
                                      table='voc20', synonyms='clip_es', templates='clip_es',
                                      background='clip_es')
    torch.testing.assert_close(fg, ref_fg)
    torch.testing.assert_close(bg, ref_bg)
    torch.testing.assert_close(fg.norm(dim=-1), torch.ones(20))
    assert 'class_embeddings' not in enc.state_dict()


def test_text_encoder_unknown_class(tiny_clip_path):
    with pytest.raises(KeyError, match='dgo'):
        MODELS.build(dict(type='FrozenCLIPTextEncoder', clip=dict(model_name=None, pretrained=tiny_clip_path),
                          class_table='voc20', classes=['dog', 'dgo']))
