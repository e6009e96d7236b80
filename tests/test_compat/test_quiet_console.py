"""Quiet console (issue #12 item 8): the two known import-time messages of the stacks are
silenced exactly, other warnings and prints still appear (compat fixes ``msda_warning`` and
``onedl_message``)."""
import importlib.util
import json
import logging
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest

from wsss_mmseg import compat

REPO = Path(__file__).resolve().parents[2]
MSDA = ('Fail to import ``MultiScaleDeformableAttention`` from ``mmcv.ops.multi_scale_deform_attn``, '
        'You should install ``mmcv`` rather than ``mmcv-lite`` if you need this module. ')

_CHILD = r'''
import importlib.util, json, logging, sys, warnings
# would this stack print the OneDL line? (compat.py loaded alone: a file-system check, no imports)
spec = importlib.util.spec_from_file_location('compat_alone', 'wsss_mmseg/compat.py')
alone = importlib.util.module_from_spec(spec)
spec.loader.exec_module(alone)
onedl_expected = alone.onedl_message_expected()
import wsss_mmseg  # compat.apply() + registration of every component
from wsss_mmseg import compat
ops_shim = bool(getattr(sys.modules.get('mmcv.ops'), '__wsss_mmseg_shim__', False))
import mmengine.logging as mel
# things that must still be visible after the fixes:
warnings.warn('an unrelated warning', UserWarning)
warnings.warn_explicit('another warning of that module', UserWarning, 'transformer.py', 1,
                       module='mmcv.cnn.bricks.transformer')
warnings.warn_explicit(MSDA, UserWarning, 'elsewhere.py', 1, module='some.other.module')
mel.print_log('an unrelated print_log line')
mel.print_log('Could not import OneDL', level=logging.INFO)  # not the debug print: shown
print('RESULT=' + json.dumps(dict(applied=sorted(compat.applied()), onedl_expected=onedl_expected,
                                  ops_shim=ops_shim)))
'''


def test_import_is_quiet_and_other_messages_still_appear():
    code = f'MSDA = {MSDA!r}\n' + _CHILD
    res = subprocess.run([sys.executable, '-W', 'default', '-c', code], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    # silenced: the OneDL debug print (only the child's own INFO call is left) and mmcv's
    # MSDA warning from transformer.py
    assert res.stdout.count('Could not import OneDL') == 1
    assert 'bricks/transformer.py' not in res.stderr
    # still shown
    for text in ('an unrelated warning', 'another warning of that module', 'an unrelated print_log line'):
        assert text in out, text
    assert 'elsewhere.py:1: UserWarning: Fail to import ``MultiScaleDeformableAttention``' in res.stderr
    result = json.loads([ln for ln in res.stdout.splitlines() if ln.startswith('RESULT=')][0][7:])
    assert ('onedl_message' in result['applied']) == result['onedl_expected']
    assert ('msda_warning' in result['applied']) == result['ops_shim']


def test_quiet_print_log_routes_only_the_onedl_debug_print(caplog):
    calls = []

    def original(msg, logger=None, level=logging.INFO):
        calls.append((msg, logger, level))

    quiet = compat.quiet_print_log(original)
    with caplog.at_level(logging.DEBUG, logger='mmseg'):
        quiet('Could not import OneDL', level=logging.DEBUG)
    assert calls == [] and quiet.routed == 1
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == \
        [('mmseg', logging.DEBUG, 'Could not import OneDL')]
    quiet('Could not import OneDL', level=logging.INFO)            # another level
    quiet('Could not import OneDL', logger='current', level=logging.DEBUG)  # a logger given
    quiet('Could not import OneDL!', level=logging.DEBUG)          # another message
    quiet('real error', level=logging.ERROR)
    assert calls == [('Could not import OneDL', None, logging.INFO),
                     ('Could not import OneDL', 'current', logging.DEBUG),
                     ('Could not import OneDL!', None, logging.DEBUG),
                     ('real error', None, logging.ERROR)]
    assert quiet.routed == 1


def test_print_log_wrapper_is_removed_after_the_import(monkeypatch):
    import mmengine.logging as mel
    original = mel.print_log
    monkeypatch.setattr(compat, 'onedl_message_expected', lambda: True)
    monkeypatch.setattr(compat, '_APPLIED', {})
    seen = []
    real_import = compat.importlib.import_module

    def fake_import(name):
        seen.append((name, mel.print_log is not original))
        mel.print_log('Could not import OneDL', level=logging.DEBUG)  # what onedl-mmseg does
        return real_import(name)

    monkeypatch.setattr(compat.importlib, 'import_module', fake_import)
    compat._fix_onedl_message()
    assert seen == [('mmseg.datasets', True)]
    assert mel.print_log is original
    assert 'onedl_message' in compat.applied()

    def failing_import(name):
        raise ImportError('a real error in mmseg.datasets')

    monkeypatch.setattr(compat.importlib, 'import_module', failing_import)
    with pytest.raises(ImportError, match='real error'):  # not hidden
        compat._fix_onedl_message()
    assert mel.print_log is original


def test_onedl_condition(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, 'mmseg.datasets', types.ModuleType('mmseg.datasets'))
    assert not compat.onedl_message_expected()  # already imported: already printed (or not)
    monkeypatch.delitem(sys.modules, 'mmseg.datasets')
    fake = types.SimpleNamespace(submodule_search_locations=[str(tmp_path)])
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name: fake if name == 'mmseg' else None)
    assert not compat.onedl_message_expected()  # upstream mmseg: no optional OneDL modules
    (tmp_path / 'datasets' / 'transforms').mkdir(parents=True)
    (tmp_path / 'datasets' / 'transforms' / 'loading_onedl.py').write_text('')
    assert compat.onedl_message_expected()
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None)
    assert not compat.onedl_message_expected()  # no mmseg at all


def test_msda_filter_is_exact_and_conditional(monkeypatch):
    with warnings.catch_warnings(record=True) as rec:
        warnings.resetwarnings()
        warnings.simplefilter('always')
        monkeypatch.setattr(compat, '_APPLIED', {})  # full mmcv: shim not active
        compat._fix_msda_warning()
        assert 'msda_warning' not in compat.applied()
        warnings.warn_explicit(MSDA, UserWarning, 'transformer.py', 33, module='mmcv.cnn.bricks.transformer')
        assert len(rec) == 1  # not filtered where the condition does not hold
        monkeypatch.setattr(compat, '_APPLIED', {'mmcv_ops': 'shim'})
        compat._fix_msda_warning()
        assert 'msda_warning' in compat.applied()
        warnings.warn_explicit(MSDA, UserWarning, 'transformer.py', 33, module='mmcv.cnn.bricks.transformer')
        assert len(rec) == 1  # filtered
        warnings.warn_explicit(MSDA, UserWarning, 'x.py', 1, module='mmcv.cnn.bricks.transformer_v2')
        warnings.warn_explicit('Fail to import ``Something``', UserWarning, 'transformer.py', 1,
                               module='mmcv.cnn.bricks.transformer')
        warnings.warn_explicit(MSDA, DeprecationWarning, 'transformer.py', 1,
                               module='mmcv.cnn.bricks.transformer')
        assert len(rec) == 4
