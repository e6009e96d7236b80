"""wsss_mmseg: frozen-CLIP pseudo labels and weakly supervised training for mmseg 1.x.

``custom_imports = dict(imports=['wsss_mmseg'], allow_failed_imports=False)`` in an
mmseg config registers every component of the plugin in mmseg's registries (and the
model wrappers in mmengine's ``MODEL_WRAPPERS``). ``python -m wsss_mmseg`` lists them.
"""
from . import compat
from .version import __version__

compat.apply()

from . import hooks, models  # noqa: E402,F401  (registers components)
from .datasets import (classic_transforms, image_labels, maskclip_plus_transforms,  # noqa: E402,F401
                       pacl_data, pseudo_seg, transforms)

__all__ = ['__version__', 'compat']
