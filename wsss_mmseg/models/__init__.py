"""Registered mmseg components (thin wrappers over the pure functions)."""
from . import (affinity_net, cgl_loss, classic, classic_acol, clip_encoders,  # noqa: F401
               data_preprocessor, generators, maskclip, maskclip_plus, pacl, postprocessors,
               random_walk, wrappers)
