"""tiny_clip and the OpenAI-format writer."""
from __future__ import annotations

import pytest
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from open_clip.transformer import QuickGELU

from wsss_mmseg.clip import openai_state_dict, save_openai_format, tiny_clip
from wsss_mmseg.clip.tiny import openai_fp16_keys


def test_deterministic_and_rng_neutral() -> None:
    rng = torch.get_rng_state()
    a, b, c = tiny_clip(seed=0), tiny_clip(seed=0), tiny_clip(seed=1)
    assert torch.equal(torch.get_rng_state(), rng)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa['visual.proj'], sc['visual.proj'])


def test_architecture() -> None:
    model = tiny_clip(vision_width=128, text_width=64)
    assert isinstance(model, CLIP) and not model.training
    assert model.visual.transformer.resblocks[0].attn.num_heads == 2  # width // 64
    assert model.transformer.resblocks[0].attn.num_heads == 1
    assert any(isinstance(m, QuickGELU) for m in model.modules())
    assert not any(isinstance(m, torch.nn.GELU) for m in model.modules())
    assert model.logit_scale.exp().item() == pytest.approx(100.0)
    ln = model.visual.ln_pre.weight
    assert not torch.equal(ln, torch.ones_like(ln))  # jittered norms
    with pytest.raises(ValueError, match='not divisible'):
        tiny_clip(vision_width=96, vision_heads=5)
    with pytest.raises(ValueError, match="arch must be 'vit' or 'rn'"):
        tiny_clip(arch='swin')


def test_openai_dtypes_and_scalars() -> None:
    model = tiny_clip()
    state = openai_state_dict(model)
    half = {k for k, v in state.items() if v.dtype == torch.float16}
    assert half == openai_fp16_keys(model)
    for key in ('visual.conv1.weight', 'visual.proj', 'text_projection',
                'visual.transformer.resblocks.0.attn.in_proj_weight', 'visual.transformer.resblocks.0.attn.in_proj_bias',
                'visual.transformer.resblocks.0.attn.out_proj.weight', 'transformer.resblocks.0.mlp.c_fc.bias'):
        assert key in half, key
    for key in ('visual.ln_pre.weight', 'visual.positional_embedding', 'visual.class_embedding',
                'token_embedding.weight', 'positional_embedding', 'logit_scale', 'ln_final.bias'):
        assert state[key].dtype == torch.float32, key
    assert {k: state[k].item() for k in ('input_resolution', 'context_length', 'vocab_size')} == \
        {'input_resolution': 64, 'context_length': 77, 'vocab_size': 49408}
    assert state['vocab_size'].dtype == torch.int64
    assert 'attn_mask' not in state


def test_fp16_round() -> None:
    rounded = tiny_clip(fp16_round=True).state_dict()
    plain = tiny_clip().state_dict()
    keys = openai_fp16_keys(tiny_clip())
    for key in keys:
        assert torch.equal(rounded[key], rounded[key].half().float()), key
    assert any(not torch.equal(plain[k], rounded[k]) for k in keys)
    assert all(torch.equal(plain[k], rounded[k]) for k in plain if k not in keys)


def test_writer_refuses_unrepresentable_models(tmp_path) -> None:
    gelu = CLIP(16, CLIPVisionCfg(layers=1, width=64, patch_size=16, image_size=32),
                CLIPTextCfg(width=64, heads=1, layers=1), quick_gelu=False)
    with pytest.raises(ValueError, match='QuickGELU'):
        save_openai_format(gelu, tmp_path / 'gelu.pt')
    with pytest.raises(ValueError, match='OpenAI convention'):
        save_openai_format(tiny_clip(vision_width=64, vision_heads=2), tmp_path / 'heads.pt')
    assert not (tmp_path / 'gelu.pt').exists() and not (tmp_path / 'heads.pt').exists()
