"""COCO's and VOC's spellings of the same classes find each other in every table (issue #17 item 4).

The coco80 table keeps CLIP-ES's VOC spellings (motorbike, aeroplane, sofa, pottedplant, diningtable,
tvmonitor; clip_es.md section 3: they are the prompt text), so a label file with COCO's official
category names used to fail, with misleading hints ('couch' -> 'clock', 'tv' -> nothing). The
expected indices below are read off the published class lists (VOC 2012 object names in alphabetical
order; COCO's 80 categories in category-id order), not computed by the code under test.
"""
import pytest

from wsss_mmseg.text.vocab import (class_names, close_class_names, find_class_index,
                                   normalise_class_name, resolve_classes, spelling_variants)

# COCO official name -> (VOC spelling, COCO-80 contiguous index, VOC-20 index)
SPELLINGS = {
    'motorcycle': ('motorbike', 3, 13),
    'airplane': ('aeroplane', 4, 0),
    'couch': ('sofa', 57, 17),
    'potted plant': ('pottedplant', 58, 15),
    'dining table': ('diningtable', 60, 10),
    'tv': ('tvmonitor', 62, 19),
}


@pytest.mark.parametrize('coco_name', sorted(SPELLINGS))
def test_coco_names_find_coco80_and_voc20_entries(coco_name):
    voc_name, coco_idx, voc_idx = SPELLINGS[coco_name]
    assert resolve_classes([coco_name], table='coco80') == [coco_idx]
    assert resolve_classes([voc_name], table='coco80') == [coco_idx]
    assert resolve_classes([coco_name], table='voc20') == [voc_idx]
    assert resolve_classes([voc_name], table='coco80_readable') == [coco_idx]
    assert resolve_classes([coco_name.upper()], table='coco80') == [coco_idx]


def test_prompt_text_stays_the_clip_es_spelling():
    """The index found through COCO's name points at CLIP-ES's text: 'couch' is encoded as 'sofa'."""
    names = class_names('coco80')
    idx = resolve_classes(['couch', 'tv', 'motorcycle'], table='coco80')
    assert [names[i] for i in idx] == ['sofa', 'tvmonitor', 'motorbike']


def test_hints_use_the_other_spelling():
    # before: 'couches' -> no alias -> difflib's 'clock'-like guesses; now the table's 'sofa'
    assert close_class_names('couches', class_names('coco80'))[0] == 'sofa'
    assert close_class_names('motorcycles', class_names('voc20'))[0] == 'motorbike'
    with pytest.raises(KeyError, match="did you mean 'sofa'"):
        resolve_classes(['couchs'], table='coco80')


def test_spelling_variants_and_no_false_friends():
    assert spelling_variants('TV') == ['tvmonitor', 'tv monitor']
    assert spelling_variants('sofa') == ['couch']
    assert spelling_variants('dog') == []
    # context59's 'table' is not COCO's 'dining table': no alias, an error
    assert find_class_index('dining table', class_names('context59')) is None
    # a table holding both spellings resolves each to itself
    assert find_class_index('couch', ['sofa', 'couch']) == 1
    assert find_class_index('sofa', ['sofa', 'couch']) == 0


def test_nfc_normalisation():
    decomposed = 'cafe\u0301'  # 'e' + COMBINING ACUTE ACCENT
    precomposed = 'caf\u00e9'
    assert decomposed != precomposed
    assert normalise_class_name(decomposed) == normalise_class_name(precomposed) == 'caf\u00e9'
    assert find_class_index(decomposed, ['tea', precomposed]) == 1
    assert find_class_index(' Caf\u00c9 ', ['tea', decomposed]) == 1
