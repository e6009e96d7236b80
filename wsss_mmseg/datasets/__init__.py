"""Image-level label sources for the pseudo-label job (registered in ``mmseg.registry.DATASETS``)."""
from . import affinity_labels, saliency, sec_cues  # noqa: F401  (transforms)
from .coco_image_labels import COCOImageLabels
from .folder_image_labels import FolderImageLabels, UnknownClassError
from .image_label_source import ImageLabelSource
from .label_files import load_label_file
from .voc_image_labels import VOCImageLabels

__all__ = ['ImageLabelSource', 'VOCImageLabels', 'COCOImageLabels', 'FolderImageLabels',
           'UnknownClassError', 'load_label_file']
