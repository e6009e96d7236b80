"""SECSegmentor wiring (classic_wsss.md, SEC row: constrain loss = KL to the dense-CRF refinement,
CRF on CPU workers): the CRF targets are the same in worker processes and inline, the constrain
loss is the KL to them, and the model pickles without its pool."""
from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch

from tests.test_classic.pipeline_helpers import tiny_segmenter


def _model(workers):
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS

    import wsss_mmseg.models  # noqa: F401
    with DefaultScope.overwrite_default_scope('mmseg'):
        return MODELS.build(tiny_segmenter('SECSegmentor', crf_iters=3, crf_workers=workers))


def test_crf_targets_are_a_distribution_and_sharpen_towards_the_image():
    pytest.importorskip('pydensecrf')
    model = _model(0)
    # left half dark, right half bright; the prediction is undecided (0.5 / 0.5) everywhere but
    # a confident column on each side: the CRF spreads each side's label along the colour edge
    img = torch.zeros(1, 3, 16, 16)
    img[..., 8:] = 1.0
    probs = torch.full((1, 2, 16, 16), 0.5)
    probs[0, :, :, 1] = torch.tensor([0.99, 0.01])[:, None]
    probs[0, :, :, 14] = torch.tensor([0.01, 0.99])[:, None]
    norm = (img * 255 - model.data_preprocessor.mean) / model.data_preprocessor.std
    q = model._crf_targets(probs, norm)
    assert q.shape == probs.shape
    assert torch.allclose(q.sum(1), torch.ones(1, 16, 16), atol=1e-4)
    assert (q[0, 0, :, :8] > 0.5).all() and (q[0, 1, :, 8:] > 0.5).all()


@pytest.mark.slow
def test_crf_in_worker_processes_equals_inline():
    pytest.importorskip('pydensecrf')
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(2, 21, 8, 8), dim=1)
    inputs = torch.randn(2, 3, 64, 64)
    inline = _model(0)._crf_targets(probs, inputs)
    pooled_model = _model(1)
    try:
        pooled = pooled_model._crf_targets(probs, inputs)
        assert pooled_model._pool is not None
        clone = pickle.loads(pickle.dumps(pooled_model))
        assert clone._pool is None and copy.deepcopy(pooled_model)._pool is None
    finally:
        pooled_model.close_crf_pool()
    np.testing.assert_allclose(pooled.numpy(), inline.numpy(), atol=1e-6)
