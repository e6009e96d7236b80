"""Caption text augmentation of PACL training (spec maskclip_pacl.md §3.3): nouns of a caption
wrapped in one of the 7 CLIP templates, used alongside the caption.

There is no part-of-speech tagger among the dependencies, so "nouns" are the words and phrases of a
fixed noun vocabulary found in the caption (longest match first, whole words, case-insensitive,
plural ``s``/``es`` accepted). The default vocabulary is every class name of the plugin's tables
(VOC, COCO-80, COCO-Stuff-171, Context-59, ADE-150, Cityscapes) -- a guess at the paper's
extractor, which is not described beyond "nouns". Pure Python.
"""
from __future__ import annotations

import random
import re
from typing import Iterable, List, Optional, Sequence

__all__ = ['default_noun_vocabulary', 'caption_nouns', 'noun_prompt']


def default_noun_vocabulary() -> List[str]:
    """Lower-case names of every class table (``-``/``_`` as spaces), longest first."""
    from ..text import class_names
    from ..text.vocab import list_tables
    words = set()
    for table in list_tables():
        for name in class_names(table):
            for part in str(name).split(','):
                w = re.sub(r'[-_]+', ' ', part).strip().lower()
                w = re.sub(r'\s*\(.*?\)\s*', ' ', w).strip()
                if w and w not in ('background', 'other', 'things', 'stuff'):
                    words.add(w)
    return sorted(words, key=lambda w: (-len(w.split()), -len(w), w))


def caption_nouns(caption: str, vocabulary: Iterable[str]) -> List[str]:
    """Vocabulary nouns in a caption, in caption order, each once; longer phrases win.

    Args:
        caption: Free text.
        vocabulary: Lower-case nouns / noun phrases.

    Returns:
        Found nouns as written in the vocabulary.
    """
    text = ' ' + re.sub(r'[^a-z0-9 ]+', ' ', caption.lower()) + ' '
    taken = [False] * len(text)
    found = []
    for noun in sorted(set(vocabulary), key=lambda w: (-len(w), w)):
        pattern = re.compile(r'(?<= )' + re.escape(noun) + r'(?:s|es)?(?= )')
        for m in pattern.finditer(text):
            if not any(taken[m.start():m.end()]):
                for i in range(m.start(), m.end()):
                    taken[i] = True
                found.append((m.start(), noun))
    seen, out = set(), []
    for _, noun in sorted(found):
        if noun not in seen:
            seen.add(noun)
            out.append(noun)
    return out


def noun_prompt(caption: str, templates: Sequence[str], vocabulary: Iterable[str], *, prob: float,
                rng: Optional[random.Random] = None) -> str:
    """The caption, or with probability ``prob`` one of its nouns in a random template.

    Args:
        caption: The caption.
        templates: Templates with one ``{}``.
        vocabulary: Noun vocabulary.
        prob: Probability of replacing the caption (when it has a noun).
        rng: Random source (``random`` module state by default).

    Returns:
        The text to encode.
    """
    r = rng or random
    if prob <= 0 or r.random() >= prob:
        return caption
    nouns = caption_nouns(caption, vocabulary)
    if not nouns:
        return caption
    return r.choice(list(templates)).format(r.choice(nouns))
