"""Tests of prompt building and the two synonym modes."""
import pytest
import torch

from wsss_mmseg.text import (apply_synonyms, build_prompts, class_names, expand_synonyms,
                             max_over_synonyms, synonyms, templates)


def test_clip_es_person_sentence_fusion():
    texts = apply_synonyms(class_names('voc20'), synonyms('clip_es_voc'))
    prompts = build_prompts(texts, templates('clip_es'))
    assert len(prompts) == 20 and all(len(p) == 1 for p in prompts)
    assert prompts[14] == ['a clean origami person with clothes,people,human.']
    assert prompts[2] == ['a clean origami bird avian.']
    assert prompts[19] == ['a clean origami tvmonitor screen.']
    assert prompts[0] == ['a clean origami aeroplane.']


def test_coco_official_typo_and_fixed_variant():
    official = apply_synonyms(class_names('coco80'), synonyms('clip_es_coco_official'))
    fixed = apply_synonyms(class_names('coco80'), synonyms('clip_es_coco'))
    assert official[31] == 'sknowboard' and fixed[31] == 'snowboard'
    assert [i for i, (a, b) in enumerate(zip(official, fixed)) if a != b] == [31]


def test_build_prompts_order_and_many_templates():
    tm = templates('maskclip85')
    prompts = build_prompts(['cat', 'tv monitor'], tm)
    assert len(prompts) == 2 and len(prompts[0]) == 85
    assert prompts[1][0] == tm[0].format('tv monitor')
    assert prompts[0][-1] == 'this is one cat in the scene.'


def test_build_prompts_errors():
    with pytest.raises(ValueError, match='placeholder'):
        build_prompts(['cat'], ['a photo of a cat.'])
    with pytest.raises(ValueError, match='placeholder'):
        build_prompts(['cat'], ['a {} and a {}.'])
    with pytest.raises(ValueError, match='placeholder'):
        build_prompts(['cat'], ['a {0}.'])
    with pytest.raises(ValueError, match='empty'):
        build_prompts([], ['a {}.'])
    with pytest.raises(ValueError, match='class_texts'):
        build_prompts('cat', ['a {}.'])
    with pytest.raises(ValueError, match=r'class_texts\[1\]'):
        build_prompts(['cat', '  '], ['a {}.'])
    with pytest.raises(ValueError):
        apply_synonyms(['cat'], {'cat': ''})


def test_expand_synonyms_mapping():
    exp = expand_synonyms(['person with clothes,people,human', 'dog', ' sky , wall,,sky'])
    assert exp.texts == ['person with clothes', 'people', 'human', 'dog', 'sky', 'wall']
    assert exp.row_to_class == [0, 0, 0, 1, 2, 2]
    assert exp.class_rows == [[0, 1, 2], [3], [4, 5]]
    assert exp.num_classes == 3
    assert exp.row_index().tolist() == exp.row_to_class
    with pytest.raises(ValueError, match=r'class_texts\[1\]'):
        expand_synonyms(['cat', ' , '])


def test_max_over_synonyms_matches_loop():
    g = torch.Generator().manual_seed(0)
    exp = expand_synonyms(['a,b,c', 'd', 'e,f'])
    scores = torch.randn(2, 6, 4, 5, generator=g)
    out = max_over_synonyms(scores, exp.row_index(), num_classes=3, dim=1)
    assert out.shape == (2, 3, 4, 5)
    for c, rows in enumerate(exp.class_rows):
        ref = scores[:, rows].amax(dim=1)
        assert torch.equal(out[:, c], ref)
    last = max_over_synonyms(scores.movedim(1, -1), exp.row_index(), num_classes=3)
    assert torch.equal(last, out.movedim(1, -1))


def test_max_over_synonyms_errors():
    idx = torch.tensor([0, 0, 1])
    with pytest.raises(ValueError, match='rows'):
        max_over_synonyms(torch.zeros(4), idx, num_classes=2)
    with pytest.raises(ValueError, match='no synonym row'):
        max_over_synonyms(torch.zeros(3), idx, num_classes=3)
    with pytest.raises(ValueError, match=r'\[0, 2\)'):
        max_over_synonyms(torch.zeros(3), torch.tensor([0, 1, 2]), num_classes=2)
    with pytest.raises(ValueError, match='LongTensor'):
        max_over_synonyms(torch.zeros(3), idx.int(), num_classes=2)
    with pytest.raises(ValueError, match='floating'):
        max_over_synonyms(torch.zeros(3, dtype=torch.long), idx, num_classes=2)
