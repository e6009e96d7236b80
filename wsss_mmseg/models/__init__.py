"""Registered mmseg components (thin wrappers over the pure functions)."""
from . import (affinity_net, cgl_loss, classic, clip_encoders, data_preprocessor,  # noqa: F401
               generators, maskclip, maskclip_plus, pacl, postprocessors, random_walk, wrappers)
