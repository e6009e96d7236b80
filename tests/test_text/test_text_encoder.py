"""Tests of text encoding, the embedding cache and the convenience layer (tiny random CLIP)."""
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

open_clip = pytest.importorskip('open_clip')

from wsss_mmseg.text import (TextEmbeddingCache, build_prompts, class_embeddings,  # noqa: E402
                             encode_class_texts, max_over_synonyms, synonym_row_embeddings,
                             weights_fingerprint)
from wsss_mmseg.text import encoder as encoder_mod  # noqa: E402


def _tiny_clip(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(
        embed_dim=32,
        vision_cfg=open_clip.model.CLIPVisionCfg(layers=1, width=64, patch_size=16, image_size=64,
                                                 head_width=32),
        text_cfg=open_clip.model.CLIPTextCfg(context_length=77, vocab_size=49408, width=32,
                                             heads=2, layers=1),
        quick_gelu=True)
    return model.eval()


class CountingModel(nn.Module):
    """Wraps a CLIP and counts encode_text calls."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.clip = clip
        self.calls = 0

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.clip.encode_text(tokens)


@pytest.fixture(scope='module')
def tokenizer():
    return open_clip.get_tokenizer('ViT-B-16')


@pytest.fixture(scope='module')
def clip_model():
    return _tiny_clip()


def test_tokenizer_works_offline():
    """ViT-B-16 tokenizer = bundled BPE; sockets are disabled in the child process."""
    code = (
        'import socket\n'
        'def _deny(*a, **k):\n'
        '    raise OSError("network disabled in test")\n'
        'socket.socket.connect = _deny\n'
        'socket.create_connection = _deny\n'
        'import open_clip\n'
        'tok = open_clip.get_tokenizer("ViT-B-16")\n'
        't = tok(["a clean origami person with clothes,people,human."])\n'
        'print(type(tok).__name__, tuple(t.shape), t[0, :13].tolist(),'
        ' int(t[0, 13:].abs().sum()))\n')
    env = dict(os.environ, HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1')
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    # ids in the bundled OpenAI BPE vocabulary:
    # <sot> a clean origami person with clothes , people , human . <eot>
    assert res.stdout.split('\n')[0] == (
        'SimpleTokenizer (1, 77) [49406, 320, 3772, 31832, 2533, 593, 7080, 267, 1047, 267, '
        '2751, 269, 49407] 0')


def _hand_embeddings(model, tokenizer, prompts_per_class):
    rows = []
    with torch.no_grad():
        for prompts in prompts_per_class:
            e = model.encode_text(tokenizer(prompts)).float()
            e = e / e.norm(dim=-1, keepdim=True)
            m = e.mean(dim=0)
            rows.append(m / m.norm())
    return torch.stack(rows)


def test_encode_matches_hand_computation(clip_model, tokenizer):
    prompts = build_prompts(['cat', 'person with clothes,people,human', 'tv monitor'],
                            ['a photo of a {}.', 'a clean origami {}.', 'art of the {}.'])
    ref = _hand_embeddings(clip_model, tokenizer, prompts)
    out = encode_class_texts(clip_model, tokenizer, prompts)
    assert out.shape == (3, 32) and out.dtype == torch.float32
    # default: one class per encode call -> the same batches as the hand computation
    assert torch.equal(out, ref)
    assert torch.allclose(out.norm(dim=-1), torch.ones(3), atol=1e-6)
    # other batchings must not matter beyond float rounding
    small = encode_class_texts(clip_model, tokenizer, prompts, batch_size=2)
    assert torch.allclose(small, ref, atol=1e-6, rtol=0)
    packed = encode_class_texts(clip_model, tokenizer, prompts, group_by_class=False, batch_size=4)
    assert torch.allclose(packed, ref, atol=1e-6, rtol=0)
    # the recipe averages normalised rows: differs from normalising the mean of raw rows
    with torch.no_grad():
        raw = clip_model.encode_text(tokenizer(prompts[0])).mean(0)
    assert not torch.allclose(raw / raw.norm(), ref[0], atol=1e-5)


def test_batches_partition():
    b = encoder_mod._batches([3, 1, 5], batch_size=2, group_by_class=True)
    assert [(r.start, r.stop) for r in b] == [(0, 2), (2, 3), (3, 4), (4, 6), (6, 8), (8, 9)]
    b = encoder_mod._batches([3, 1, 5], batch_size=4, group_by_class=False)
    assert [(r.start, r.stop) for r in b] == [(0, 4), (4, 8), (8, 9)]


def test_class_rows_do_not_depend_on_selection(clip_model, tokenizer):
    full, _ = class_embeddings(clip_model, tokenizer, table='voc20', templates='pacl7')
    sub, _ = class_embeddings(clip_model, tokenizer, table='voc20', classes=['dog', 'person'],
                              templates='pacl7')
    assert torch.equal(sub, full[[11, 14]])


def test_encode_is_deterministic_and_gradient_free(clip_model, tokenizer):
    prompts = build_prompts(['dog', 'bird avian'], ['a photo of a {}.', 'itap of a {}.'])
    a = encode_class_texts(clip_model, tokenizer, prompts)
    b = encode_class_texts(clip_model, tokenizer, prompts)
    assert torch.equal(a, b)
    assert not a.requires_grad


def test_encode_errors(clip_model, tokenizer):
    with pytest.raises(ValueError, match='empty'):
        encode_class_texts(clip_model, tokenizer, [])
    with pytest.raises(ValueError, match=r'prompts_per_class\[1\]'):
        encode_class_texts(clip_model, tokenizer, [['a cat.'], []])
    with pytest.raises(ValueError, match='batch_size'):
        encode_class_texts(clip_model, tokenizer, [['a cat.']], batch_size=0)
    with pytest.raises(ValueError, match='tokenizer'):
        encode_class_texts(clip_model, lambda texts: torch.zeros(77, dtype=torch.long),
                           [['a cat.']])

    class Broken:
        def encode_text(self, tokens):
            return torch.zeros(tokens.shape[0], 8)

    with pytest.raises(RuntimeError, match='non-finite'):
        encode_class_texts(Broken(), tokenizer, [['a cat.']])


def test_weights_fingerprint(clip_model):
    fp = weights_fingerprint(clip_model)
    assert fp == weights_fingerprint(clip_model) and len(fp) == 64
    other = _tiny_clip()
    assert weights_fingerprint(other) == fp
    with torch.no_grad():
        other.visual.conv1.weight.add_(1.0)  # vision tower does not matter
        other.logit_scale.add_(1.0)
    assert weights_fingerprint(other) == fp
    with torch.no_grad():
        other.ln_final.bias[0] += 1e-3
    assert weights_fingerprint(other) != fp
    assert weights_fingerprint(CountingModel(clip_model)) != ''  # wrapped: prefix 'clip.'
    with pytest.raises(ValueError, match='fingerprint'):
        weights_fingerprint(object())


def test_memory_cache_hit_skips_model(clip_model, tokenizer):
    model = CountingModel(clip_model)
    cache = TextEmbeddingCache()
    fg1, bg1 = class_embeddings(model, tokenizer, table='voc20', classes=['person', 'dog'],
                                synonyms='clip_es', templates='clip_es', background='clip_es',
                                cache=cache, model_name='tiny')
    calls = model.calls
    assert calls >= 2 and cache.misses == 2
    fg2, bg2 = class_embeddings(model, tokenizer, table='voc20', classes=['person', 'dog'],
                                synonyms='clip_es', templates='clip_es', background='clip_es',
                                cache=cache, model_name='tiny')
    assert model.calls == calls and cache.hits == 2
    assert torch.equal(fg1, fg2) and torch.equal(bg1, bg2)
    # callers cannot corrupt the cache
    fg2.zero_()
    fg3, _ = class_embeddings(model, tokenizer, table='voc20', classes=['person', 'dog'],
                              synonyms='clip_es', cache=cache, model_name='tiny')
    assert torch.equal(fg3, fg1)
    # different prompts, model name or fingerprint -> miss
    class_embeddings(model, tokenizer, table='voc20', classes=['person', 'dog'], cache=cache,
                     model_name='tiny')
    class_embeddings(model, tokenizer, table='voc20', classes=['person', 'dog'],
                     synonyms='clip_es', cache=cache, model_name='other')
    class_embeddings(model, tokenizer, table='voc20', classes=['person', 'dog'],
                     synonyms='clip_es', cache=cache, model_name='tiny', fingerprint='v2')
    class_embeddings(model, tokenizer, table='voc20', classes=['person', 'dog'],
                     synonyms='clip_es', cache=cache, model_name='tiny', group_by_class=False)
    assert cache.misses == 6


def test_disk_cache_roundtrip_and_atomic_write(clip_model, tokenizer, tmp_path, monkeypatch):
    prompts = build_prompts(['cat', 'dog'], ['a photo of a {}.'])
    key = TextEmbeddingCache.make_key(model_name='tiny',
                                      fingerprint=weights_fingerprint(clip_model),
                                      prompts_per_class=prompts)
    cache = TextEmbeddingCache(tmp_path / 'cache')
    value = encode_class_texts(clip_model, tokenizer, prompts)
    cache.put(key, value)
    path = cache.path_for(key)
    assert path.name == f'{key.digest}.pt' and path.is_file()
    assert sorted(os.listdir(tmp_path / 'cache')) == [path.name]  # no temp file left
    fresh = TextEmbeddingCache(tmp_path / 'cache')
    got = fresh.get(key)
    assert torch.equal(got, value) and fresh.disk_hits == 1
    # a crash while writing leaves the old file intact and no temp file behind
    real_save = torch.save

    def crashing_save(obj, f, *a, **k):
        f.write(b'partial garbage')
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', crashing_save)
    with pytest.raises(OSError, match='disk full'):
        cache.put(key, value * 0 + 1 / value.shape[1] ** 0.5)
    monkeypatch.setattr(torch, 'save', real_save)
    assert sorted(os.listdir(tmp_path / 'cache')) == [path.name]
    assert torch.equal(TextEmbeddingCache(tmp_path / 'cache').get(key), value)


@pytest.mark.parametrize('damage', ['garbage', 'truncate', 'other_key', 'wrong_shape', 'nan'])
def test_corrupt_disk_cache_is_ignored_and_rewritten(clip_model, tokenizer, tmp_path, damage):
    model = CountingModel(clip_model)
    kwargs = dict(table='voc20', classes=['cat', 'dog'], templates='single', model_name='tiny')
    cache = TextEmbeddingCache(tmp_path)
    fg, _ = class_embeddings(model, tokenizer, cache=cache, **kwargs)
    files = list(tmp_path.glob('*.pt'))
    assert len(files) == 1
    path = files[0]
    payload = torch.load(path, weights_only=True)
    if damage == 'garbage':
        path.write_bytes(b'not a torch file')
    elif damage == 'truncate':
        path.write_bytes(path.read_bytes()[:50])
    elif damage == 'other_key':
        payload['key'] = payload['key'].replace('"tiny"', '"other"')
        torch.save(payload, path)
    elif damage == 'wrong_shape':
        payload['embeddings'] = payload['embeddings'][:1]
        torch.save(payload, path)
    else:
        payload['embeddings'][0, 0] = float('nan')
        torch.save(payload, path)
    calls = model.calls
    cache2 = TextEmbeddingCache(tmp_path)
    with pytest.warns(RuntimeWarning, match='ignoring'):
        fg2, _ = class_embeddings(model, tokenizer, cache=cache2, **kwargs)
    assert model.calls > calls  # recomputed, not trusted
    assert torch.equal(fg2, fg)
    # the file was rewritten and is trusted again
    calls = model.calls
    fg3, _ = class_embeddings(model, tokenizer, cache=TextEmbeddingCache(tmp_path), **kwargs)
    assert model.calls == calls and torch.equal(fg3, fg)


def test_cache_put_validation(tmp_path):
    key = TextEmbeddingCache.make_key(model_name='m', fingerprint='f', prompts_per_class=[['a {}']])
    cache = TextEmbeddingCache(tmp_path)
    with pytest.raises(ValueError, match='rows'):
        cache.put(key, torch.ones(2, 4))
    with pytest.raises(ValueError, match='float32'):
        cache.put(key, torch.ones(1, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match='fingerprint'):
        TextEmbeddingCache.make_key(model_name='m', fingerprint='', prompts_per_class=[['x']])
    with pytest.raises(ValueError, match='serialisable'):
        TextEmbeddingCache.make_key(model_name='m', fingerprint='f', prompts_per_class=[['x']],
                                    extra={'obj': object()})
    (tmp_path / 'file').write_text('x')
    with pytest.raises(ValueError, match='not a directory'):
        TextEmbeddingCache(tmp_path / 'file')
    small = TextEmbeddingCache(max_items=1)
    k2 = TextEmbeddingCache.make_key(model_name='m', fingerprint='g', prompts_per_class=[['a {}']])
    small.put(key, torch.ones(1, 4))
    small.put(k2, torch.ones(1, 4))
    assert len(small) == 1 and small.get(key) is None and small.get(k2) is not None


def test_class_embeddings_clip_es_voc(clip_model, tokenizer):
    fg, bg = class_embeddings(clip_model, tokenizer, table='voc20', synonyms='clip_es',
                              templates='clip_es', background='clip_es')
    assert fg.shape == (20, 32) and bg.shape == (25, 32)
    ref = encode_class_texts(clip_model, tokenizer,
                             [['a clean origami person with clothes,people,human.']])
    assert torch.equal(fg[14:15], ref)
    ref_bg = encode_class_texts(clip_model, tokenizer, [['a clean origami ground.']])
    assert torch.equal(bg[0:1], ref_bg)
    fg_c, bg_c = class_embeddings(clip_model, tokenizer, table='coco80', synonyms='clip_es',
                                  background='clip_es', classes=['snowboard', 0])
    assert fg_c.shape == (2, 32) and bg_c.shape == (23, 32)
    ref_typo = encode_class_texts(clip_model, tokenizer, [['a clean origami sknowboard.']])
    assert torch.equal(fg_c[0:1], ref_typo)
    fg_n, bg_n = class_embeddings(clip_model, tokenizer, classes=['cat', 'dog'],
                                  templates=['a {}.'])
    assert fg_n.shape == (2, 32) and bg_n.shape == (0, 32)
    _, bg_list = class_embeddings(clip_model, tokenizer, classes=['cat'],
                                  background=['sky', 'road'], synonyms={'cat': 'kitty'})
    assert bg_list.shape == (2, 32)


def test_class_embeddings_errors(clip_model, tokenizer):
    with pytest.raises(KeyError, match='persn'):
        class_embeddings(clip_model, tokenizer, table='voc20', classes=['persn'])
    with pytest.raises(ValueError, match='table'):
        class_embeddings(clip_model, tokenizer, classes=[1, 2])
    with pytest.raises(ValueError, match='classes'):
        class_embeddings(clip_model, tokenizer)
    with pytest.raises(KeyError, match='clip_es'):
        class_embeddings(clip_model, tokenizer, table='ade150', synonyms='clip_es')
    with pytest.raises(KeyError, match='templates'):
        class_embeddings(clip_model, tokenizer, table='voc20', templates='openai81')
    with pytest.raises(ValueError, match='placeholder'):
        class_embeddings(clip_model, tokenizer, table='voc20', templates=['a photo.'])
    with pytest.raises(ValueError, match='background'):
        class_embeddings(clip_model, tokenizer, table='voc20', background=[])
    with pytest.raises(ValueError, match='cache'):
        class_embeddings(clip_model, tokenizer, table='voc20', cache={})


def test_synonym_row_embeddings_split_mode(clip_model, tokenizer):
    rows, row_to_class, bg = synonym_row_embeddings(
        clip_model, tokenizer, table='voc20', classes=['person', 'dog'], synonyms='clip_es',
        templates='single', background='maskclip_demo')
    assert rows.shape == (4, 32) and bg.shape == (5, 32)
    assert row_to_class.tolist() == [0, 0, 0, 1]
    ref = encode_class_texts(clip_model, tokenizer,
                             [['a photo of a person with clothes.'], ['a photo of a people.'],
                              ['a photo of a human.'], ['a photo of a dog.']])
    assert torch.equal(rows, ref)
    g = torch.Generator().manual_seed(1)
    image = torch.nn.functional.normalize(torch.randn(3, 32, generator=g), dim=-1)
    scores = image @ rows.T
    cls = max_over_synonyms(scores, row_to_class, num_classes=2)
    assert torch.equal(cls[:, 0], scores[:, :3].amax(-1))
    assert torch.equal(cls[:, 1], scores[:, 3])


