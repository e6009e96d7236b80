"""Batched CLIP-ES groups images by label count: backward work = sum of K_i image passes.

Before the grouping, a batch took max K rounds over every image (3 labels in one image made
three backward passes through all the images), so batching was slower than one image at a
time on the CPU. The expected values come from the one-image path :meth:`CLIPESCAM.forward`.
"""
import numpy as np
import pytest
import torch

import wsss_mmseg.cam.clip_es as clip_es
from wsss_mmseg.cam.clip_es import CLIPESCAM


@pytest.fixture(scope='module')
def cam():
    from wsss_mmseg.clip.tiny import tiny_clip
    model = tiny_clip(seed=0, embed_dim=32, vision_width=64, vision_layers=3, image_size=64)
    g = torch.Generator().manual_seed(0)
    return CLIPESCAM(model.visual, torch.randn(6, 32, generator=g), torch.randn(3, 32, generator=g),
                     logit_scale=100.0, batched_grad=False)


LABELS = [[1], [2, 0, 5], [4], [3, 1]]


def test_backward_passes_are_per_label_not_per_batch_round(cam, monkeypatch):
    """Count the image rows each backward call differentiates: 1 + 3 + 1 + 2 = 7, not 4 x 3 = 12."""
    rows = []
    original = torch.autograd.grad

    def counting_grad(outputs, inputs, *args, **kwargs):
        leaf = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        rows.append(int(leaf.shape[0]))
        return original(outputs, inputs, *args, **kwargs)

    monkeypatch.setattr(clip_es.torch.autograd, 'grad', counting_grad)
    imgs = [np.random.RandomState(s).randint(0, 256, (48, 64, 3)).astype(np.uint8) for s in range(4)]
    xs = [cam.preprocess(im) for im in imgs]
    batch = cam.forward_batch(xs, LABELS, [im.shape[:2] for im in imgs])
    assert sum(rows) == sum(len(k) for k in LABELS) == 7
    monkeypatch.setattr(clip_es.torch.autograd, 'grad', original)
    for i, x in enumerate(xs):
        ref = cam.forward(x, LABELS[i], imgs[i].shape[:2])
        assert batch[i]['keys'].tolist() == LABELS[i]
        for key in ('cam', 'cam_refined'):
            np.testing.assert_allclose(batch[i][key], ref[key], rtol=0, atol=1e-5)


def test_generator_batch_size_default_is_device_dependent(tmp_path):
    """None: 1 image per pass on the CPU (batching measured slower there), 8 on CUDA; explicit values kept."""
    from wsss_mmseg.clip import save_openai_format, tiny_clip
    from wsss_mmseg.models.generators import CLIPESGenerator
    from wsss_mmseg.pseudo.options import PseudoConfigError
    path = save_openai_format(tiny_clip(seed=0, fp16_round=True), str(tmp_path / 'tiny.pt'))
    clip = dict(model_name=None, pretrained=path)
    assert CLIPESGenerator(clip=clip, device='cpu').batch_size == 1
    assert CLIPESGenerator(clip=clip, device='cpu', batch_size=8).batch_size == 8
    with pytest.raises((PseudoConfigError, ValueError), match='generator.batch_size'):
        CLIPESGenerator(clip=clip, device='cpu', batch_size=0)
    if torch.cuda.is_available():
        assert CLIPESGenerator(clip=clip, device='cuda').batch_size == 8
