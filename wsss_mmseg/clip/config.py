"""The one place where a component's ``clip=dict(...)`` block meets the plugin's defaults."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from .factory import DEFAULT_CLIP

__all__ = ['merge_clip_cfg']


def merge_clip_cfg(clip: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """``DEFAULT_CLIP`` (ViT-B/16, OpenAI weights) updated with the given block.

    Args:
        clip: A ``clip=dict(model_name=..., pretrained=..., ...)`` block or None.

    Returns:
        A new dict of :func:`wsss_mmseg.clip.factory.build_clip` keyword arguments.

    Raises:
        TypeError: ``clip`` is not a mapping.
    """
    if clip is not None and not isinstance(clip, Mapping):
        raise TypeError(f'clip must be a dict of build_clip arguments, got {type(clip).__name__}: {clip!r}')
    cfg = dict(DEFAULT_CLIP)
    cfg.update(dict(clip or {}))
    return cfg
