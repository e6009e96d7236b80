"""Building from a checkpoint skips the random init (issue #12 item 4) without changing the model."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from wsss_mmseg.clip import build_clip, infer_openai_config, save_openai_format, tiny_clip
from wsss_mmseg.clip.checkpoint import load_checkpoint_file
from wsss_mmseg.clip.factory import build_openai_architecture, load_state_dict_strict
from wsss_mmseg.clip.skip_init import skip_random_fills


@pytest.mark.parametrize('fill', ['uniform_', 'normal_', 'xavier_uniform_', 'xavier_normal_', 'kaiming_uniform_',
                                  'kaiming_normal_'])
def test_random_fills_are_skipped_and_other_ops_run(fill) -> None:
    t = torch.full((2, 2), 7.0)
    with skip_random_fills() as stats:
        getattr(nn.init, fill)(t)
        t.uniform_(-1.0, 1.0)  # the tensor method modules call directly
        t.normal_()
        kept = t.clone()
        t.add_(1.0)  # not a random fill: runs
    assert stats['skipped'] == 3
    assert torch.equal(kept, torch.full((2, 2), 7.0))
    assert torch.equal(t, torch.full((2, 2), 8.0))
    t.uniform_(5.0, 6.0)  # after the block: a real fill again
    assert bool(((t >= 5.0) & (t <= 6.0)).all())


@pytest.mark.parametrize('arch', ['vit', 'rn'])
def test_checkpoint_build_equals_initialised_build(tmp_path, arch) -> None:
    """Skipped init + strict load == seeded init + strict load, every tensor incl. non-persistent buffers."""
    source = tiny_clip(arch=arch, seed=3, fp16_round=True, **({'vision_width': 16} if arch == 'rn' else {}))
    path = save_openai_format(source, tmp_path / f'{arch}.pt')
    state = load_checkpoint_file(path).state_dict
    reference = build_openai_architecture(infer_openai_config(state, path=path))  # seeded random init
    load_state_dict_strict(reference, state, path=path, model_desc='reference')
    reference.eval().requires_grad_(False)  # as build_clip returns it (eval selects MHA's fused path)

    built = build_clip(None, path)
    ref_tensors = dict(reference.named_parameters()) | dict(reference.named_buffers())
    got_tensors = dict(built.named_parameters()) | dict(built.named_buffers())
    assert sorted(ref_tensors) == sorted(got_tensors)
    for key, value in ref_tensors.items():
        assert got_tensors[key].dtype == value.dtype, key
        assert torch.equal(got_tensors[key], value), key
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(built.encode_image(images), reference.encode_image(images))


def test_skip_init_leaves_uninitialised_memory_only_for_loaded_models(tmp_path) -> None:
    """A checkpoint that misses a key is refused, so an unfilled parameter never escapes."""
    source = tiny_clip(seed=1, fp16_round=True)
    path = save_openai_format(source, tmp_path / 'tiny.pt')
    state = dict(load_checkpoint_file(path).state_dict)
    state.pop('visual.ln_post.weight')
    torch.save(state, tmp_path / 'missing.pt')
    with pytest.raises(Exception, match='visual.ln_post.weight'):
        build_clip(None, tmp_path / 'missing.pt')


def test_random_weights_path_keeps_the_seeded_init() -> None:
    """pretrained=None still runs the (seeded) random init: two builds agree and are not all zeros."""
    cfg = infer_openai_config(tiny_clip(seed=0).state_dict(), path='tiny')
    a = build_openai_architecture(cfg)
    b = build_openai_architecture(cfg)
    for (ka, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), ka
    assert float(a.visual.transformer.resblocks[0].mlp.c_fc.weight.abs().sum()) > 0
