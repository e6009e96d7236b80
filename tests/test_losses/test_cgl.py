"""cgl_cross_entropy: equals CE on labels where low-confidence pixels are set to 255."""
import math

import pytest
import torch
import torch.nn.functional as F

from wsss_mmseg.losses import cgl_cross_entropy, check_mu, confidence_keep_mask

C = 5


def _batch(seed: int = 0, dtype=torch.float32):
    """Logits, labels with pre-existing ignore pixels and a padded border, confidence."""
    g = torch.Generator().manual_seed(seed)
    b, h, w = 2, 12, 14
    logits = torch.randn(b, C, h, w, generator=g, dtype=dtype)
    labels = torch.randint(0, C, (b, h, w), generator=g)
    labels[torch.rand(b, h, w, generator=g) < 0.1] = 255         # pre-existing ignore
    labels[1, 9:, :] = 255                                          # padding (bottom)
    labels[1, :, 11:] = 255                                         # padding (right)
    conf = torch.rand(b, h, w, generator=g)
    conf.view(-1)[::7] = 1.0                                        # exact 1.0 kept for mu=1
    conf.view(-1)[3::11] = 0.95                                     # boundary values: kept
    conf.view(-1)[5::13] = 0.3
    conf[1, 9:, :] = 0.0                                            # padding has conf 0
    conf[1, :, 11:] = 0.0
    return logits, labels, conf


def _masked(labels, conf, mu):
    ref = labels.clone()
    ref[conf < mu] = 255
    return ref


@pytest.mark.parametrize('mu', [0.0, 0.3, 0.95, 1.0])
def test_equals_torch_ce_on_masked_labels(mu):
    logits, labels, conf = _batch()
    ref_labels = _masked(labels, conf, mu)
    assert (ref_labels != 255).any()
    expected = torch.nn.CrossEntropyLoss(ignore_index=255)(logits, ref_labels)
    got = cgl_cross_entropy(logits, labels, conf, mu=mu)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    if mu == 0.0:  # mu = 0 is plain CE on the pseudo masks
        torch.testing.assert_close(got, torch.nn.CrossEntropyLoss(ignore_index=255)(logits, labels),
                                   rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('mu', [0.0, 0.3, 0.95, 1.0])
@pytest.mark.parametrize('avg_non_ignore', [True, False])
def test_equals_mmseg_cross_entropy(mu, avg_non_ignore):
    import wsss_mmseg  # noqa: F401  (compat for upstream mmseg)
    from mmseg.models.losses import CrossEntropyLoss
    logits, labels, conf = _batch(1)
    ref = CrossEntropyLoss(avg_non_ignore=avg_non_ignore)(logits, _masked(labels, conf, mu),
                                                          ignore_index=255)
    got = cgl_cross_entropy(logits, labels, conf, mu=mu, avg_non_ignore=avg_non_ignore)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-7)


def test_class_weight_matches_torch():
    logits, labels, conf = _batch(2)
    cw = [0.5, 1.0, 2.0, 0.25, 3.0]
    ref = torch.nn.CrossEntropyLoss(weight=torch.tensor(cw), ignore_index=255)(
        logits, _masked(labels, conf, 0.5))
    got = cgl_cross_entropy(logits, labels, conf, mu=0.5, class_weight=cw)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('mu', [0.3, 0.95])
def test_gradient_zero_exactly_on_ignored_pixels(mu):
    logits, labels, conf = _batch(3)
    logits.requires_grad_(True)
    cgl_cross_entropy(logits, labels, conf, mu=mu).backward()
    grad = logits.grad
    dropped = (conf < mu) | (labels == 255)
    assert dropped.any() and (~dropped).any()
    assert torch.all(grad.permute(1, 0, 2, 3)[:, dropped] == 0)
    # every kept pixel gets a gradient (softmax - onehot is never all zero here)
    assert torch.all(grad.abs().sum(1)[~dropped] > 0)


def test_soft_weighting_hand_computation():
    logits, labels, conf = _batch(4, dtype=torch.float64)
    mu = 0.3
    got = cgl_cross_entropy(logits, labels, conf.double(), mu=mu, soft=True)
    logp = torch.log_softmax(logits, 1)
    total, count = 0.0, 0
    b, _, h, w = logits.shape
    for n in range(b):
        for y in range(h):
            for x in range(w):
                lab, c = int(labels[n, y, x]), float(conf[n, y, x])
                if lab == 255 or c < mu:
                    continue
                total += -float(logp[n, lab, y, x]) * c
                count += 1
    assert math.isclose(float(got), total / count, rel_tol=1e-12)


def test_pixel_weight_and_reductions():
    logits, labels, conf = _batch(5)
    mu = 0.5
    ref_labels = _masked(labels, conf, mu)
    per_pixel = F.cross_entropy(logits, ref_labels, ignore_index=255, reduction='none')
    none = cgl_cross_entropy(logits, labels, conf, mu=mu, reduction='none')
    torch.testing.assert_close(none, per_pixel)
    assert torch.all(none[ref_labels == 255] == 0)
    total = cgl_cross_entropy(logits, labels, conf, mu=mu, reduction='sum')
    torch.testing.assert_close(total, per_pixel.sum())
    pw = torch.rand(labels.shape, generator=torch.Generator().manual_seed(0))
    weighted = cgl_cross_entropy(logits, labels, conf, mu=mu, pixel_weight=pw)
    torch.testing.assert_close(weighted, (per_pixel * pw).sum() / (ref_labels != 255).sum())


def test_nothing_kept_gives_zero_not_nan():
    logits, labels, conf = _batch(6)
    logits.requires_grad_(True)
    loss = cgl_cross_entropy(logits, labels, torch.zeros_like(conf), mu=0.5)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(logits.grad == 0)


def test_no_confidence_means_plain_ce_only_for_mu_zero():
    logits, labels, _ = _batch(7)
    torch.testing.assert_close(cgl_cross_entropy(logits, labels, None, mu=0.0),
                               torch.nn.CrossEntropyLoss(ignore_index=255)(logits, labels))
    with pytest.raises(ValueError, match='mu'):
        cgl_cross_entropy(logits, labels, None, mu=0.5)
    with pytest.raises(ValueError, match='soft'):
        cgl_cross_entropy(logits, labels, None, mu=0.0, soft=True)


def test_deterministic():
    logits, labels, conf = _batch(8)
    a = cgl_cross_entropy(logits, labels, conf, mu=0.4, soft=True)
    b = cgl_cross_entropy(logits, labels, conf, mu=0.4, soft=True)
    assert torch.equal(a, b)


@pytest.mark.parametrize('mu', [-0.01, 1.01, float('nan'), True, '0.9', None])
def test_bad_mu(mu):
    logits, labels, conf = _batch()
    with pytest.raises(ValueError, match='mu'):
        cgl_cross_entropy(logits, labels, conf, mu=mu)
    with pytest.raises(ValueError, match='mu'):
        check_mu(mu)


def test_check_mu_accepts_bounds():
    assert check_mu(0) == 0.0 and check_mu(1) == 1.0 and check_mu(torch.tensor(0.5)) == 0.5


@pytest.mark.parametrize('bad', [1.2, -0.1, float('nan')])
def test_confidence_out_of_range(bad):
    logits, labels, conf = _batch()
    conf[0, 0, 0] = bad
    with pytest.raises(ValueError, match=r'confidence values must lie in \[0, 1\]'):
        cgl_cross_entropy(logits, labels, conf, mu=0.5)


def test_shape_and_dtype_errors():
    logits, labels, conf = _batch()
    with pytest.raises(ValueError, match='confidence shape'):
        cgl_cross_entropy(logits, labels, conf[:, :-1], mu=0.5)
    with pytest.raises(ValueError, match='floating point'):
        cgl_cross_entropy(logits, labels, (conf > 0.5).long(), mu=0.5)
    with pytest.raises(ValueError, match='labels shape'):
        cgl_cross_entropy(logits, labels[:, :-1], conf[:, :-1], mu=0.5)
    with pytest.raises(ValueError, match='integer'):
        cgl_cross_entropy(logits, labels.float(), conf, mu=0.5)
    with pytest.raises(ValueError, match='reduction'):
        cgl_cross_entropy(logits, labels, conf, mu=0.5, reduction='avg')
    with pytest.raises(ValueError, match='class_weight'):
        cgl_cross_entropy(logits, labels, conf, mu=0.5, class_weight=[1.0, 2.0])
    bad_labels = labels.clone()
    bad_labels[0, 0, 0] = C  # out of range and kept
    with pytest.raises(ValueError, match=r'labels must lie in 0\.\.4'):
        cgl_cross_entropy(logits, bad_labels, torch.ones_like(conf), mu=0.5)


def test_keep_mask():
    _, labels, conf = _batch()
    keep = confidence_keep_mask(labels, conf, mu=0.95)
    assert torch.equal(keep, (labels != 255) & (conf >= 0.95))


def test_half_precision_logits_accumulate_in_float32():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 3, 300, 300, generator=g).half()  # 90000 pixels > float16 max
    labels = torch.randint(0, 3, (1, 300, 300), generator=g)
    conf = torch.ones(1, 300, 300)
    got = cgl_cross_entropy(logits, labels, conf, mu=0.5)
    ref = torch.nn.CrossEntropyLoss()(logits.float(), labels)
    assert torch.isfinite(got)
    torch.testing.assert_close(got.float(), ref, rtol=1e-3, atol=1e-3)
