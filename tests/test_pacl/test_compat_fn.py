"""PACL compatibility function: vectorised all-pairs phi_hat vs a naive per-pair loop."""
import math

import pytest
import torch
import torch.nn.functional as F

from wsss_mmseg.pacl.compat_fn import (compatibility, patch_attention, patch_text_similarity,
                                       pooled_embedding)


def naive_phi(patches: torch.Tensor, texts: torch.Tensor, temperature: float) -> torch.Tensor:
    """phi_hat(x_b, y_k) one pair at a time, written from the formulas of spec §3.2."""
    b_n, t_n, _ = patches.shape
    out = torch.zeros(b_n, texts.shape[0], dtype=torch.float64)
    for b in range(b_n):
        for k in range(texts.shape[0]):
            t = texts[k].double()
            s = [float(patches[b, i].double() @ t / (patches[b, i].double().norm() * t.norm()))
                 for i in range(t_n)]
            z = sum(math.exp(v / temperature) for v in s)
            a = [math.exp(v / temperature) / z for v in s]
            v_hat = sum(a[i] * patches[b, i].double() for i in range(t_n))
            out[b, k] = float(v_hat @ t / (v_hat.norm() * t.norm()))
    return out


@pytest.mark.parametrize('chunk', [None, 1, 2, 5, 256])
@pytest.mark.parametrize('temperature', [1.0, 0.1])
def test_all_pairs_equals_naive_loop(chunk, temperature):
    gen = torch.Generator().manual_seed(0)
    patches = torch.randn(4, 7, 6, generator=gen)
    texts = torch.randn(5, 6, generator=gen)
    phi = compatibility(patches, texts, temperature=temperature, chunk_size=chunk)
    assert phi.shape == (4, 5)
    torch.testing.assert_close(phi.double(), naive_phi(patches, texts, temperature), atol=1e-5, rtol=0)


def test_caption_mode_square_matrix_rows_are_images():
    gen = torch.Generator().manual_seed(1)
    patches = torch.randn(3, 4, 8, generator=gen)
    captions = torch.randn(3, 8, generator=gen)
    phi = compatibility(patches, captions)
    # column j of image i uses the pooling conditioned on caption j (not only the matched pair)
    for i in range(3):
        for j in range(3):
            one = compatibility(patches[i:i + 1], captions[j:j + 1])
            torch.testing.assert_close(phi[i, j], one[0, 0])


def test_chunking_is_bit_identical_and_deterministic():
    gen = torch.Generator().manual_seed(2)
    patches = torch.randn(2, 9, 4, generator=gen)
    texts = torch.randn(11, 4, generator=gen)
    a = compatibility(patches, texts, chunk_size=3)
    b = compatibility(patches, texts, chunk_size=3)
    assert torch.equal(a, b)
    torch.testing.assert_close(a, compatibility(patches, texts, chunk_size=None), atol=1e-6, rtol=0)


def test_softmax_over_patches_sums_to_one_and_pooling():
    gen = torch.Generator().manual_seed(3)
    patches = torch.randn(2, 6, 5, generator=gen)
    texts = torch.randn(3, 5, generator=gen)
    sim = patch_text_similarity(patches, texts)
    assert sim.shape == (2, 3, 6)
    assert sim.abs().max() <= 1 + 1e-6
    for tau in (1.0, 0.1, 0.01):
        attn = patch_attention(sim, temperature=tau)
        torch.testing.assert_close(attn.sum(-1), torch.ones(2, 3))
        assert (attn >= 0).all()
    attn = patch_attention(sim)
    pooled = pooled_embedding(patches, attn)
    torch.testing.assert_close(pooled[1, 2], (attn[1, 2, :, None] * patches[1]).sum(0))
    # a sharper temperature concentrates the weight on the best patch
    sharp = patch_attention(sim, temperature=0.01)
    assert torch.equal(sharp.argmax(-1), sim.argmax(-1))
    assert (sharp.amax(-1) >= attn.amax(-1)).all()


def test_similarity_is_cosine():
    p = torch.tensor([[[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]]])
    t = torch.tensor([[5.0, 0.0]])
    torch.testing.assert_close(patch_text_similarity(p, t)[0, 0], torch.tensor([1.0, 0.0, 1 / math.sqrt(2)]))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match='embedding dims differ'):
        compatibility(torch.randn(2, 3, 4), torch.randn(5, 6))
    with pytest.raises(ValueError, match=r'\(B, T, D\)'):
        compatibility(torch.randn(3, 4), torch.randn(5, 4))
    with pytest.raises(ValueError, match='no patches'):
        compatibility(torch.randn(2, 0, 4), torch.randn(5, 4))
    with pytest.raises(ValueError, match='chunk_size'):
        compatibility(torch.randn(2, 3, 4), torch.randn(5, 4), chunk_size=0)
    with pytest.raises(ValueError, match='temperature'):
        patch_attention(torch.randn(2, 3), temperature=0.0)


def test_gradients_flow_to_patches_only():
    patches = torch.randn(2, 4, 3, requires_grad=True)
    texts = torch.randn(2, 3)
    compatibility(patches, texts).sum().backward()
    assert patches.grad is not None and patches.grad.abs().sum() > 0
    assert F.normalize(texts, dim=-1).requires_grad is False
