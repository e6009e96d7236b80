"""Registered mmseg components (thin wrappers over the pure functions)."""
from . import wrappers  # noqa: F401
