"""PACL stride-4 inference (spec maskclip_pacl.md §3.4): overlapping patch embedding by hand, the
strided path equal to the native one at stride = patch size, and a 16x denser grid in eval mode."""
import numpy as np
import pytest
import torch

import wsss_mmseg  # noqa: F401
from wsss_mmseg.models.pacl import PACLTokenBackbone
from wsss_mmseg.pacl.strided import strided_patch_embed


def test_strided_patch_embedding_equals_a_numpy_dot_product():
    g = torch.Generator().manual_seed(0)
    img = torch.randn(1, 3, 10, 9, generator=g)
    weight = torch.randn(5, 3, 4, 4, generator=g)
    tokens, grid = strided_patch_embed(img, weight, stride=2)
    assert grid == (5, 5)                                   # ceil(10 / 2), ceil(9 / 2)
    # padded image: left/top (4 - 2) // 2 = 1, right/bottom to a multiple of 2 plus the remaining 1
    x = np.zeros((3, 1 + 10 + 1, 1 + 10 + 1))
    x[:, 1:11, 1:10] = img[0].numpy()
    wn = weight.numpy()
    for i in range(5):
        for j in range(5):
            patch = x[:, 2 * i:2 * i + 4, 2 * j:2 * j + 4]
            expected = (wn * patch[None]).sum(axis=(1, 2, 3))
            np.testing.assert_allclose(tokens[0, i * 5 + j].numpy(), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match='patch stride'):
        strided_patch_embed(img, weight, stride=5)


@pytest.mark.parametrize('source', ['last', 'penultimate', 'clearclip'])
def test_backbone_strided_path(tiny_clip_path, source):
    clip = dict(model_name=None, pretrained=tiny_clip_path)
    native = PACLTokenBackbone(clip=clip, token_source=source).eval()
    same = PACLTokenBackbone(clip=clip, token_source=source, test_patch_stride=16).eval()
    x = torch.randn(1, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(same(x)[0], native(x)[0], atol=1e-5, rtol=1e-5)   # stride = patch: identical
    dense = PACLTokenBackbone(clip=clip, token_source=source, test_patch_stride=4).eval()
    assert dense.stride == 4 and dense(x)[0].shape == (1, 64, 8, 12)           # 16x the tokens
    assert dense.train().stride == 16 and dense(x)[0].shape == (1, 64, 2, 3)   # training: native stride
    with pytest.raises(ValueError, match='test_patch_stride'):
        PACLTokenBackbone(clip=clip, test_patch_stride=32)
