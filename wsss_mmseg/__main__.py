"""``python -m wsss_mmseg``: list what the plugin registers, by registry.

Usage::

    python -m wsss_mmseg            # table of registered components
    python -m wsss_mmseg --json     # the same as JSON
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List


def registered_components() -> Dict[str, List[str]]:
    """Names registered by wsss_mmseg, keyed by registry name (``'mmseg.MODELS'``...)."""
    import wsss_mmseg  # noqa: F401  (registers everything)
    from mmengine import registry as mme_registry
    from mmseg import registry as mmseg_registry

    found: Dict[str, List[str]] = {}
    for scope, module in (('mmseg', mmseg_registry), ('mmengine', mme_registry)):
        for attr in dir(module):
            reg = getattr(module, attr)
            if not isinstance(reg, mme_registry.Registry):
                continue
            names = sorted(name for name, cls in reg.module_dict.items()
                           if getattr(cls, '__module__', '').startswith('wsss_mmseg'))
            if names:
                found[f'{scope}.{attr}'] = names
    return found


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m wsss_mmseg', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--json', action='store_true', help='print JSON')
    args = parser.parse_args(argv)
    import wsss_mmseg
    comps = registered_components()
    if args.json:
        print(json.dumps(dict(version=wsss_mmseg.__version__, registries=comps,
                              compat=wsss_mmseg.compat.applied()), indent=1))
        return 0
    print(f'wsss_mmseg {wsss_mmseg.__version__}')
    for reg, names in comps.items():
        print(f'\n{reg} ({len(names)})')
        for name in names:
            print(f'  {name}')
    fixes = wsss_mmseg.compat.applied()
    print('\ncompatibility fixes active: ' + (', '.join(fixes) if fixes else 'none'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
