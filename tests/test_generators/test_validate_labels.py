"""``validate_labels``: the one image-level label check (generator contract and CLIP-ES pipeline).

Expected values are written out by hand; the cross-entry-point messages (contract preparer,
``CLIPESCAM.forward``, ``CLIPESCAM.forward_batch``) are checked in
``tests/test_cam/test_generators.py``.
"""
import ast
from pathlib import Path

import numpy as np
import pytest

from wsss_mmseg.generators.base import validate_labels

PACKAGE = Path(__file__).resolve().parents[2] / 'wsss_mmseg'


def test_deduplicates_in_first_occurrence_order():
    assert validate_labels([3, 1, 3, 0], 5) == [3, 1, 0]
    assert validate_labels(np.array([2, 2]), 5) == [2]
    assert validate_labels([4], 5) == [4]
    assert validate_labels([0, 0, 0], 1) == [0]


def test_returns_python_ints_for_numpy_and_integral_float_labels():
    out = validate_labels([np.int64(4), np.uint8(1), 2.0, np.float32(3.0)], 5)
    assert out == [4, 1, 2, 3]
    assert [type(v) for v in out] == [int, int, int, int]


@pytest.mark.parametrize('labels, num_classes, message', [
    ([], 5, 'an image needs at least one image-level label (got none)'),
    (np.array([], dtype=np.int64), 5, 'an image needs at least one image-level label (got none)'),
    ([3, 5], 5, 'label id 5 out of range for 5 classes'),
    ([-1], 5, 'label id -1 out of range for 5 classes'),
    ([0], 0, 'label id 0 out of range for 0 classes'),
    ([1.5], 5, 'label ids must be integers, got 1.5'),
    ([True], 5, 'label ids must be integers, got True'),
    (['1'], 5, "label ids must be integers, got '1'"),
    ([None], 5, 'label ids must be integers, got None'),
])
def test_bad_labels_give_one_clear_message(labels, num_classes, message):
    with pytest.raises(ValueError) as info:
        validate_labels(labels, num_classes)
    assert str(info.value) == message


def test_numpy_bools_are_not_labels():
    with pytest.raises(ValueError, match='^label ids must be integers, got '):
        validate_labels([np.bool_(True)], 5)


def _imports(path: Path) -> set:
    """Absolute names of the modules ``path`` imports (relative imports resolved in the package)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    pkg = parts[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[:len(pkg) - node.level + 1]
                names.add('.'.join(base + ((node.module,) if node.module else ())))
            else:
                names.add(node.module)
    return names


def test_the_label_check_lives_in_pure_modules_without_a_cycle():
    """``cam/clip_es.py`` imports the check from ``generators/base.py``; neither (nor the
    ``generators`` package init that the import runs) imports mmseg/mmengine, and the generator
    contract imports nothing of ``wsss_mmseg``, so ``cam -> generators.base`` cannot close a cycle."""
    clip_es = _imports(PACKAGE / 'cam' / 'clip_es.py')
    assert 'wsss_mmseg.generators.base' in clip_es
    for rel in ('cam/clip_es.py', 'generators/base.py', 'generators/__init__.py'):
        names = _imports(PACKAGE / rel)
        assert not [n for n in names if n.split('.')[0] in ('mmseg', 'mmengine', 'mmcv')], (rel, names)
    assert not [n for n in _imports(PACKAGE / 'generators' / 'base.py') if n.startswith('wsss_mmseg')]
    assert {n for n in _imports(PACKAGE / 'generators' / '__init__.py') if n.startswith('wsss_mmseg')} \
        == {'wsss_mmseg.generators.base'}
