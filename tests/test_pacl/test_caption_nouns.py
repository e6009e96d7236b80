"""Caption noun + template augmentation (spec maskclip_pacl.md §3.3), by hand."""
import random

import pytest
import torch
from mmengine.registry import init_default_scope
from mmseg.structures import SegDataSample

import wsss_mmseg  # noqa: F401
from wsss_mmseg.models.pacl import PACLHead, PACLInfoNCELoss
from wsss_mmseg.pacl.caption_nouns import caption_nouns, default_noun_vocabulary, noun_prompt

VOCAB = ['dog', 'hot dog', 'bus', 'grass', 'dining table']


def test_caption_nouns_by_hand():
    assert caption_nouns('Two dogs eat a hot dog on the grass.', VOCAB) == ['dog', 'hot dog', 'grass']
    assert caption_nouns('A red BUS next to a dining-table', VOCAB) == ['bus', 'dining table']
    assert caption_nouns('a doghouse', VOCAB) == []                   # whole words only
    vocab = default_noun_vocabulary()
    assert 'person' in vocab and 'dining table' in vocab and 'background' not in vocab


def test_noun_prompt_uses_the_templates_and_the_probability():
    tpl = ['a photo of the {}.', 'art of the {}.']
    assert noun_prompt('a dog on grass', tpl, VOCAB, prob=0.0) == 'a dog on grass'
    rng = random.Random(0)
    outs = {noun_prompt('a dog on grass', tpl, VOCAB, prob=1.0, rng=rng) for _ in range(50)}
    assert outs == {t.format(n) for t in tpl for n in ('dog', 'grass')}
    assert noun_prompt('nothing known here', tpl, VOCAB, prob=1.0, rng=rng) == 'nothing known here'
    rng = random.Random(1)
    hits = sum(noun_prompt('a dog', tpl, VOCAB, prob=0.3, rng=rng) != 'a dog' for _ in range(2000))
    assert 0.25 < hits / 2000 < 0.35


def test_head_encodes_noun_prompts_in_training_only(tiny_clip_path, monkeypatch):
    init_default_scope('mmseg')
    head = PACLHead(clip=dict(model_name=None, pretrained=tiny_clip_path), class_table='voc20', templates='single',
                    background=['sky'], loss_decode=dict(type='PACLInfoNCELoss', noun_prompt_prob=1.0))
    seen = []
    import wsss_mmseg.models.pacl as mod
    real = mod.get_tokenizer

    def spy(name):
        tok = real(name)
        return lambda texts: (seen.extend(texts), tok(texts))[1]

    monkeypatch.setattr(mod, 'get_tokenizer', spy)
    d = SegDataSample()
    d.set_metainfo(dict(img_shape=(32, 32), caption='a dog on the grass'))
    head.train()
    head.loss([torch.randn(1, 64, 2, 2)], [d])
    assert len(seen) == 1 and seen[0] != 'a dog on the grass' and ('dog' in seen[0] or 'grass' in seen[0])
    seen.clear()
    head.eval()
    head.loss([torch.randn(1, 64, 2, 2)], [d])
    assert seen == ['a dog on the grass']
    with pytest.raises(ValueError, match='noun_prompt_prob'):
        PACLInfoNCELoss(noun_prompt_prob=2.0)
