"""Contrastive label-PACL (spec maskclip_pacl.md §3.8 b) by hand, and through PACLHead."""
import math

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from mmseg.structures import SegDataSample

import wsss_mmseg  # noqa: F401
from wsss_mmseg.models.pacl import PACLHead
from wsss_mmseg.pacl.compat_fn import compatibility
from wsss_mmseg.pacl.losses import multi_positive_contrastive_loss


def _logsoftmax(v):
    v = np.asarray(v, dtype=np.float64)
    return v - np.logaddexp.reduce(v)


def _reference(phi, y, scale, phi_bg=None):
    z = scale * np.asarray(phi, dtype=np.float64)
    rows = z if phi_bg is None else np.concatenate([z, scale * np.asarray(phi_bg)], axis=1)
    i2c = [-np.mean([_logsoftmax(rows[b])[c] for c in range(z.shape[1]) if y[b][c]])
           for b in range(z.shape[0]) if any(y[b])]
    c2i = [-np.mean([_logsoftmax(z[:, c])[b] for b in range(z.shape[0]) if y[b][c]])
           for c in range(z.shape[1]) if any(y[b][c] for b in range(z.shape[0]))]
    return 0.5 * (np.mean(i2c) + np.mean(c2i))


def test_by_hand_2_images_3_classes():
    phi = [[0.5, 0.2, -0.1], [0.1, 0.4, 0.3]]
    y = [[1, 1, 0], [0, 1, 0]]
    # written out: image 0 has classes 0, 1; image 1 class 1; class 2 is in no image (no c->i term)
    z = 2.0 * np.array(phi)
    i2c = 0.5 * (-(_logsoftmax(z[0])[0] + _logsoftmax(z[0])[1]) / 2 - _logsoftmax(z[1])[1])
    c2i = 0.5 * (-_logsoftmax(z[:, 0])[0] - (_logsoftmax(z[:, 1])[0] + _logsoftmax(z[:, 1])[1]) / 2)
    expected = 0.5 * (i2c + c2i)
    got = multi_positive_contrastive_loss(torch.tensor(phi), torch.tensor(y, dtype=torch.float32), scale=2.0)
    assert float(got) == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(_reference(phi, y, 2.0), abs=1e-12)
    bg = [[0.3], [0.0]]
    got_bg = multi_positive_contrastive_loss(torch.tensor(phi), torch.tensor(y, dtype=torch.float32), scale=2.0,
                                             phi_background=torch.tensor(bg))
    assert float(got_bg) == pytest.approx(_reference(phi, y, 2.0, bg), abs=1e-6)
    empty = multi_positive_contrastive_loss(torch.tensor(phi), torch.zeros(2, 3), scale=2.0)
    assert float(empty) == 0.0


def test_through_the_head(tiny_clip_path):
    init_default_scope('mmseg')
    head = PACLHead(clip=dict(model_name=None, pretrained=tiny_clip_path), class_table='voc20', templates='single',
                    background=['sky'], loss_decode=dict(type='PACLContrastiveLabelLoss', init_logit_scale=10.0))
    tokens = torch.randn(2, 64, 2, 2, generator=torch.Generator().manual_seed(0))
    labels = [np.eye(20, dtype=np.float32)[2], np.eye(20, dtype=np.float32)[2] + np.eye(20, dtype=np.float32)[5]]
    samples = []
    for lab in labels:
        d = SegDataSample()
        d.set_metainfo(dict(img_shape=(32, 32), img_labels=lab))
        samples.append(d)
    loss = head.loss([tokens], samples)['loss_pacl_contrast']
    emb, _ = head.embed_patches([tokens])
    phi = compatibility(emb, head.class_embeddings).detach().numpy()
    phi_bg = compatibility(emb, head.background_embeddings).detach().numpy()
    assert float(loss) == pytest.approx(_reference(phi, np.stack(labels), 10.0, phi_bg), rel=1e-5)
    loss.backward()
    assert head.loss_decode.params.log_scale.grad is not None
    assert math.isclose(float(head.loss_decode.scale), 10.0, rel_tol=1e-6)
