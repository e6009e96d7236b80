"""CLIPResNet: MaskCLIP-style dense features of ModifiedResNet CLIPs."""
from __future__ import annotations

import pytest
import torch

from wsss_mmseg.clip import CLIPResNet, as_conv1x1, linear_as_conv1x1, tiny_clip


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope='module')
def rn_model() -> torch.nn.Module:
    return tiny_clip(arch='rn', vision_width=8, vision_layers=1, image_size=64, embed_dim=24)


@torch.no_grad()
def test_dense_features_match_attnpool_linears(rn_model) -> None:
    net = CLIPResNet(rn_model.visual)
    assert (net.width, net.output_dim, net.num_heads, net.native_grid) == (256, 24, 4, (2, 2))
    images = _randn(2, 3, 96, 128)
    out = net.forward_features(images)
    feat = out['feat']
    assert feat.shape == (2, 256, 3, 4)
    pool = rn_model.visual.attnpool
    tokens = feat.flatten(2).transpose(1, 2)  # (B, h*w, C)

    def to_map(t: torch.Tensor) -> torch.Tensor:
        return t.transpose(1, 2).reshape(2, -1, 3, 4)

    v = to_map(pool.v_proj(tokens))
    assert torch.allclose(out['v'], v, atol=1e-5)
    assert torch.allclose(out['k'], to_map(pool.k_proj(tokens)), atol=1e-5)
    assert out['dense'].shape == (2, 24, 3, 4)
    assert torch.allclose(out['dense'], to_map(pool.c_proj(pool.v_proj(tokens))), atol=1e-5)
    # the stages are the model's own
    visual = rn_model.visual
    ref = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(images)))))
    assert torch.equal(feat, ref)


@torch.no_grad()
def test_encode_image_matches_open_clip(rn_model) -> None:
    images = _randn(2, 3, 64, 64)
    assert torch.allclose(CLIPResNet(rn_model.visual).encode_image(images), rn_model.encode_image(images), atol=1e-6)


@torch.no_grad()
def test_conv1x1_helpers() -> None:
    linear = torch.nn.Linear(6, 4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        torch.nn.init.normal_(linear.bias)
    x = _randn(2, 6, 3, 5)
    ref = linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    assert torch.allclose(linear_as_conv1x1(x, linear), ref, atol=1e-6)
    conv = as_conv1x1(linear)
    assert isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (1, 1)
    assert torch.allclose(conv(x), ref, atol=1e-6)
    assert conv.weight.data_ptr() != linear.weight.data_ptr()


def test_bad_inputs(rn_model, tiny_vit) -> None:
    net = CLIPResNet(rn_model.visual)
    with pytest.raises(ValueError, match=r'\(96, 100\) is not a multiple of the ResNet stride 32'):
        net.forward_features(_randn(1, 3, 96, 100))
    with pytest.raises(ValueError, match='ModifiedResNet'):
        CLIPResNet(tiny_vit.visual)
