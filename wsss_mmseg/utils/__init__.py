"""Small shared utilities (image loading)."""
from .images import ImageLoadError, load_rgb, read_image_size

__all__ = ['ImageLoadError', 'load_rgb', 'read_image_size']
