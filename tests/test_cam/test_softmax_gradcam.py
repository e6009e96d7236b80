"""Math of the Softmax-GradCAM pure functions (spec clip_es.md §4-5)."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from wsss_mmseg.cam.softmax_gradcam import (as_target_tensor, clip_softmax, gradcam_maps, gradcam_weights,
                                            minmax_normalize, normalize_gradcam, patch_mean_embedding,
                                            softmax_gradcam, target_gradients_batched,
                                            target_gradients_per_class)


def test_minmax_normalize_additive_eps():
    x = torch.tensor([[[0.0, 1e-6], [5e-7, 2e-7]]])
    y = minmax_normalize(x)
    expected = x / (1e-7 + 1e-6)
    torch.testing.assert_close(y, expected)
    assert y.max().item() < 0.91  # eps is additive, not a clamp


def test_minmax_normalize_per_map_and_offset():
    x = torch.tensor([[[2.0, 3.0], [4.0, 6.0]], [[-1.0, -1.0], [1.0, 0.0]]])
    y = minmax_normalize(x)
    torch.testing.assert_close(y[0], torch.tensor([[0.0, 1.0], [2.0, 4.0]]) / (1e-7 + 4.0))
    torch.testing.assert_close(y[1], torch.tensor([[0.0, 0.0], [2.0, 1.0]]) / (1e-7 + 2.0))
    with pytest.raises(ValueError):
        minmax_normalize(torch.ones(3))


def test_normalize_gradcam_relu_then_twice():
    raw = torch.tensor([[[-3.0, 1e-6], [4e-7, 0.0]]])
    # ReLU -> [[0, 1e-6], [4e-7, 0]]; first: / (1e-7 + 1e-6); second: / (1e-7 + m1)
    m1 = np.float32(1e-6) / (np.float32(1e-7) + np.float32(1e-6))
    first = np.array([[0, 1e-6], [4e-7, 0]], np.float32) / (np.float32(1e-7) + np.float32(1e-6))
    second = first / (np.float32(1e-7) + m1)
    out = normalize_gradcam(raw)
    np.testing.assert_allclose(out[0].numpy(), second, rtol=1e-6)
    assert out.min().item() == 0.0
    with pytest.raises(ValueError):
        normalize_gradcam(raw, times=0)


def test_patch_mean_embedding_ignores_cls():
    torch.manual_seed(0)
    ln = nn.LayerNorm(8)
    proj = torch.randn(8, 4)
    tok = torch.randn(2, 5, 8)
    out = patch_mean_embedding(tok, ln_post=ln, proj=proj)
    tok2 = tok.clone()
    tok2[:, 0] = 100.0
    torch.testing.assert_close(patch_mean_embedding(tok2, ln_post=ln, proj=proj), out)
    torch.testing.assert_close(out, ln(tok)[:, 1:].mean(1) @ proj)
    with pytest.raises(ValueError):
        patch_mean_embedding(torch.randn(2, 1, 8), ln_post=ln, proj=proj)


def test_clip_softmax_formula():
    torch.manual_seed(1)
    img = torch.randn(3, 6)
    txt = torch.randn(5, 6)
    p = clip_softmax(img, txt, logit_scale=100.0)
    cos = (img / img.norm(dim=1, keepdim=True)) @ (txt / txt.norm(dim=1, keepdim=True)).t()
    torch.testing.assert_close(p, torch.softmax(100 * cos, dim=1))
    torch.testing.assert_close(p.sum(1), torch.ones(3))
    with pytest.raises(ValueError):
        clip_softmax(img, torch.randn(5, 7), logit_scale=1.0)


def test_targets_validation():
    assert as_target_tensor([2, 0]).tolist() == [2, 0]
    with pytest.raises(ValueError, match='K=0'):
        as_target_tensor([])
    with pytest.raises(ValueError, match='out of range'):
        as_target_tensor([3], num_scores=3)


def _linear_softmax_case(seed=0, T=4, D=3, C=5):
    rng = np.random.RandomState(seed)
    A = rng.randn(1, T, D)
    W = rng.randn(T, D, C)

    def score_fn(x):
        z = torch.einsum('btd,tdc->bc', x, torch.from_numpy(W).to(x.dtype))
        return z.softmax(dim=-1)

    return A, W, score_fn


@pytest.mark.parametrize('fn', [target_gradients_batched, target_gradients_per_class])
def test_gradients_analytic_linear_block(fn):
    """p = softmax(z), z_j = sum_{t,d} A_td W_tdj: dp_k/dA_td = sum_j p_k (delta_kj - p_j) W_tdj."""
    A, W, score_fn = _linear_softmax_case()
    targets = [3, 0, 4]
    scores, grads = fn(torch.from_numpy(A), score_fn, targets)
    z = np.einsum('td,tdc->c', A[0], W)
    p = np.exp(z - z.max())
    p /= p.sum()
    for i, k in enumerate(targets):
        dp_dz = p[k] * ((np.arange(len(p)) == k) - p)
        expected = np.einsum('c,tdc->td', dp_dz, W)
        np.testing.assert_allclose(grads[i].numpy(), expected, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(scores[i].numpy(), p, rtol=1e-12)


class _TinyBlockHead(nn.Module):
    """Attention + MLP block on a given ln_1 output, then patch-mean head and CLIP softmax."""

    def __init__(self, D=16, E=8, C=6, heads=2):
        super().__init__()
        self.attn = nn.MultiheadAttention(D, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(D)
        self.mlp = nn.Sequential(nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D))
        self.ln_post = nn.LayerNorm(D)
        self.proj = nn.Parameter(torch.randn(D, E) / D ** 0.5)
        self.text = nn.Parameter(torch.randn(C, E))

    def score(self, a, residual):
        x = residual.expand(a.shape[0], -1, -1) + self.attn(a, a, a, need_weights=False)[0]
        x = x + self.mlp(self.ln_2(x))
        emb = patch_mean_embedding(x, ln_post=self.ln_post, proj=self.proj)
        return clip_softmax(emb, self.text, logit_scale=100.0)


def test_batched_equals_per_class_on_attention_block():
    torch.manual_seed(0)
    m = _TinyBlockHead().double()
    residual = torch.randn(1, 1 + 12, 16, dtype=torch.float64)
    a = nn.LayerNorm(16).double()(residual).detach()
    targets = [0, 2, 5]
    fn = lambda x: m.score(x, residual)  # noqa: E731
    s1, g1 = target_gradients_batched(a, fn, targets)
    s2, g2 = target_gradients_per_class(a, fn, targets)
    torch.testing.assert_close(s1, s2, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-14)
    # independent check with the full Jacobian
    jac = torch.autograd.functional.jacobian(lambda x: fn(x)[0], a)  # (C, 1, T, D)
    for i, k in enumerate(targets):
        torch.testing.assert_close(g1[i], jac[k, 0], rtol=1e-10, atol=1e-14)
    # no gradient leaked into the module parameters
    assert all(p.grad is None for p in m.parameters())


def test_gradcam_weights_and_maps_by_hand():
    grads = torch.zeros(1, 1 + 4, 2)
    grads[0, 0] = 100.0  # CLS gradient is ignored
    grads[0, 1:, 0] = torch.tensor([1.0, 2.0, 3.0, 6.0])  # mean 3
    grads[0, 1:, 1] = -1.0
    w = gradcam_weights(grads)
    torch.testing.assert_close(w, torch.tensor([[3.0, -1.0]]))
    act = torch.zeros(1, 5, 2)
    act[0, 0] = 50.0
    act[0, 1:, 0] = torch.tensor([1.0, 0.0, 2.0, 1.0])
    act[0, 1:, 1] = torch.tensor([0.0, 1.0, 1.0, 4.0])
    cam = gradcam_maps(act, w, (2, 2))
    torch.testing.assert_close(cam, torch.tensor([[[3.0, -1.0], [5.0, -1.0]]]))
    with pytest.raises(ValueError, match='grid'):
        gradcam_maps(act, w, (3, 2))


@pytest.mark.parametrize('batched', [True, False])
def test_softmax_gradcam_pipeline(batched):
    torch.manual_seed(3)
    m = _TinyBlockHead()
    residual = torch.randn(1, 1 + 12, 16)
    a = nn.LayerNorm(16)(residual).detach()
    out = softmax_gradcam(a, lambda x: m.score(x, residual), [1, 4], (3, 4), batched=batched)
    assert out['probs'].shape == (2, 6) and out['weights'].shape == (2, 16)
    assert out['cam_raw'].shape == (2, 3, 4) and out['cam'].shape == (2, 3, 4)
    torch.testing.assert_close(out['cam'], normalize_gradcam(out['cam_raw']))
    ref = softmax_gradcam(a, lambda x: m.score(x, residual), [1, 4], (3, 4), batched=not batched)
    for key in ('probs', 'weights', 'cam_raw', 'cam'):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-5, atol=1e-7)


def test_batched_is_deterministic_and_rejects_bad_shapes():
    A, _, score_fn = _linear_softmax_case(seed=4)
    a = torch.from_numpy(A)
    g1 = target_gradients_batched(a, score_fn, [1, 2])[1]
    g2 = target_gradients_batched(a, score_fn, [1, 2])[1]
    assert torch.equal(g1, g2)
    with pytest.raises(ValueError):
        target_gradients_batched(torch.randn(2, 4, 3), score_fn, [0])
    with pytest.raises(ValueError, match='out of range'):
        target_gradients_batched(a, score_fn, [7])
    with pytest.raises(ValueError, match='K=0'):
        target_gradients_per_class(a, score_fn, [])


def test_batched_under_autocast_cpu():
    torch.manual_seed(5)
    m = _TinyBlockHead()
    residual = torch.randn(1, 1 + 6, 16)
    a = nn.LayerNorm(16)(residual).detach()
    fn = lambda x: m.score(x, residual)  # noqa: E731
    ref = softmax_gradcam(a, fn, [0, 3], (2, 3))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = softmax_gradcam(a, fn, [0, 3], (2, 3))
    assert out['cam'].dtype == torch.float32
    assert out['weights'].shape == ref['weights'].shape
    assert torch.isfinite(out['cam']).all()
