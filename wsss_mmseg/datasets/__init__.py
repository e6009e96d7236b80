"""Image-level label sources for the pseudo-label job (registered in ``mmseg.registry.DATASETS``)."""
from . import affinity_labels, saliency, sec_cues  # noqa: F401  (transforms)
from .image_labels import (COCOImageLabels, FolderImageLabels, ImageLabelSource,
                           UnknownClassError, VOCImageLabels, load_label_file)

__all__ = ['ImageLabelSource', 'VOCImageLabels', 'COCOImageLabels', 'FolderImageLabels',
           'UnknownClassError', 'load_label_file']
