"""MaskCLIP dense path and last-block surgery against direct computations from the raw weights."""
import math

import pytest
import torch
import torch.nn.functional as F

from wsss_mmseg.cam.maskclip import (SURGERY_DEFAULTS, SURGERY_MODES, cosine_logits, dense_features,
                                     gaussian_neighbourhood_bias, last_block_surgery, merge_background,
                                     resolve_surgery, vit_dense_features)
from wsss_mmseg.clip import CLIPResNet, CLIPViT, tiny_clip

ATOL = 1e-5


@pytest.fixture(scope='module')
def vit_model():
    return tiny_clip(seed=3, vision_width=64, vision_layers=2, image_size=64)


@pytest.fixture(scope='module')
def vit(vit_model):
    return CLIPViT(vit_model.visual)


@pytest.fixture(scope='module')
def rn():
    model = tiny_clip(seed=4, arch='rn', vision_width=16, vision_layers=1, image_size=64)
    return CLIPResNet(model.visual)


# ------------------------------------------------------------------ direct computation helpers
def _ln(x, mod):
    return F.layer_norm(x, (x.shape[-1],), mod.weight, mod.bias, mod.eps)


def _mlp(x, block):
    h = x @ block.mlp.c_fc.weight.t() + block.mlp.c_fc.bias
    h = h * torch.sigmoid(1.702 * h)  # QuickGELU (OpenAI architecture)
    return h @ block.mlp.c_proj.weight.t() + block.mlp.c_proj.bias


def _qkv(x, block):
    w, b = block.attn.in_proj_weight, block.attn.in_proj_bias
    d = x.shape[-1]
    y = _ln(x, block.ln_1)
    return [y @ w[i * d:(i + 1) * d].t() + b[i * d:(i + 1) * d] for i in range(3)]


def _split(t, heads):
    n, d = t.shape
    return t.reshape(n, heads, d // heads).transpose(0, 1)  # (H, T, dh)


def _merge(t):
    return t.transpose(0, 1).reshape(t.shape[1], -1)


def _out_proj(t, block):
    return t @ block.attn.out_proj.weight.t() + block.attn.out_proj.bias


def _attend(weights, v, heads):
    return _merge(weights @ _split(v, heads))


def _softmax_logits(a, b, heads):
    dh = a.shape[-1] // heads
    return (_split(a, heads) @ _split(b, heads).transpose(-2, -1)) / math.sqrt(dh)


def _vanilla_block(x, block):
    heads = block.attn.num_heads
    q, k, v = _qkv(x, block)
    x = x + _out_proj(_attend(_softmax_logits(q, k, heads).softmax(-1), v, heads), block)
    return x + _mlp(_ln(x, block.ln_2), block)


def _direct_pre_last(visual, img):
    """Patch embedding, CLS, positions, ln_pre and all blocks but the last (native size), (T, D)."""
    x = F.conv2d(img, visual.conv1.weight, stride=visual.conv1.stride)[0]  # (D, h, w)
    x = x.flatten(1).t()
    x = torch.cat([visual.class_embedding[None], x]) + visual.positional_embedding
    x = _ln(x, visual.ln_pre)
    for block in visual.transformer.resblocks[:-1]:
        x = _vanilla_block(x, block)
    return x


def _direct_surgery(x, block, mode, grid, residual, ffn, sigma=5.0):
    heads = block.attn.num_heads
    q, k, v = _qkv(x, block)
    if mode == 'maskclip':
        a = v
    elif mode == 'vanilla':
        a = _attend(_softmax_logits(q, k, heads).softmax(-1), v, heads)
    elif mode == 'sclip':
        a = _attend(_softmax_logits(q, q, heads).softmax(-1) + _softmax_logits(k, k, heads).softmax(-1), v, heads)
    elif mode == 'clearclip':
        a = _attend(_softmax_logits(q, q, heads).softmax(-1), v, heads)
    else:  # naclip: Gaussian on the patch grid written out element by element
        h, w = grid
        t = 1 + h * w
        bias = torch.zeros(t, t)
        for i in range(h * w):
            for j in range(h * w):
                ri, ci, rj, cj = i // w, i % w, j // w, j % w
                bias[1 + i, 1 + j] = math.exp(-((ri - rj) ** 2 + (ci - cj) ** 2) / (2 * sigma ** 2))
        a = _attend((_softmax_logits(k, k, heads) + bias).softmax(-1), v, heads)
    a = _out_proj(a, block)
    y = x + a if residual else a
    if ffn:
        y = y + _mlp(_ln(y, block.ln_2), block)
    return y


def _head(tokens, visual):
    return _ln(tokens, visual.ln_post) @ visual.proj


# ------------------------------------------------------------------ tests
def test_maskclip_dense_equals_direct_computation(vit_model, vit):
    visual = vit_model.visual
    img = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    x = _direct_pre_last(visual, img)
    last = visual.transformer.resblocks[-1]
    _, _, v = _qkv(x, last)
    vp = _out_proj(v, last)  # MaskCLIP: x + out_proj(v) + MLP(ln_2(x + out_proj(v)))
    tok = x + vp
    tok = tok + _mlp(_ln(tok, last.ln_2), last)
    expected = _head(tok, visual)[1:].t().reshape(-1, 4, 4)
    out = vit_dense_features(vit, img)  # default mode = maskclip
    assert out['grid'] == (4, 4)
    torch.testing.assert_close(out['dense'][0], expected, atol=ATOL, rtol=1e-4)
    # last-block keys: raw in_proj keys of the patches; legacy = through out_proj
    _, k, _ = _qkv(x, last)
    torch.testing.assert_close(out['keys'][0], k[1:].t().reshape(-1, 4, 4), atol=ATOL, rtol=1e-4)
    legacy = vit_dense_features(vit, img, legacy_maskclip_keys=True)
    torch.testing.assert_close(legacy['keys'][0], _out_proj(k, last)[1:].t().reshape(-1, 4, 4),
                               atol=ATOL, rtol=1e-4)


def test_any_input_size_interpolates_positions(vit):
    img = torch.randn(2, 3, 48, 80)
    out = vit_dense_features(vit, img)
    assert out['dense'].shape == (2, 32, 3, 5) and out['keys'].shape == (2, 64, 3, 5)
    with pytest.raises(ValueError, match='multiple of the patch size'):
        vit_dense_features(vit, torch.randn(1, 3, 50, 64))


@pytest.mark.parametrize('mode', SURGERY_MODES)
@pytest.mark.parametrize('override', [None, 'flip'])
def test_each_surgery_mode_equals_its_formula(vit_model, vit, mode, override):
    visual = vit_model.visual
    img = torch.randn(1, 3, 48, 64, generator=torch.Generator().manual_seed(1))
    feats = vit.forward_features(img, stop_before_last=True)
    x = feats['pre_last']
    grid = feats['grid']
    d_res, d_ffn = SURGERY_DEFAULTS[mode]
    residual, ffn = (None, None) if override is None else (not d_res, not d_ffn)
    exp_res, exp_ffn = (d_res, d_ffn) if override is None else (not d_res, not d_ffn)
    assert resolve_surgery(mode, residual=residual, ffn=ffn) == (exp_res, exp_ffn)
    y, extras = last_block_surgery(visual.transformer.resblocks[-1], x, mode=mode, residual=residual, ffn=ffn,
                                   grid=grid)
    expected = _direct_surgery(x[0], visual.transformer.resblocks[-1], mode, grid, exp_res, exp_ffn)
    torch.testing.assert_close(y[0], expected, atol=ATOL, rtol=1e-4)
    dense = vit_dense_features(vit, img, mode=mode, residual=residual, ffn=ffn)['dense']
    torch.testing.assert_close(dense[0], _head(expected, visual)[1:].t().reshape(-1, *grid), atol=ATOL, rtol=1e-4)


def test_surgery_defaults_table():
    assert SURGERY_DEFAULTS == {'vanilla': (True, True), 'maskclip': (True, True), 'sclip': (True, True),
                                'clearclip': (False, False), 'naclip': (False, False)}
    with pytest.raises(ValueError, match="unknown last-block surgery mode 'proxy'"):
        resolve_surgery('proxy')


def test_vanilla_mode_is_the_unmodified_network(vit):
    img = torch.randn(1, 3, 64, 48)
    ref = vit.forward_features(img)['dense']  # (B, 1 + N, E)
    out = vit_dense_features(vit, img, mode='vanilla')
    torch.testing.assert_close(out['dense'][0].flatten(1).t(), ref[0, 1:], atol=ATOL, rtol=1e-4)


def test_gaussian_bias():
    b = gaussian_neighbourhood_bias((2, 3), sigma=5.0)
    assert b.shape == (7, 7)
    assert torch.all(b[0] == 0) and torch.all(b[:, 0] == 0)
    assert torch.allclose(torch.diagonal(b)[1:], torch.ones(6))
    # patches 0 (0,0) and 5 (1,2): squared distance 1 + 4
    assert b[1, 6].item() == pytest.approx(math.exp(-5 / 50))
    with pytest.raises(ValueError, match='sigma'):
        gaussian_neighbourhood_bias((2, 2), sigma=0)


def test_attention_maps_for_caa(vit):
    out = vit_dense_features(vit, torch.randn(1, 3, 32, 48), attn_last=2)
    assert len(out['attn']) == 2 and out['attn'][-1].shape == (1, 7, 7)
    torch.testing.assert_close(out['attn'][-1].sum(-1), torch.ones(1, 7))
    with pytest.raises(ValueError, match='attn_last'):
        vit_dense_features(vit, torch.randn(1, 3, 32, 32), attn_last=3)


def test_resnet_dense_is_cproj_vproj(rn):
    img = torch.randn(1, 3, 64, 96)
    out = dense_features(rn, img)
    pool = rn.visual.attnpool
    feat = rn.features(img)[0].flatten(1).t()  # (N, C)
    v = feat @ pool.v_proj.weight.t() + pool.v_proj.bias
    dense = v @ pool.c_proj.weight.t() + pool.c_proj.bias
    k = feat @ pool.k_proj.weight.t() + pool.k_proj.bias
    torch.testing.assert_close(out['dense'][0].flatten(1).t(), dense, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(out['keys'][0].flatten(1).t(), k, atol=ATOL, rtol=1e-4)
    assert out['grid'] == (2, 3)
    # ResNet-only option: the attention pool's positional embedding added before the projections
    at_native = dense_features(rn, torch.randn(1, 3, 64, 64), pos_embed=True)
    assert at_native['dense'].shape[-2:] == (2, 2)
    img2 = torch.randn(1, 3, 64, 64)
    feat2 = rn.features(img2)[0].flatten(1).t() + pool.positional_embedding[1:]
    dense2 = (feat2 @ pool.v_proj.weight.t() + pool.v_proj.bias) @ pool.c_proj.weight.t() + pool.c_proj.bias
    torch.testing.assert_close(dense_features(rn, img2, pos_embed=True)['dense'][0].flatten(1).t(), dense2,
                               atol=ATOL, rtol=1e-4)


def test_options_of_the_wrong_tower_are_errors(vit, rn):
    with pytest.raises(ValueError, match='ResNet CLIPs only'):
        dense_features(vit, torch.randn(1, 3, 32, 32), pos_embed=True)
    with pytest.raises(ValueError, match='ViT CLIPs only'):
        dense_features(rn, torch.randn(1, 3, 64, 64), mode='clearclip')
    with pytest.raises(ValueError, match='ViT CLIPs only'):
        dense_features(rn, torch.randn(1, 3, 64, 64), legacy_maskclip_keys=True)
    with pytest.raises(ValueError, match='unknown dense-feature option'):
        dense_features(vit, torch.randn(1, 3, 32, 32), moed='sclip')
    # mode='maskclip' is the ResNet path itself
    assert dense_features(rn, torch.randn(1, 3, 64, 64), mode='maskclip')['dense'].shape[1] == 32


def test_cosine_logits_and_background_merge():
    dense = torch.randn(2, 8, 3, 4)
    text = F.normalize(torch.randn(5, 8), dim=1)
    logits = cosine_logits(dense * 7.0, text)
    manual = torch.einsum('bchw,kc->bkhw', F.normalize(dense, dim=1), text)
    torch.testing.assert_close(logits, manual)
    assert logits.abs().max() <= 1.0 + 1e-6
    merged = merge_background(logits, num_fg=3)
    assert merged.shape == (2, 4, 3, 4)
    torch.testing.assert_close(merged[:, 0], logits[:, 3:].amax(1))
    torch.testing.assert_close(merged[:, 1:], logits[:, :3])
    with pytest.raises(ValueError, match='no background words'):
        merge_background(logits, num_fg=5)
    with pytest.raises(ValueError, match='share E'):
        cosine_logits(dense, torch.randn(5, 7))
