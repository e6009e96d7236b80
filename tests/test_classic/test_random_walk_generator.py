"""RandomWalkGenerator refines ANY generator's maps, here CLIP-ES's with a tiny random CLIP
(classic_wsss.md SEAM row: AffinityNet RW as a post-processor; issue: "refine any generator's
CAMs, classic or CLIP")."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_classic.test_affinity_end_to_end import tiny_affinity_net


@pytest.fixture(scope='module')
def parts(tmp_path_factory):
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS

    import wsss_mmseg.models  # noqa: F401
    from wsss_mmseg.clip.tiny import save_openai_format, tiny_clip
    tmp = tmp_path_factory.mktemp('rw_gen')
    clip_path = save_openai_format(tiny_clip(seed=1, embed_dim=32, vision_width=64,
                                             vision_layers=2, image_size=64, fp16_round=True),
                                   tmp / 'tiny.pt')
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmseg'):
        net = MODELS.build(tiny_affinity_net())
    ckpt = tmp / 'aff.pth'
    torch.save(dict(state_dict=net.state_dict()), ckpt)
    base = dict(type='CLIPESGenerator', clip=dict(model_name=None, pretrained=str(clip_path)),
                class_table='voc20', caa=True, device='cpu')
    return base, str(ckpt)


def test_random_walk_on_clip_es_maps(parts):
    from mmseg.registry import MODELS
    base, ckpt = parts
    gen = MODELS.build(dict(type='RandomWalkGenerator', base=base,
                            affinity_net=dict(model=tiny_affinity_net(), checkpoint=ckpt),
                            random_walk=dict(type='RandomWalk', beta=10, steps=8, radius=3),
                            device='cpu'))
    assert gen.class_names == gen.base.class_names and len(gen.class_names) == 20
    img = np.random.RandomState(0).randint(0, 256, (45, 60, 3)).astype(np.uint8)
    out = gen.generate_image(img, [14, 11])
    ref = (getattr(gen.base, 'generate_image', None) or gen.base.generate)(img, [14, 11])
    np.testing.assert_array_equal(out['cam'], ref['cam'])  # the base's own maps are kept
    assert out['cam_refined'].shape == (2, 45, 60) and out['cam_refined'].dtype == np.float32
    assert 0 <= out['cam_refined'].min() and out['cam_refined'].max() <= 1
    # cam_refined = the random walk of the base's refined (CAA) maps on the embedding grid
    emb = gen.embedding(img)
    expected = gen.random_walk(torch.as_tensor(ref['cam_refined']), embedding=emb,
                               out_hw=(45, 60))
    np.testing.assert_allclose(out['cam_refined'], expected, atol=1e-6)


def test_radius_mismatch_and_bad_options(parts):
    from mmseg.registry import MODELS
    base, ckpt = parts
    with pytest.raises(ValueError, match='radius'):
        MODELS.build(dict(type='RandomWalkGenerator', base=base,
                          affinity_net=dict(model=tiny_affinity_net(), checkpoint=ckpt),
                          random_walk=dict(type='RandomWalk', radius=5), device='cpu'))
    with pytest.raises(KeyError, match='checkpoint'):
        MODELS.build(dict(type='RandomWalkGenerator', base=base,
                          affinity_net=dict(model=tiny_affinity_net()), device='cpu'))
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        MODELS.build(dict(type='RandomWalkGenerator', base=base,
                          affinity_net=dict(model=tiny_affinity_net(), checkpoint='nope.pth'),
                          device='cpu'))
