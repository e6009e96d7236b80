"""build_clip / get_tokenizer: formats, geometry inference, errors, cache, offline tags."""
from __future__ import annotations

import importlib.util
import os
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU

from wsss_mmseg.clip import (CheckpointError, CheckpointMismatchError, PretrainedDownloadError, build_clip,
                             clear_clip_cache, get_tokenizer, infer_openai_config, save_openai_format, tiny_clip)


def _assert_same_weights(reference: torch.nn.Module, loaded: torch.nn.Module) -> None:
    ref, got = reference.state_dict(), loaded.state_dict()
    assert sorted(ref) == sorted(got)
    for key, value in ref.items():
        assert got[key].dtype == value.dtype, key
        assert torch.equal(got[key], value), key


def _images(n: int = 2, size: int = 64) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------------- round trips

def test_openai_state_dict_round_trip_is_exact(tiny_vit, tiny_vit_file) -> None:
    raw = torch.load(tiny_vit_file, weights_only=True)
    assert raw['visual.conv1.weight'].dtype == torch.float16
    assert raw['visual.ln_pre.weight'].dtype == torch.float32
    assert raw['input_resolution'].item() == 64
    model = build_clip(None, tiny_vit_file)
    _assert_same_weights(tiny_vit, model)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert any(isinstance(m, QuickGELU) for m in model.modules())


def test_torchscript_round_trip_is_exact(tmp_path, tiny_vit) -> None:
    path = save_openai_format(tiny_vit, tmp_path / 'tiny_ts.pt', torchscript=True)
    _assert_same_weights(tiny_vit, build_clip(None, path))


def test_fp32_openai_file_keeps_full_precision(tmp_path) -> None:
    model = tiny_clip(seed=3)  # not fp16-rounded
    path = save_openai_format(model, tmp_path / 'fp32.pt', fp16=False)
    _assert_same_weights(model, build_clip(None, path))


def test_matches_open_clip_load_openai_model(tmp_path) -> None:
    # open_clip derives width // 64 heads without a floor: its loader needs widths >= 64.
    model = tiny_clip(text_width=64, fp16_round=True)
    path = save_openai_format(model, tmp_path / 'w64.pt')
    ours = build_clip(None, path)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # open_clip tries torch.jit.load first (deprecated)
        ref = open_clip.load_openai_model(str(path), device='cpu')
    _assert_same_weights(ref, ours)
    assert [type(m).__name__ for m in ours.modules()] == [type(m).__name__ for m in ref.modules()]
    images = _images()
    with torch.no_grad():
        assert torch.allclose(ours.encode_image(images), ref.encode_image(images), atol=1e-5)


def test_infer_openai_config_any_geometry(tmp_path) -> None:
    model = tiny_clip(vision_width=128, vision_layers=3, patch_size=8, image_size=48, text_width=64,
                      text_layers=2, embed_dim=16, context_length=20, vocab_size=300)
    cfg = infer_openai_config(model.state_dict())
    assert cfg['embed_dim'] == 16
    assert cfg['vision_cfg'] == dict(layers=3, width=128, head_width=64, patch_size=8, image_size=48, mlp_ratio=4.0)
    assert cfg['text_cfg'] == dict(context_length=20, vocab_size=300, width=64, heads=1, layers=2, mlp_ratio=4.0)
    path = save_openai_format(model, tmp_path / 'geo.pt', fp16=False)
    loaded = build_clip(None, path)
    assert loaded.visual.transformer.resblocks[0].attn.num_heads == 2
    _assert_same_weights(model, loaded)


def test_resnet_round_trip(tmp_path) -> None:
    model = tiny_clip(arch='rn', vision_width=8, vision_layers=1, image_size=64, fp16_round=True)
    path = save_openai_format(model, tmp_path / 'rn.pt')
    loaded = build_clip(None, path)
    _assert_same_weights(model, loaded)
    images = _images()
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(images), model.encode_image(images))


# ------------------------------------------------------------------------------- bad inputs

def test_geometry_mismatch_names_file_and_fields(tiny_vit_file) -> None:
    with pytest.raises(CheckpointMismatchError) as info:
        build_clip('ViT-B-16', tiny_vit_file)
    msg = str(info.value)
    assert str(tiny_vit_file) in msg and "'ViT-B-16'" in msg
    assert 'vision_cfg.width: file 64 vs config 768' in msg
    assert 'vision_cfg.layers: file 2 vs config 12' in msg
    assert 'model_name=None' in msg


def test_resnet_weights_for_a_vit_name(tmp_path) -> None:
    rn = tiny_clip(arch='rn', vision_width=8, vision_layers=1, image_size=64)
    path = save_openai_format(rn, tmp_path / 'rn.pt')
    with pytest.raises(CheckpointMismatchError, match=r'vision_cfg\.layers: file \(1, 1, 1, 1\) vs config 12'):
        build_clip('ViT-B-16', path)


def test_unknown_model_name_lists_close_matches(tiny_vit_file) -> None:
    with pytest.raises(ValueError, match=r"unknown CLIP model name 'ViT-B-61'.*'ViT-B-16'"):
        build_clip('ViT-B-61', tiny_vit_file)
    with pytest.raises(ValueError, match='unknown CLIP model name'):
        get_tokenizer('not-a-clip')


def test_openai_spelling_is_accepted(tiny_model_name) -> None:
    assert open_clip.list_models().count(tiny_model_name) == 1
    from wsss_mmseg.clip import resolve_model_name
    assert resolve_model_name('ViT-B/16') == 'ViT-B-16'
    assert resolve_model_name('vit-b-16') == 'ViT-B-16'


def test_missing_checkpoint_path(tmp_path) -> None:
    missing = tmp_path / 'nowhere' / 'ViT-B-16.pt'
    with pytest.raises(FileNotFoundError, match='nowhere/ViT-B-16.pt'):
        build_clip('ViT-B-16', missing)
    with pytest.raises(FileNotFoundError, match='is not a file'):
        build_clip('ViT-B-16', tmp_path)


def test_unknown_tag_and_missing_name() -> None:
    with pytest.raises(ValueError, match="not-a-tag.*known tags: .*'openai'"):
        build_clip('ViT-B-16', 'not-a-tag')
    with pytest.raises(ValueError, match='needs a model_name'):
        build_clip(None, 'openai')
    with pytest.raises(ValueError, match='needs a model_name'):
        build_clip(None, None)


def test_bad_precision(tiny_vit_file) -> None:
    with pytest.raises(ValueError, match='precision'):
        build_clip(None, tiny_vit_file, precision='fp8')


def test_not_a_clip_state_dict(tmp_path) -> None:
    torch.save({'backbone.conv.weight': torch.ones(2, 3, 1, 1)}, tmp_path / 'other.pt')
    with pytest.raises(CheckpointError, match="other.pt' is not an OpenAI-layout CLIP"):
        build_clip(None, tmp_path / 'other.pt')


def test_malicious_pickle_is_refused_by_build_clip(tmp_path) -> None:
    marker = tmp_path / 'marker'

    class Evil:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    torch.save({'state_dict': {}, 'x': Evil()}, tmp_path / 'evil.pt')
    with pytest.raises(CheckpointError, match='allow_unsafe_pickle'):
        build_clip(None, tmp_path / 'evil.pt')
    assert not marker.exists()


# ------------------------------------------------------------------------------- open_clip format

def test_open_clip_checkpoint(tmp_path, tiny_model_name) -> None:
    source = tiny_clip(text_width=64, seed=5)  # fp32, not rounded
    weights = {f'module.{k}': v for k, v in source.state_dict().items()}
    torch.save({'epoch': 1, 'state_dict': weights}, tmp_path / 'epoch_1.pt')
    model = build_clip(tiny_model_name, tmp_path / 'epoch_1.pt')
    _assert_same_weights(source, model)
    # loaded into open_clip's own config (nn.GELU here), not the OpenAI rebuild
    assert not any(isinstance(m, QuickGELU) for m in model.modules())


def test_open_clip_checkpoint_key_errors(tmp_path, tiny_model_name) -> None:
    state = OrderedDict(tiny_clip(text_width=64).state_dict())
    del state['visual.ln_post.weight']
    state['visual.extra.weight'] = torch.ones(1)
    state['visual.proj'] = torch.ones(3, 3)
    torch.save(state, tmp_path / 'broken.pt')
    with pytest.raises(CheckpointMismatchError) as info:
        build_clip(tiny_model_name, tmp_path / 'broken.pt')
    msg = str(info.value)
    assert 'broken.pt' in msg and tiny_model_name in msg
    assert '1 missing keys: visual.ln_post.weight' in msg
    assert '1 unexpected keys: visual.extra.weight' in msg
    assert 'visual.proj (file (3, 3) vs model (64, 32))' in msg


def test_openai_file_with_matching_name(tiny_model_name, tmp_path) -> None:
    model = tiny_clip(text_width=64, fp16_round=True)
    path = save_openai_format(model, tmp_path / 'w.pt')
    loaded = build_clip(tiny_model_name, path)
    _assert_same_weights(model, loaded)
    assert any(isinstance(m, QuickGELU) for m in loaded.modules())  # OpenAI weights => QuickGELU


def test_safetensors_checkpoint(tmp_path, tiny_model_name) -> None:
    st = pytest.importorskip('safetensors.torch')
    source = tiny_clip(text_width=64, seed=2)
    st.save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / 'w.safetensors'))
    _assert_same_weights(source, build_clip(tiny_model_name, tmp_path / 'w.safetensors'))


# ------------------------------------------------------------------------------- tags (offline)

def test_tag_download_failure_says_to_pass_a_path(monkeypatch) -> None:
    calls = []

    def unreachable(cfg, *args, **kwargs):
        calls.append(cfg)
        raise OSError('Network is unreachable')

    monkeypatch.setattr(open_clip.pretrained, 'download_pretrained', unreachable)
    # the hub answers the connection probe, the download itself fails
    monkeypatch.setattr('wsss_mmseg.clip.download.hub_offline_reason', lambda cfg: None)
    with pytest.raises(PretrainedDownloadError) as info:
        build_clip('ViT-B-16', 'openai')
    msg = str(info.value)
    assert 'Network is unreachable' in msg and "pretrained='/path/ViT-B-16.pt'" in msg
    assert 'generator.clip.pretrained=/path/ViT-B-16.pt' in msg  # the default names config keys too
    assert info.value.__cause__ is None and info.value.__suppress_context__  # one error, no chain
    assert len(calls) == 1 and 'ViT-B-16.pt' in calls[0]['url']


def test_tag_uses_downloaded_file(monkeypatch, tmp_path, tiny_model_name) -> None:
    model = tiny_clip(text_width=64, fp16_round=True)
    path = save_openai_format(model, tmp_path / 'hub' / 'w.pt')
    tag_cfg = {'url': 'https://example.invalid/w.pt', 'quick_gelu': True}
    monkeypatch.setattr(open_clip, 'get_pretrained_cfg',
                        lambda name, tag: tag_cfg if (name, tag) == (tiny_model_name, 'mytag') else {})
    monkeypatch.setattr(open_clip.pretrained, 'download_pretrained', lambda cfg, cache_dir=None: path)
    monkeypatch.setattr('wsss_mmseg.clip.download.hub_offline_reason', lambda cfg: None)
    _assert_same_weights(model, build_clip(tiny_model_name, 'mytag'))


# ------------------------------------------------------------------------------- cache, random init

def test_cache_shares_instances(tmp_path, tiny_vit) -> None:
    path = Path(save_openai_format(tiny_vit, tmp_path / 'w.pt'))
    first = build_clip(None, path)
    assert build_clip(None, str(path)) is first
    assert build_clip(None, path, precision='bf16') is not first
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # file changed
    second = build_clip(None, path)
    assert second is not first
    assert clear_clip_cache() == 3
    assert build_clip(None, path) is not second


def test_random_init_is_deterministic_and_leaves_global_rng(tiny_model_name) -> None:
    rng = torch.get_rng_state()
    first = build_clip(tiny_model_name, None)
    clear_clip_cache()
    second = build_clip(tiny_model_name, None)
    assert first is not second
    _assert_same_weights(first, second)
    assert torch.equal(torch.get_rng_state(), rng)
    assert not any(p.requires_grad for p in second.parameters())


def test_precision_modes(tiny_vit_file) -> None:
    half = build_clip(None, tiny_vit_file, precision='fp16')
    assert half.visual.conv1.weight.dtype == torch.float16
    assert half.visual.ln_pre.weight.dtype == torch.float32
    pure = build_clip(None, tiny_vit_file, precision='pure_bf16')
    assert pure.visual.ln_pre.weight.dtype == torch.bfloat16


# ------------------------------------------------------------------------------- tokenizer

def test_tokenizer_offline() -> None:
    tok = get_tokenizer('ViT-B-16')
    ids = tok(['a photo of a cat.'])
    assert ids.shape == (1, 77)
    assert ids[0, :8].tolist() == [49406, 320, 1125, 539, 320, 2368, 269, 49407]
    assert int(ids[0, 8:].abs().sum()) == 0
    assert torch.equal(get_tokenizer(None)(['a photo of a cat.']), ids)
    assert get_tokenizer('ViT-B-16', context_length=16)(['a cat']).shape == (1, 16)
    assert get_tokenizer('ViT-B-16') is tok


# ------------------------------------------------------------------------------- shared golden weights

def test_loads_golden_make_weights(tmp_path, shared_data) -> None:
    script = shared_data / 'clip_es_golden' / 'make_weights.py'
    if not script.is_file():
        pytest.skip(f'{script} absent')
    spec = importlib.util.spec_from_file_location('clip_es_make_weights', script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    state = module.make_numpy_state('tiny', 0)
    path = tmp_path / 'clip_random_tiny_seed0.pt'
    torch.save(OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in state.items()), path)
    model = build_clip(None, path)
    assert len(model.visual.transformer.resblocks) == 10
    assert model.visual.transformer.resblocks[0].attn.num_heads == 2
    assert model.visual.conv1.out_channels == 128 and model.text_projection.shape == (128, 256)
    assert model.transformer.resblocks[0].attn.num_heads == 2 and len(model.transformer.resblocks) == 2
    loaded = model.state_dict()
    for key, value in state.items():
        if key not in ('input_resolution', 'context_length', 'vocab_size'):
            assert torch.equal(loaded[key], torch.from_numpy(np.array(value)).float()), key
    with pytest.raises(CheckpointMismatchError, match='vision_cfg.layers: file 10 vs config 12'):
        build_clip('ViT-B-16', path)


@pytest.mark.parametrize('arch, key', [('vit', 'visual.positional_embedding'),
                                       ('rn', 'visual.attnpool.positional_embedding')])
def test_positional_embedding_not_a_square_grid(arch, key) -> None:
    model = tiny_clip(arch='rn', vision_width=8, vision_layers=1, image_size=64) if arch == 'rn' else tiny_clip()
    state = dict(model.state_dict())
    state[key] = state[key][:-1]  # 1 + g*g - 1 rows: no square grid
    with pytest.raises(CheckpointError, match=rf"'w\.pt': {key} has \d+ rows, not 1 \+ a square grid"):
        infer_openai_config(state, path='w.pt')
