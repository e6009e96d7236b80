"""CLIPViT: any-size dense forward, block re-implementation, intermediates."""
from __future__ import annotations

import pytest
import torch
from open_clip.transformer import QuickGELU, ResidualAttentionBlock, VisionTransformer

from wsss_mmseg.clip import CLIPViT, block_forward, interpolate_pos_embed, multihead_attention, tiny_clip


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def vit(tiny_vit) -> CLIPViT:
    return CLIPViT(tiny_vit.visual)


def test_properties(vit: CLIPViT, tiny_vit) -> None:
    assert (vit.patch_size, vit.width, vit.num_layers, vit.num_heads, vit.output_dim) == (16, 64, 2, 1, 32)
    assert vit.native_grid == (4, 4)
    assert {id(p) for p in vit.parameters()} == {id(p) for p in tiny_vit.visual.parameters()}


@torch.no_grad()
def test_encode_image_matches_open_clip(tiny_vit, vit: CLIPViT) -> None:
    images = _randn(2, 3, 64, 64)
    ref = tiny_vit.encode_image(images)
    ours = vit.encode_image(images)
    assert ours.shape == (2, 32)
    assert (ours - ref).abs().max() <= 1e-5


@pytest.mark.parametrize('pool_type,final_ln_after_pool', [('avg', False), ('tok', True), ('avg', True)])
@torch.no_grad()
def test_pooling_variants_match_open_clip(pool_type: str, final_ln_after_pool: bool) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        visual = VisionTransformer(image_size=32, patch_size=16, width=64, layers=1, heads=2, mlp_ratio=4.0,
                                   output_dim=16, pool_type=pool_type, final_ln_after_pool=final_ln_after_pool,
                                   act_layer=QuickGELU).eval()
    images = _randn(2, 3, 32, 32)
    assert (CLIPViT(visual).encode_image(images) - visual(images)).abs().max() <= 1e-5


def test_pos_embed_identity_at_native_grid(vit: CLIPViT, tiny_vit) -> None:
    table = tiny_vit.visual.positional_embedding
    assert interpolate_pos_embed(table, src_grid=(4, 4), dst_grid=(4, 4)) is table
    assert torch.equal(vit.pos_embed((4, 4)), table)
    rounded = CLIPViT(tiny_vit.visual, pos_round_fp16=True).pos_embed((4, 4))
    assert torch.equal(rounded, table.half().float()) and not torch.equal(rounded, table)


def test_pos_embed_interpolation() -> None:
    table = _randn(1 + 4 * 4, 8)
    for mode in ('bicubic', 'bilinear'):
        out = interpolate_pos_embed(table, src_grid=(4, 4), dst_grid=(6, 10), mode=mode)
        assert out.shape == (1 + 60, 8)
        assert torch.equal(out[0], table[0])  # CLS row kept
    bicubic = interpolate_pos_embed(table, src_grid=(4, 4), dst_grid=(8, 8), mode='bicubic')
    bilinear = interpolate_pos_embed(table, src_grid=(4, 4), dst_grid=(8, 8), mode='bilinear')
    assert not torch.allclose(bicubic, bilinear)
    # a spatially constant table stays constant
    flat = torch.cat([table[:1], table[1:2].expand(16, -1)])
    assert torch.allclose(interpolate_pos_embed(flat, src_grid=(4, 4), dst_grid=(5, 7))[1:], table[1].expand(35, -1),
                          atol=1e-6)
    with pytest.raises(ValueError, match='pos_interp'):
        interpolate_pos_embed(table, src_grid=(4, 4), dst_grid=(8, 8), mode='nearest')
    with pytest.raises(ValueError, match='does not match'):
        interpolate_pos_embed(table, src_grid=(3, 4), dst_grid=(8, 8))


def test_pos_embed_cache(vit: CLIPViT) -> None:
    with torch.no_grad():
        first = vit.pos_embed((6, 5))
        assert vit.pos_embed((6, 5)) is first
        assert vit.pos_embed((6, 5), dtype=torch.float64) is not first
        assert vit.pos_embed((6, 5), dtype=torch.float64).dtype == torch.float64
    # a trainable table under autograd is recomputed (keeps the graph), not cached
    tracked = vit.pos_embed((6, 5))
    assert tracked.grad_fn is not None and tracked is not vit.pos_embed((6, 5))
    assert torch.equal(tracked, first)


@torch.no_grad()
def test_dense_tokens_at_448(vit: CLIPViT) -> None:
    out = vit.forward_features(_randn(1, 3, 448, 448))
    assert out['grid'] == (28, 28)
    assert out['dense'].shape == (1, 1 + 28 * 28, 32)
    assert out['dense'][0, 1:].shape == (28 * 28, 32)
    assert out['last'].shape == (1, 785, 64) and out['pre_last'].shape == (1, 785, 64)
    assert torch.allclose(out['dense'], vit.head(out['last']))


@torch.no_grad()
def test_non_square_input_and_bad_sizes(vit: CLIPViT) -> None:
    out = vit.forward_features(_randn(2, 3, 48, 80))
    assert out['grid'] == (3, 5) and out['dense'].shape == (2, 16, 32)
    with pytest.raises(ValueError, match=r'\(65, 64\) is not a multiple of the patch size 16'):
        vit.forward_features(_randn(1, 3, 65, 64))
    with pytest.raises(ValueError, match='multiple of the patch size'):
        vit.encode_image(_randn(1, 3, 64, 40))


@torch.no_grad()
def test_attention_maps(vit: CLIPViT) -> None:
    multi = CLIPViT(tiny_clip(vision_width=128, vision_layers=3).visual)  # 2 heads
    out = multi.forward_features(_randn(2, 3, 64, 96), attn_last=2)
    assert len(out['attn']) == 2
    for attn in out['attn']:
        assert attn.shape == (2, 25, 25)
        assert torch.allclose(attn.sum(-1), torch.ones(2, 25), atol=1e-5)
        assert (attn >= 0).all()
    # in block order: the maps of blocks 1 and 2
    x = multi.embed(_randn(2, 3, 64, 96))
    x, _ = block_forward(multi.blocks[0], x)
    x, ex1 = block_forward(multi.blocks[1], x, need_attn=True)
    _, ex2 = block_forward(multi.blocks[2], x, need_attn=True)
    assert torch.equal(out['attn'][0], ex1['attn']) and torch.equal(out['attn'][1], ex2['attn'])


@torch.no_grad()
def test_block_forward_matches_open_clip_block() -> None:
    model = tiny_clip(vision_width=128, vision_layers=1)
    block = model.visual.transformer.resblocks[0]
    x = _randn(2, 7, 128)
    out, extras = block_forward(block, x, need_attn=True, need_qkv=True)
    assert (out - block(x)).abs().max() <= 1e-5
    ref_out, ref_attn = block.attn(extras['ln1'], extras['ln1'], extras['ln1'], need_weights=True)
    assert torch.allclose(extras['attn'], ref_attn, atol=1e-6)
    assert torch.equal(extras['ln1'], block.ln_1(x))
    q, k, v = torch.nn.functional.linear(block.ln_1(x), block.attn.in_proj_weight, block.attn.in_proj_bias).chunk(3, -1)
    assert torch.equal(extras['q'], q) and torch.equal(extras['k'], k) and torch.equal(extras['v'], v)
    plain, plain_extras = block_forward(block, x)
    assert set(plain_extras) == {'ln1'} and torch.allclose(plain, out, atol=1e-6)


@torch.no_grad()
def test_block_forward_seq_first_block_and_layer_scale() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        block = ResidualAttentionBlock(32, 2, ls_init_value=0.5, act_layer=QuickGELU, batch_first=False).eval()
    x = _randn(3, 5, 32)  # (B, T, D)
    out, _ = block_forward(block, x)
    assert (out - block(x.transpose(0, 1)).transpose(0, 1)).abs().max() <= 1e-5


def test_ln1_override_gradient(tiny_vit) -> None:
    block = tiny_vit.visual.transformer.resblocks[-1]
    x = _randn(1, 17, 64)
    ln1 = block.ln_1(x).detach().requires_grad_(True)
    out, extras = block_forward(block, x, ln1_out=ln1)
    assert extras['ln1'] is ln1
    with torch.no_grad():
        assert torch.allclose(out, block_forward(block, x)[0], atol=1e-6)
    out[:, 1:].sum().backward()
    assert ln1.grad is not None and ln1.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='ln1_out shape'):
        block_forward(block, x, ln1_out=ln1[:, :3])


@torch.no_grad()
def test_forward_features_intermediates() -> None:
    vit = CLIPViT(tiny_clip(vision_layers=3).visual)
    images = _randn(1, 3, 32, 48)
    full = vit.forward_features(images, out_layers=(0, -1, 1), qkv_last=True, ln1_last=True, attn_last=1)
    assert sorted(full['tokens']) == [-1, 0, 1]
    assert torch.equal(full['tokens'][-1], full['last'])
    x = vit.embed(images)
    x0, _ = block_forward(vit.blocks[0], x)
    assert torch.equal(full['tokens'][0], x0)
    assert torch.equal(full['pre_last'], full['tokens'][1])
    last, ex = block_forward(vit.blocks[-1], full['pre_last'], need_qkv=True)
    assert torch.equal(full['ln1'], ex['ln1']) and torch.equal(full['q'], ex['q']) and torch.equal(full['v'], ex['v'])
    assert torch.allclose(full['last'], last, atol=1e-6)
    # split run: the caller runs the last block itself
    split = vit.forward_features(images, stop_before_last=True, qkv_last=True, ln1_last=True, attn_last=2)
    assert 'last' not in split and 'dense' not in split and len(split['attn']) == 2
    # block 1 ran with explicit attention weights here and with SDPA above: float rounding only
    assert torch.allclose(split['pre_last'], full['pre_last'], atol=1e-6)
    assert torch.allclose(split['ln1'], full['ln1'], atol=1e-5) and torch.allclose(split['k'], full['k'], atol=1e-5)
    same = vit.forward_features(images, stop_before_last=True, qkv_last=True, ln1_last=True, attn_last=0)
    assert torch.equal(same['pre_last'], full['pre_last']) and torch.equal(same['q'], full['q'])
    with pytest.raises(ValueError, match='out of range'):
        vit.forward_features(images, out_layers=(2,), stop_before_last=True)
    with pytest.raises(ValueError, match='attn_last'):
        vit.forward_features(images, attn_last=3, stop_before_last=True)
    with pytest.raises(ValueError, match='out of range'):
        vit.forward_features(images, out_layers=(-4,))


def test_deterministic(vit: CLIPViT) -> None:
    images = _randn(1, 3, 64, 80)
    with torch.no_grad():
        a = vit.forward_features(images, attn_last=2)
        b = vit.forward_features(images, attn_last=2)
    assert torch.equal(a['dense'], b['dense']) and torch.equal(a['attn'][1], b['attn'][1])


def test_multihead_attention_paths_agree() -> None:
    q, k, v = _randn(2, 9, 32, seed=1), _randn(2, 9, 32, seed=2), _randn(2, 9, 32, seed=3)
    fast, none = multihead_attention(q, k, v, num_heads=4)
    slow, weights = multihead_attention(q, k, v, num_heads=4, need_weights=True)
    assert none is None and weights.shape == (2, 9, 9)
    assert torch.allclose(fast, slow, atol=1e-5)


def test_rejects_unsupported_towers(tiny_vit) -> None:
    with pytest.raises(ValueError, match='VisionTransformer'):
        CLIPViT(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match='pos_interp'):
        CLIPViT(tiny_vit.visual, pos_interp='area')


def test_clip_es_position_mode(tiny_vit) -> None:
    vit = CLIPViT(tiny_vit.visual, pos_interp='bilinear', pos_round_fp16=True)
    table = tiny_vit.visual.positional_embedding.detach()
    grid = table[1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    ref = torch.nn.functional.interpolate(grid, size=(6, 3), mode='bilinear', align_corners=False)
    ref = torch.cat([table[:1], ref.permute(0, 2, 3, 1).reshape(18, -1)]).half().float()
    with torch.no_grad():
        assert torch.equal(vit.pos_embed((6, 3)), ref)


@torch.no_grad()
def test_mixed_precision_model(tiny_vit_file) -> None:
    from wsss_mmseg.clip import build_clip
    fp32 = CLIPViT(build_clip(None, tiny_vit_file).visual)
    fp16 = CLIPViT(build_clip(None, tiny_vit_file, precision='fp16').visual)
    images = _randn(1, 3, 48, 64)
    out16 = fp16.forward_features(images, attn_last=1)
    out32 = fp32.forward_features(images, attn_last=1)
    assert out16['dense'].dtype == torch.float16 and out16['attn'][0].dtype == torch.float16
    assert torch.allclose(out16['dense'].float(), out32['dense'], atol=2e-2)
