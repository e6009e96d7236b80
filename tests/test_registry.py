"""The plugin registers its components without clashing with mmseg's own names."""
import subprocess
import sys

import wsss_mmseg  # noqa: F401
from wsss_mmseg.__main__ import registered_components


def test_plugin_first_then_mmseg_models_imports_cleanly():
    # custom_imports loads the plugin before mmseg.models: no name may clash with mmseg's.
    code = 'import wsss_mmseg, mmseg.models, mmseg.datasets, mmseg.engine, mmseg.evaluation'
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_listing_contains_components():
    comps = registered_components()
    assert 'FrozenCLIPImageEncoder' in comps['mmseg.MODELS']
    assert 'FrozenCLIPTextEncoder' in comps['mmseg.MODELS']
    assert 'CPUCompatibleDDP' in comps['mmengine.MODEL_WRAPPERS']
    assert {'PseudoLabelHook', 'AdversarialErasingHook', 'MaskCLIPPlusPhaseHook',
            'NaNLossGuardHook'} <= set(comps['mmseg.HOOKS'])
    assert {'MaskCLIPPlusSegmentor', 'ASPPV2Head', 'MaskCLIPSegmentor', 'PACLHead'} <= set(comps['mmseg.MODELS'])


def test_cli_lists_registries():
    proc = subprocess.run([sys.executable, '-m', 'wsss_mmseg'], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert 'mmseg.MODELS' in proc.stdout and 'FrozenCLIPImageEncoder' in proc.stdout
