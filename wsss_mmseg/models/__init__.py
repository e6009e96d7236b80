"""Registered mmseg components (thin wrappers over the pure functions)."""
from . import clip_encoders, generators, postprocessors, wrappers  # noqa: F401
