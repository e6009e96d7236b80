"""Registered mmseg components (thin wrappers over the pure functions)."""
from . import (cgl_loss, clip_encoders, data_preprocessor, generators,  # noqa: F401
               postprocessors, wrappers)
