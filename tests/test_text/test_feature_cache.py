"""The on-disk text-feature cache behind ``class_embeddings(cache=...)`` (issue #12 item 4).

The recipe itself is pinned by hand in test_text_encoder.py; here the cached result must be
bit-identical to an uncached computation, be reused across "processes" (fresh caches), and
miss whenever any input that determines the values changes.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

open_clip = pytest.importorskip('open_clip')

from wsss_mmseg.clip import build_clip, clear_clip_cache, save_openai_format, tiny_clip  # noqa: E402
from wsss_mmseg.clip import weights_id as weights_id_mod  # noqa: E402
from wsss_mmseg.clip.weights_id import weights_content_id  # noqa: E402
from wsss_mmseg.text import class_embeddings, synonym_row_embeddings  # noqa: E402
from wsss_mmseg.text import feature_cache as fc  # noqa: E402

VOC = dict(table='voc20', classes=['person', 'dog', 'aeroplane'], synonyms='clip_es',
           templates='clip_es', background='clip_es')


class CountingModel(nn.Module):
    """A CLIP whose encode_text calls are counted."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.clip = clip
        self.calls = 0

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.clip.encode_text(tokens)


@pytest.fixture(autouse=True)
def _isolated_cache_root(tmp_path, monkeypatch):
    """Every test gets its own cache root; nothing is written to ~/.cache."""
    monkeypatch.setenv('WSSS_MMSEG_CACHE', str(tmp_path / 'cache_root'))
    monkeypatch.setattr(fc, '_SHARED', {})  # a fresh process: no shared in-memory caches
    weights_id_mod.clear_memory_cache()
    clear_clip_cache()
    yield
    clear_clip_cache()


@pytest.fixture(scope='module')
def tokenizer():
    return open_clip.get_tokenizer('ViT-B-16')


@pytest.fixture
def weights_file(tmp_path) -> Path:
    return Path(save_openai_format(tiny_clip(seed=0, fp16_round=True), tmp_path / 'tiny.pt'))


def _text_files(root: Path):
    folder = root / 'text_features'
    return sorted(folder.glob('*.pt')) if folder.is_dir() else []


def _new_process():
    """What a rerun / another rank starts with: no in-memory cache and no hash memo."""
    fc._SHARED.clear()
    weights_id_mod.clear_memory_cache()


def test_cached_result_is_bit_identical_and_reused(weights_file, tokenizer, tmp_path):
    model = CountingModel(build_clip(None, weights_file))
    wid = weights_content_id(weights_file)
    ref_fg, ref_bg = class_embeddings(model, tokenizer, cache=False, **VOC)
    n_uncached = model.calls
    assert n_uncached > 0 and _text_files(tmp_path / 'cache_root') == []

    fg1, bg1 = class_embeddings(model, tokenizer, weights_id=wid, **VOC)  # 'auto': file weights
    assert model.calls == 2 * n_uncached  # computed (miss) ...
    files = _text_files(tmp_path / 'cache_root')
    assert len(files) == 2  # ... and stored: foreground and background matrices

    _new_process()
    fg2, bg2 = class_embeddings(model, tokenizer, weights_id=weights_content_id(weights_file), **VOC)
    assert model.calls == 2 * n_uncached  # loaded from disk, the text tower did not run
    for got in (fg1, fg2):
        assert got.dtype == torch.float32 and torch.equal(got, ref_fg)
    for got in (bg1, bg2):
        assert torch.equal(got, ref_bg)
    # the files hold exactly the tensors, readable without pickled code
    stored = [torch.load(f, weights_only=True)['embeddings'] for f in files]
    assert any(torch.equal(s, ref_fg) for s in stored) and any(torch.equal(s, ref_bg) for s in stored)


def test_synonym_rows_use_the_cache_too(weights_file, tokenizer):
    model = CountingModel(build_clip(None, weights_file))
    kw = dict(table='voc20', classes=['person', 'sofa'], templates='single', background=['sky'])
    ref = synonym_row_embeddings(model, tokenizer, cache=False, **kw)
    calls = model.calls
    synonym_row_embeddings(model, tokenizer, weights_id=weights_content_id(weights_file), **kw)
    _new_process()
    got = synonym_row_embeddings(model, tokenizer, weights_id=weights_content_id(weights_file), **kw)
    assert model.calls == 2 * calls
    for a, b in zip(ref, got):
        assert torch.equal(a, b)


def test_auto_policy(weights_file, tokenizer, tmp_path):
    root = tmp_path / 'cache_root'
    model = CountingModel(tiny_clip(seed=1))
    kw = dict(table='voc20', classes=['cat'], templates='single')
    class_embeddings(model, tokenizer, **kw)  # no weights identity: no disk cache
    class_embeddings(model, tokenizer, weights_id=weights_content_id(None, 'ViT-B-16'), **kw)
    assert _text_files(root) == []  # random weights: not cached unless asked
    class_embeddings(model, tokenizer, weights_id='open_clip:ViT-B-16:openai', **kw)
    assert len(_text_files(root)) == 1  # a named tag is cached
    class_embeddings(model, tokenizer, cache=True, **kw)  # asked: random weights keyed by their tensors
    assert len(_text_files(root)) == 2
    custom = tmp_path / 'elsewhere'
    class_embeddings(model, tokenizer, cache=str(custom), **kw)
    assert len(list(custom.glob('*.pt'))) == 1
    assert fc.clear_text_cache() == 2 and _text_files(root) == []
    with pytest.raises(ValueError, match='cache'):
        class_embeddings(model, tokenizer, cache=3, **kw)
    with pytest.raises(ValueError, match='weights_id'):
        class_embeddings(model, tokenizer, weights_id='', **kw)


def test_random_weights_with_cache_true_are_keyed_by_their_tensors(tokenizer):
    kw = dict(table='voc20', classes=['cat', 'dog'], templates='single', cache=True)
    a, b = CountingModel(tiny_clip(seed=1)), CountingModel(tiny_clip(seed=2))
    fa, _ = class_embeddings(a, tokenizer, **kw)
    _new_process()
    fb, _ = class_embeddings(b, tokenizer, **kw)  # other tensors: a miss, not a's vectors
    assert b.calls > 0 and not torch.equal(fa, fb)
    assert torch.equal(fb, class_embeddings(b, tokenizer, cache=False, table='voc20',
                                            classes=['cat', 'dog'], templates='single')[0])


def test_replaced_weights_file_misses(weights_file, tokenizer):
    """Issue #16: new weights at the same path must not reuse the old model's features."""
    kw = dict(table='voc20', classes=['cat', 'dog'], templates='single')
    old = class_embeddings(build_clip(None, weights_file), tokenizer,
                           weights_id=weights_content_id(weights_file), **kw)[0]
    save_openai_format(tiny_clip(seed=5, fp16_round=True), weights_file)
    os.utime(weights_file, ns=(1, 1))  # even an old mtime: the stamp differs
    _new_process()
    clear_clip_cache()
    new_model = build_clip(None, weights_file)
    new = class_embeddings(new_model, tokenizer, weights_id=weights_content_id(weights_file), **kw)[0]
    ref = class_embeddings(new_model, tokenizer, cache=False, **kw)[0]
    assert torch.equal(new, ref) and not torch.equal(new, old)


def _key_digest(model, tokenizer, *, weights='sha256:' + '1' * 64, device='cpu', **kw):
    weights_str, extra = fc.cache_key_parts(model, tokenizer, weights, None, torch.device(device))
    texts = kw.pop('prompts', [['a photo of a cat.'], ['a photo of a dog.']])
    return fc.TextEmbeddingCache.make_key(model_name=kw.pop('model_name', 'ViT-B-16'),
                                          fingerprint=weights_str, prompts_per_class=texts,
                                          extra=dict(extra, batch_size=256, group_by_class=True)).digest


def test_key_changes_with_every_input(tokenizer):
    model = tiny_clip(seed=0)
    base = _key_digest(model, tokenizer)
    assert base == _key_digest(tiny_clip(seed=0), tokenizer)  # deterministic across instances
    variants = {
        'weights': _key_digest(model, tokenizer, weights='sha256:' + '2' * 64),
        'model name': _key_digest(model, tokenizer, model_name='ViT-B-32'),
        'sentences': _key_digest(model, tokenizer, prompts=[['a photo of a cat.'], ['a dog.']]),
        'class order': _key_digest(model, tokenizer, prompts=[['a photo of a dog.'], ['a photo of a cat.']]),
        'tokenizer context': _key_digest(model, open_clip.get_tokenizer('ViT-B-16', context_length=32)),
        'architecture': _key_digest(tiny_clip(seed=0, text_width=64), tokenizer),
        'dtype': _key_digest(tiny_clip(seed=0).half(), tokenizer),
        'device': _key_digest(model, tokenizer, device='meta'),
    }
    for what, digest in variants.items():
        assert digest != base, what
    assert len(set(variants.values())) == len(variants)


def test_key_components():
    tok = open_clip.get_tokenizer('ViT-B-16')
    ident = fc.tokenizer_identity(tok)
    assert ident == fc.tokenizer_identity(open_clip.get_tokenizer('ViT-B-16'))
    assert ident.startswith('open_clip.tokenizer.SimpleTokenizer:ctx=77:')
    with pytest.raises(ValueError, match='tokenizer'):
        fc.tokenizer_identity(lambda texts: [1, 2])
    m = tiny_clip(seed=0)
    assert fc.text_tower_dtype(m) == 'torch.float32'
    assert fc.text_tower_dtype(tiny_clip(seed=0).half()) == 'torch.float16'
    # the definition ignores weight values but sees the activation
    assert fc.model_definition_id(m) == fc.model_definition_id(tiny_clip(seed=3))
    gelu = tiny_clip(seed=0)
    gelu.transformer.resblocks[0].mlp.gelu = nn.GELU()
    assert fc.model_definition_id(gelu) != fc.model_definition_id(m)


def test_input_changes_miss_through_class_embeddings(weights_file, tokenizer):
    model = CountingModel(build_clip(None, weights_file))
    wid = weights_content_id(weights_file)
    kw = dict(table='voc20', classes=['person', 'dog'], templates='single', weights_id=wid)
    class_embeddings(model, tokenizer, **kw)
    for change in (dict(classes=['dog', 'person']), dict(synonyms='clip_es'), dict(templates='clip_es'),
                   dict(background=['sky']), dict(classes=['person', 'dog', 'cow'])):
        calls = model.calls
        class_embeddings(model, tokenizer, **dict(kw, **change))
        assert model.calls > calls, change
    calls = model.calls
    class_embeddings(model, tokenizer, **kw)  # the original inputs: a hit
    assert model.calls == calls


class _Exploit:
    def __reduce__(self):
        return (os.system, ('touch /tmp/wsss_mmseg_feature_cache_pwned',))


@pytest.mark.parametrize('damage', ['pickle_code', 'truncated'])
def test_unsafe_or_corrupt_entry_is_recomputed(weights_file, tokenizer, tmp_path, damage):
    marker = Path('/tmp/wsss_mmseg_feature_cache_pwned')
    marker.unlink(missing_ok=True)
    model = CountingModel(build_clip(None, weights_file))
    kw = dict(table='voc20', classes=['cat', 'dog'], templates='single',
              weights_id=weights_content_id(weights_file))
    ref, _ = class_embeddings(model, tokenizer, **kw)
    (path,) = _text_files(tmp_path / 'cache_root')
    if damage == 'pickle_code':
        with open(path, 'wb') as f:
            torch.save({'format': 1, 'payload': _Exploit()}, f, pickle_protocol=2)
    else:
        path.write_bytes(path.read_bytes()[:40])
    _new_process()
    calls = model.calls
    with pytest.warns(RuntimeWarning, match='ignoring'):
        got, _ = class_embeddings(model, tokenizer, **kw)
    assert model.calls > calls and torch.equal(got, ref)
    assert not marker.exists()  # weights_only loading ran no code from the file
    _new_process()
    calls = model.calls
    again, _ = class_embeddings(model, tokenizer, **kw)  # rewritten: trusted again
    assert model.calls == calls and torch.equal(again, ref)


def test_unwritable_cache_folder_does_not_stop_the_caller(weights_file, tokenizer, tmp_path, monkeypatch):
    blocker = tmp_path / 'not_a_folder'
    blocker.write_text('x')
    monkeypatch.setenv('WSSS_MMSEG_CACHE', str(blocker))  # <root>/text_features cannot be created
    model = build_clip(None, weights_file)
    kw = dict(table='voc20', classes=['cat', 'dog'], templates='single')
    ref, _ = class_embeddings(model, tokenizer, cache=False, **kw)
    with pytest.warns(RuntimeWarning, match='not writable'):
        got, _ = class_embeddings(model, tokenizer, weights_id='open_clip:ViT-B-16:openai', **kw)
    assert torch.equal(got, ref)
