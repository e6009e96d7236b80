"""Pseudo-label generator contract (pure; the registered generators live in ``wsss_mmseg.models``)."""
from .base import (InputPreparer, PseudoLabelGenerator, resize_rgb, validate_image, validate_labels,
                   work_size)

__all__ = ['PseudoLabelGenerator', 'InputPreparer', 'validate_image', 'validate_labels', 'work_size',
           'resize_rgb']
