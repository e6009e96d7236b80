"""PACLHead losses re-derived in float64 numpy from spec maskclip_pacl.md §3.2 (phi-hat, InfoNCE)
and §3.8 a/d (multi-label sigmoid, negative suppression), on the head's patch embeddings."""
import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from mmseg.structures import SegDataSample

import wsss_mmseg  # noqa: F401
import wsss_mmseg.models.pacl  # noqa: F401
from wsss_mmseg.models.pacl import PACLHead


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _phi_np(patches, texts):
    """phi(x, y) = cos(sum_i softmax_i(cos(p_i, t)) p_i, t) for every image x and text y (§3.2)."""
    out = np.zeros((patches.shape[0], texts.shape[0]))
    sims = np.zeros((patches.shape[0], texts.shape[0], patches.shape[1]))
    for b in range(patches.shape[0]):
        for j in range(texts.shape[0]):
            s = _unit(patches[b]) @ _unit(texts[j])
            a = np.exp(s - s.max())
            a /= a.sum()
            v = (a[:, None] * patches[b]).sum(0)
            out[b, j] = _unit(v) @ _unit(texts[j])
            sims[b, j] = s
    return out, sims


def _samples(labels=None, captions=None):
    out = []
    for i in range(len(labels if labels is not None else captions)):
        d = SegDataSample()
        meta = dict(img_shape=(64, 64), pad_shape=(64, 64), ori_shape=(64, 64))
        if labels is not None:
            meta['img_labels'] = labels[i]
        if captions is not None:
            meta['caption'] = captions[i]
        d.set_metainfo(meta)
        out.append(d)
    return out


@pytest.fixture(scope='module')
def head(tiny_clip_path):
    init_default_scope('mmseg')
    return PACLHead(clip=dict(model_name=None, pretrained=tiny_clip_path), class_table='voc20', templates='single',
                    background=['sky', 'grass'], init='random',
                    loss_decode=[dict(type='PACLMultiLabelLoss', init_scale=10.0, init_bias=-10.0),
                                 dict(type='PACLNegativeSuppressionLoss', top_k=2, loss_weight=0.1)])


def test_label_and_suppression_losses_equal_the_numpy_formulas(head):
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, 64, 2, 3, generator=g)
    labels = [np.eye(20, dtype=np.float32)[4] + np.eye(20, dtype=np.float32)[9], np.zeros(20, np.float32)]
    losses = head.loss([tokens], _samples(labels=labels))
    emb, _ = head.embed_patches([tokens])
    p = emb.detach().double().numpy()
    fg = head.class_embeddings.double().numpy()
    bg = head.background_embeddings.double().numpy()
    phi, sims = _phi_np(p, fg)
    phi_bg, _ = _phi_np(p, bg)
    y = np.stack(labels).astype(np.float64)

    def bce(z, t):  # -[t log sigma(z) + (1 - t) log(1 - sigma(z))]
        return np.logaddexp(0, z) - t * z

    label = (bce(10 * phi - 10, y).sum(1) + bce(10 * phi_bg - 10, 0).sum(1)).mean()
    assert float(losses['loss_pacl_label']) == pytest.approx(label, rel=1e-5)
    top2 = np.sort(sims, axis=-1)[..., -2:].mean(-1)          # (B, C): mean of the 2 best patch cosines
    neg = (y <= 0)
    assert float(losses['loss_pacl_neg']) == pytest.approx(0.1 * (top2 * neg).sum() / neg.sum(), rel=1e-5)


def test_caption_info_nce_equals_the_numpy_formula(tiny_clip_path):
    init_default_scope('mmseg')
    head = PACLHead(clip=dict(model_name=None, pretrained=tiny_clip_path), class_table='voc20', templates='single',
                    background=['sky'], loss_decode=dict(type='PACLInfoNCELoss', init_logit_scale=20.0))
    tokens = torch.randn(3, 64, 2, 2, generator=torch.Generator().manual_seed(1))
    caps = ['a dog on grass', 'a red car', 'two people on a sofa']
    losses = head.loss([tokens], _samples(captions=caps))
    emb, _ = head.embed_patches([tokens])
    texts = head._caption_embeddings(_samples(captions=caps), emb.device).double().numpy()
    phi, _ = _phi_np(emb.detach().double().numpy(), texts)
    z = 20.0 * phi

    def ce_diag(m):  # mean_i -log softmax(m_i)_i
        return np.mean([np.logaddexp.reduce(m[i]) - m[i, i] for i in range(m.shape[0])])

    assert float(losses['loss_pacl_nce']) == pytest.approx(0.5 * (ce_diag(z) + ce_diag(z.T)), rel=1e-5)
