"""``PseudoLabelSegDataset``: images + pseudo masks + confidence maps for mmseg training.

Layout (as written by the pseudo-label job, :class:`wsss_mmseg.pseudo.io.OutputLayout`)::

    <img_path>/<id><img_suffix>              training images (e.g. VOC JPEGImages)
    <work_dir>/masks/<id>.png                pseudo masks (0 bg, k+1 class k, 255 ignore)
    <work_dir>/confidence/<id>.png           16-bit confidence, value = round(conf * 65535)

Configured like mmseg's ``PascalVOCDataset``::

    dict(type='PseudoLabelSegDataset', data_root='data/VOCdevkit/VOC2012',
         ann_file='ImageSets/Segmentation/train_aug.txt',
         data_prefix=dict(img_path='JPEGImages', seg_map_path='/work/pseudo/masks'),
         pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadPseudoLabel'), ...,
                   dict(type='PackSegInputsWithConfidence')])

``data_prefix`` entries may be absolute (masks usually live in a work dir) or
relative to ``data_root``. The confidence folder is ``conf_dir`` (or
``data_prefix['conf_path']``; absolute or relative to ``data_root``), by default
the sibling ``confidence/`` of the masks folder. Every data info carries
``conf_path`` next to ``img_path`` and ``seg_map_path``.

``ann_file`` lists one id per line; without it every image below ``img_path``
is used (mmseg's ``BaseSegDataset`` behaviour). A non-empty ``ann_file`` that
does not exist, or a missing image folder, raises ``FileNotFoundError``. Missing
mask/confidence files raise ``FileNotFoundError`` naming the file when
``LoadPseudoLabel`` reads them; ``check_files=True`` checks all files eagerly
and lists every missing one.

``metainfo`` defaults to PASCAL VOC (21 classes, VOC palette). For COCO or
custom class lists pass ``metainfo=dict(classes=(...))``; without a palette the
VOC colour map extended to the number of classes is used (the colours of the
mask PNGs). Mask values index ``classes`` directly: mmseg's class-subset label
remapping (``label_map``) is disabled, because the masks were generated for the
configured class list.
"""
from __future__ import annotations

import copy
import os.path as osp
from typing import List, Optional

from mmseg.datasets import BaseSegDataset, PascalVOCDataset
from mmseg.registry import DATASETS

from ..pseudo.io import voc_palette

__all__ = ['PseudoLabelSegDataset']

_MAX_LISTED = 20


@DATASETS.register_module()
class PseudoLabelSegDataset(BaseSegDataset):
    """Segmentation dataset whose labels are pseudo masks with confidence maps.

    Args:
        ann_file: File with one image id per line ('' = all images under ``img_path``).
        img_suffix: Image file suffix.
        seg_map_suffix: Mask file suffix.
        conf_dir: Confidence folder (absolute or relative to ``data_root``);
            None = ``data_prefix['conf_path']`` if given, else the sibling
            ``confidence`` folder of ``data_prefix['seg_map_path']``.
        conf_suffix: Confidence file suffix (``.png``: 16-bit PNG; ``.npy``:
            float array).
        check_files: Check at construction that every image, mask and
            confidence file exists (raises ``FileNotFoundError`` listing them).
        metainfo: Dataset meta (``classes``, ``palette``); default PASCAL VOC.
        **kwargs: Other ``BaseSegDataset`` arguments (``data_root``,
            ``data_prefix``, ``pipeline``, ``ignore_index`` ...).
    """

    METAINFO = copy.deepcopy(PascalVOCDataset.METAINFO)

    def __init__(self, ann_file: str = '', img_suffix: str = '.jpg',
                 seg_map_suffix: str = '.png', conf_dir: Optional[str] = None,
                 conf_suffix: str = '.png', check_files: bool = False,
                 metainfo: Optional[dict] = None, **kwargs) -> None:
        data_prefix = dict(kwargs.pop('data_prefix', None) or {})
        if not data_prefix.get('seg_map_path'):
            raise ValueError("PseudoLabelSegDataset needs data_prefix['seg_map_path'], the "
                             'folder of the pseudo masks')
        if conf_dir is not None:
            if data_prefix.get('conf_path') not in (None, conf_dir):
                raise ValueError(f"both conf_dir={conf_dir!r} and data_prefix['conf_path']="
                                 f"{data_prefix['conf_path']!r} are given; use one")
            data_prefix['conf_path'] = conf_dir
        data_prefix.setdefault('img_path', '')
        self.conf_suffix = conf_suffix
        self.check_files = bool(check_files)
        if metainfo is not None and 'classes' in metainfo and 'palette' not in metainfo:
            metainfo = dict(metainfo,
                            palette=voc_palette(min(len(metainfo['classes']), 256)).tolist())
        super().__init__(ann_file=ann_file, img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         metainfo=metainfo, data_prefix=data_prefix, **kwargs)

    @classmethod
    def get_label_map(cls, new_classes=None) -> None:
        """No label remapping: pseudo-mask values index the configured classes."""
        return None

    def load_data_list(self) -> List[dict]:
        """List images, masks and confidence maps.

        Returns:
            Data infos with ``img_path``, ``seg_map_path``, ``conf_path``, ...

        Raises:
            FileNotFoundError: Missing ``ann_file`` or image folder; with
                ``check_files``, any missing image/mask/confidence file.
        """
        if self.ann_file and not osp.isfile(self.ann_file):
            raise FileNotFoundError(f'ann_file not found: {self.ann_file}')
        img_dir = self.data_prefix.get('img_path')
        if not img_dir or not osp.isdir(img_dir):
            raise FileNotFoundError(f'image folder not found: {img_dir!r}')
        mask_dir = self.data_prefix['seg_map_path']
        conf_dir = self.data_prefix.get('conf_path') or osp.join(
            osp.dirname(osp.normpath(mask_dir)), 'confidence')
        data_list = super().load_data_list()
        for info in data_list:
            rel = osp.relpath(info['seg_map_path'], mask_dir)
            info['conf_path'] = osp.join(conf_dir, rel[:len(rel) - len(self.seg_map_suffix)]
                                         + self.conf_suffix)
        if self.check_files:
            missing = [info[k] for info in data_list
                       for k in ('img_path', 'seg_map_path', 'conf_path')
                       if not osp.isfile(info[k])]
            if missing:
                listed = '\n  '.join(missing[:_MAX_LISTED])
                more = (f'\n  ... and {len(missing) - _MAX_LISTED} more'
                        if len(missing) > _MAX_LISTED else '')
                raise FileNotFoundError(f'{len(missing)} file(s) of {type(self).__name__} are '
                                        f'missing:\n  {listed}{more}')
        return data_list
