"""Batched CLIP-ES (issue #12 item 2): padded/masked token buckets, label rounds, OOM split.

Expected values come from the one-image path :meth:`CLIPESCAM.forward` (the path the
official-code golden test pins), never from the batched code itself.
"""
import numpy as np
import pytest
import torch

from wsss_mmseg.cam.clip_es import CLIPESCAM
from wsss_mmseg.clip.vit import block_forward


@pytest.fixture(scope='module')
def tiny():
    from wsss_mmseg.clip.tiny import tiny_clip
    return tiny_clip(seed=0, embed_dim=32, vision_width=64, vision_layers=3, image_size=64)


@pytest.fixture(scope='module')
def texts():
    g = torch.Generator().manual_seed(0)
    return torch.randn(5, 32, generator=g), torch.randn(4, 32, generator=g)


SIZES = [(50, 70), (64, 64), (50, 70), (33, 90)]
LABELS = [[1, 3], [0], [2, 4, 1], [4]]


def _imgs():
    return [np.random.RandomState(s).randint(0, 256, (h, w, 3)).astype(np.uint8) for s, (h, w) in enumerate(SIZES)]


@pytest.mark.parametrize('batched_grad', [False, True])
def test_mixed_size_batch_equals_one_image_at_a_time(tiny, texts, batched_grad):
    cam = CLIPESCAM(tiny.visual, *texts, logit_scale=100.0, batched_grad=batched_grad)
    imgs = _imgs()
    xs = [cam.preprocess(im) for im in imgs]
    hws = [im.shape[:2] for im in imgs]
    batch = cam.forward_batch(xs, LABELS, hws)
    assert len(batch) == 4
    for i in range(4):
        ref = cam.forward(xs[i], LABELS[i], hws[i])
        assert batch[i]['keys'].tolist() == ref['keys'].tolist() == LABELS[i]
        for key in ('cam', 'cam_refined'):
            assert batch[i][key].shape == ref[key].shape == (len(LABELS[i]),) + hws[i]
            np.testing.assert_allclose(batch[i][key], ref[key], rtol=0, atol=1e-5)


def test_padding_is_masked_out_of_attention(tiny):
    """A token sequence padded with garbage gives the unpadded outputs on its valid tokens."""
    block = tiny.visual.transformer.resblocks[0]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 7, 64, generator=g)
    padded = torch.cat([x, 50 * torch.randn(1, 4, 64, generator=g)], dim=1)
    mask = torch.tensor([[False] * 7 + [True] * 4])
    with torch.no_grad():
        ref, ref_ex = block_forward(block, x, need_attn=True)
        out, ex = block_forward(block, padded, need_attn=True, key_padding_mask=mask)
        out_sdpa, _ = block_forward(block, padded, key_padding_mask=mask)
    torch.testing.assert_close(out[:, :7], ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(out_sdpa[:, :7], ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(ex['attn'][:, :7, :7], ref_ex['attn'], rtol=0, atol=1e-6)
    assert float(ex['attn'][:, :7, 7:].abs().max()) == 0.0  # no weight on padding


@pytest.fixture(scope='module')
def generator(tmp_path_factory):
    from mmseg.registry import MODELS

    import wsss_mmseg.models  # noqa: F401
    from wsss_mmseg.clip.tiny import save_openai_format, tiny_clip
    path = save_openai_format(tiny_clip(seed=1, embed_dim=32, vision_width=64, vision_layers=2, image_size=64),
                              tmp_path_factory.mktemp('batch') / 'tiny.pt')
    return MODELS.build(dict(type='CLIPESGenerator', clip=dict(model_name=None, pretrained=path),
                             class_table='voc20', device='cpu', batch_size=3, max_tokens_per_batch=100))


def test_buckets_respect_batch_size_token_budget_and_padding(generator):
    imgs = [np.zeros((h, w, 3), np.uint8) for h, w in [(64, 64), (48, 64), (64, 64), (16, 16), (64, 48), (32, 32)]]
    items = [generator.prepare(im, [0]) for im in imgs]
    tokens = [1 + (h // 16) * (w // 16) for h, w in [(64, 64), (48, 64), (64, 64), (16, 16), (64, 48), (32, 32)]]
    assert tokens == [17, 13, 17, 2, 13, 5]
    groups = generator.buckets(items)
    assert sorted(i for g in groups for i in g) == list(range(6))
    for g in groups:
        t = [tokens[i] for i in g]
        assert len(g) <= 3 and len(g) * max(t) <= 100 and max(t) <= 1.25 * min(t)
    assert [sorted(g) for g in groups] == [[0, 2], [1, 4], [5], [3]]


def test_simulated_cuda_oom_splits_the_batch_and_completes(generator, monkeypatch):
    imgs = [np.random.RandomState(i).randint(0, 256, (48, 64, 3)).astype(np.uint8) for i in range(3)]
    items = [generator.prepare(im, [i, 7]) for i, im in enumerate(imgs)]
    expected = [generator.generate([it])[0] for it in items]
    real = generator.cam.forward_batch
    sizes = []

    def flaky(xs, labels, hws):
        sizes.append(len(xs))
        if len(xs) > 1:
            raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB (simulated)')
        return real(xs, labels, hws)

    monkeypatch.setattr(generator.cam, 'forward_batch', flaky)
    out = generator.generate(items)
    assert sizes == [3, 1, 2, 1, 1]  # split in halves until it fits
    for got, ref in zip(out, expected):
        np.testing.assert_array_equal(got['cam'], ref['cam'])
    # a single image that still does not fit is an error (the job records it for that image)
    monkeypatch.setattr(generator.cam, 'forward_batch',
                        lambda *a: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError('out of memory')))
    with pytest.raises(torch.cuda.OutOfMemoryError):
        generator.generate(items[:1])


def test_large_image_maps_at_the_working_size(generator):
    img = np.random.RandomState(0).randint(0, 256, (30, 2100, 3)).astype(np.uint8)
    item = generator.prepare(img, [3])
    assert item['image_hw'] == (30, 2100) and item['work_hw'] == (15, 1024)
    assert item['image'].shape == (15, 1024, 3)
    assert tuple(item['net_input'].shape[-2:]) == (16, 1024)
    res = generator.generate([item])[0]
    assert res['cam'].shape == (1, 15, 1024)


def test_autocast_bf16_agrees_with_fp32(generator):
    """Mixed precision changes the maps a little; the argmax labels mostly agree (measured, not pinned)."""
    from mmseg.registry import MODELS
    img = np.random.RandomState(5).randint(0, 256, (64, 80, 3)).astype(np.uint8)
    item = generator.prepare(img, [2, 11])
    ref = generator.generate([item])[0]
    generator.autocast = 'bf16'
    try:
        low = generator.generate([item])[0]
    finally:
        generator.autocast = None
    assert np.abs(low['cam'] - ref['cam']).max() < 0.25
    with pytest.raises(ValueError, match='generator.autocast'):
        MODELS.build(dict(type='CLIPESGenerator', autocast='fp8'))


@pytest.mark.parametrize('bad, match', [
    (dict(box_threshold='abc'), 'generator.box_threshold must be a number'),
    (dict(box_threshold=1.5), r'generator.box_threshold must be in \[0.0, 1.0\)'),
    (dict(max_side=-1), 'generator.max_side must be >= 16'),
    (dict(batch_size=0), 'generator.batch_size must be >= 1'),
])
def test_bad_generator_options_name_the_option(bad, match):
    from mmseg.registry import MODELS

    import wsss_mmseg.models  # noqa: F401
    with pytest.raises(ValueError, match=match):
        MODELS.build(dict(type='CLIPESGenerator', **bad))
