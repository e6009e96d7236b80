"""Image-level label sources for the pseudo-label job.

These are *not* mmseg training datasets: they need no pipeline and load no
pixels. Each one is an ordered, indexable collection of records::

    dict(id='2007_000032',                  # output name (may contain '/')
         img_path='/data/VOC2012/JPEGImages/2007_000032.jpg',
         label_ids=[0, 14],                 # 0-based class indices, no background
         gt_path='/data/.../2007_000032.png' or None)

``len(ds)``, ``ds[i]`` and ``iter(ds)`` work; ``ds.ids`` lists the ids (unique,
in source order); ``ds.class_names`` is the class table the indices refer to
(or None); ``ds.num_classes`` its length. ``ds[i]`` may raise for a single
broken entry (e.g. a missing GT mask when labels are derived from masks); the
job records that as a failure of that image and goes on.

Path rules (all three sources):

* Paths given as constructor arguments (``split``, ``img_dir``, ``labels``,
  ``gt_dir``, ``ann_file``) are joined to ``data_root`` when relative (the mmseg
  convention); absolute ones are used as they are.
* Paths *inside* list/label files are relative to the data root (or image
  folder). Absolute paths and paths whose ``..`` parts leave that root are
  refused with a ``ValueError`` naming the file and line.
* Duplicate ids are an error naming the file and both occurrences.

Label file formats, encodings and the reading rules (BOM skipped; not UTF-8, an empty file, JSON
nested too deeply are errors naming the file; malformed CSV too) live in
:mod:`wsss_mmseg.datasets.label_files` (:func:`load_label_file`: ``.json``, IRN ``.npy``,
``id idx idx ...`` text).

Indices are 0-based class indices (background excluded); their range is
checked by the job against the generator's class table.

One module per source: the base class :mod:`~wsss_mmseg.datasets.image_label_source`,
:mod:`~wsss_mmseg.datasets.voc_image_labels`, :mod:`~wsss_mmseg.datasets.coco_image_labels`
and :mod:`~wsss_mmseg.datasets.folder_image_labels`; this module gathers them.
"""
from __future__ import annotations

from .coco_image_labels import COCOImageLabels
from .folder_image_labels import FolderImageLabels, UnknownClassError
from .image_label_source import ImageLabelSource
from .label_files import IMAGE_EXTENSIONS, labels_from_mask, load_label_file, safe_relative_path
from .voc_image_labels import VOCImageLabels

__all__ = [
    'ImageLabelSource', 'VOCImageLabels', 'COCOImageLabels', 'FolderImageLabels',
    'UnknownClassError', 'load_label_file', 'safe_relative_path',
    'labels_from_mask', 'IMAGE_EXTENSIONS',
]

