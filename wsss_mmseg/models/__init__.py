"""Registered mmseg components (thin wrappers over the pure functions)."""
from . import clip_encoders, wrappers  # noqa: F401
