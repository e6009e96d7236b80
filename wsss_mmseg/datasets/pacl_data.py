"""Training datasets for PACL (spec maskclip_pacl.md §3.3, §3.8), registered in mmseg's registries.

* :class:`PACLImageLabelDataset` -- images + a multi-hot image-level label vector
  ``img_labels`` (C,), from any image-level label source (``VOCImageLabels``,
  ``COCOImageLabels``, ``FolderImageLabels``). Optionally a pseudo-label map per image
  (``seg_map_dir``) for the dense prior. Pack with
  ``PackSegInputs(meta_keys=(..., 'img_labels'))``.
* :class:`PACLCaptionDataset` -- image-caption pairs from a COCO-captions-style JSON
  (``images: [{id, file_name}]``, ``annotations: [{image_id, caption}]``).
  :class:`SampleCaption` picks one caption per image and load; pack ``'caption'``.

Empty label sets (``empty_labels``): ``'skip'`` (default) drops the image, ``'background'``
keeps it as a background-only image (all classes negative in the multi-label loss),
``'error'`` raises ``ValueError`` naming the image.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.dataset import BaseDataset
from mmengine.logging import print_log
from mmseg.registry import DATASETS, TRANSFORMS

from . import image_labels  # noqa: F401  (registers the label sources)

__all__ = ['PACLImageLabelDataset', 'PACLCaptionDataset', 'SampleCaption', 'EMPTY_LABEL_MODES',
           'multi_hot', 'load_caption_file']

EMPTY_LABEL_MODES = ('skip', 'background', 'error')
PathLike = Union[str, os.PathLike]


def multi_hot(label_ids: Sequence[int], num_classes: int) -> np.ndarray:
    """``(num_classes,)`` float32 vector with ones at ``label_ids``.

    Raises:
        ValueError: A label is outside ``[0, num_classes)``.
    """
    vec = np.zeros((int(num_classes),), dtype=np.float32)
    for c in label_ids:
        if not 0 <= int(c) < num_classes:
            raise ValueError(f'label id {c} out of range for {num_classes} classes')
        vec[int(c)] = 1.0
    return vec


@DATASETS.register_module()
class PACLImageLabelDataset(BaseDataset):
    """Images with image-level labels as multi-hot vectors, for label-PACL training.

    Args:
        source: Config of an image-level label source, e.g.
            ``dict(type='VOCImageLabels', data_root=..., split=..., labels='cls_labels.json')``.
        num_classes: Length of the multi-hot vector (default: the source's class count).
        empty_labels: ``'skip'``, ``'background'`` or ``'error'`` (module docstring).
        seg_map_dir: Optional folder of per-image label maps ``<id><seg_map_suffix>`` (pseudo
            masks for the dense prior; load them with ``LoadAnnotations``/``LoadPseudoLabel``).
        seg_map_suffix: Suffix of those maps.
        conf_dir: Optional folder of confidence maps ``<id>.png`` (``LoadPseudoLabel``).
        kwargs: :class:`mmengine.dataset.BaseDataset` arguments (``pipeline``, ``test_mode``...).
    """

    def __init__(self, *, source: Dict[str, Any], num_classes: Optional[int] = None,
                 empty_labels: str = 'skip', seg_map_dir: Optional[PathLike] = None,
                 seg_map_suffix: str = '.png', conf_dir: Optional[PathLike] = None, **kwargs: Any) -> None:
        if empty_labels not in EMPTY_LABEL_MODES:
            raise ValueError(f'empty_labels must be one of {EMPTY_LABEL_MODES}, got {empty_labels!r}')
        self.source_cfg = dict(source)
        self.num_classes_arg = num_classes
        self.empty_labels = empty_labels
        self.seg_map_dir = None if seg_map_dir is None else Path(seg_map_dir)
        self.seg_map_suffix = seg_map_suffix
        self.conf_dir = None if conf_dir is None else Path(conf_dir)
        self.num_skipped = 0
        kwargs.setdefault('serialize_data', False)
        super().__init__(**kwargs)

    def load_data_list(self) -> List[dict]:
        """One record per image: ``img_path``, ``img_labels`` (C,), ``label_ids``, optional maps."""
        src = DATASETS.build(self.source_cfg)
        n = self.num_classes_arg if self.num_classes_arg is not None else src.num_classes
        if n is None:
            raise ValueError('PACLImageLabelDataset: the label source has no class names; give num_classes')
        names = list(src.class_names) if src.class_names is not None else [str(i) for i in range(n)]
        self._metainfo.setdefault('classes', tuple(names))
        records = []
        self.num_skipped = 0
        for rec in src:
            labels = list(rec['label_ids'])
            if not labels:
                if self.empty_labels == 'error':
                    raise ValueError(f"image {rec['id']} ({rec['img_path']}) has an empty label set "
                                     "(empty_labels='error'; use 'skip' or 'background')")
                if self.empty_labels == 'skip':
                    self.num_skipped += 1
                    continue
            info = dict(img_path=rec['img_path'], img_id=rec['id'], label_ids=labels,
                        img_labels=multi_hot(labels, n), seg_fields=[], reduce_zero_label=False)
            if self.seg_map_dir is not None:
                info['seg_map_path'] = str(self.seg_map_dir / f"{rec['id']}{self.seg_map_suffix}")
            if self.conf_dir is not None:
                info['conf_path'] = str(self.conf_dir / f"{rec['id']}.png")
            records.append(info)
        if self.num_skipped:
            print_log(f'PACLImageLabelDataset: skipped {self.num_skipped} images with an empty label set',
                      logger='current')
        if not records:
            raise ValueError(f'PACLImageLabelDataset: no images with labels in {src!r}')
        return records


def load_caption_file(ann_file: PathLike, img_dir: PathLike) -> List[Dict[str, Any]]:
    """Read a COCO-captions-style JSON into ``[{img_path, img_id, captions}]``.

    Args:
        ann_file: JSON with ``images`` (``id``, ``file_name``) and ``annotations``
            (``image_id``, ``caption``).
        img_dir: Folder the ``file_name`` entries are relative to.

    Returns:
        One entry per image that has at least one caption, in ``images`` order.

    Raises:
        FileNotFoundError: The JSON or a referenced image is missing (all missing files counted,
            the first ones named).
        ValueError: Malformed JSON, unknown ``image_id``, empty caption, duplicate image id.
    """
    path = Path(ann_file)
    if not path.is_file():
        raise FileNotFoundError(f'caption file not found: {path}')
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except json.JSONDecodeError as exc:
        raise ValueError(f'caption file {path} is not valid JSON: {exc}') from exc
    if not isinstance(data, dict) or not isinstance(data.get('images'), list) \
            or not isinstance(data.get('annotations'), list):
        raise ValueError(f"caption file {path} must be a JSON object with 'images' and 'annotations' lists")
    root = Path(img_dir)
    files: Dict[Any, str] = {}
    for i, im in enumerate(data['images']):
        if not isinstance(im, dict) or 'id' not in im or 'file_name' not in im:
            raise ValueError(f"{path}: images[{i}] needs 'id' and 'file_name'")
        if im['id'] in files:
            raise ValueError(f"{path}: duplicate image id {im['id']!r}")
        files[im['id']] = str(im['file_name'])
    caps: Dict[Any, List[str]] = {}
    for i, ann in enumerate(data['annotations']):
        if not isinstance(ann, dict) or 'image_id' not in ann or 'caption' not in ann:
            raise ValueError(f"{path}: annotations[{i}] needs 'image_id' and 'caption'")
        if ann['image_id'] not in files:
            raise ValueError(f"{path}: annotations[{i}] refers to unknown image_id {ann['image_id']!r}")
        cap = str(ann['caption']).strip()
        if not cap:
            raise ValueError(f"{path}: annotations[{i}] has an empty caption")
        caps.setdefault(ann['image_id'], []).append(cap)
    out, missing = [], []
    for image_id, name in files.items():
        if image_id not in caps:
            continue
        img_path = root / name
        if not img_path.is_file():
            missing.append(str(img_path))
            continue
        out.append(dict(img_path=str(img_path), img_id=image_id, captions=caps[image_id]))
    if missing:
        raise FileNotFoundError(f'caption file {path} references {len(missing)} missing image(s) under {root}, '
                                f'e.g. {missing[:3]}')
    if not out:
        raise ValueError(f'caption file {path} has no captioned images')
    return out


@DATASETS.register_module()
class PACLCaptionDataset(BaseDataset):
    """Image-caption pairs (COCO-captions JSON) for caption-PACL training.

    Each record has ``img_path`` and ``captions`` (all captions of the image);
    :class:`SampleCaption` in the pipeline picks the one used in a step.

    Args:
        ann_file: Caption JSON (relative to ``data_root`` if given).
        img_dir: Image folder (relative to ``data_root`` if given).
        kwargs: :class:`mmengine.dataset.BaseDataset` arguments.
    """

    def __init__(self, *, ann_file: PathLike, img_dir: PathLike = '', **kwargs: Any) -> None:
        self.img_dir = str(img_dir)
        kwargs.setdefault('serialize_data', False)
        super().__init__(ann_file=str(ann_file), **kwargs)

    def load_data_list(self) -> List[dict]:
        """Records ``img_path``, ``img_id``, ``captions``."""
        img_dir = self.img_dir
        if self.data_root and not os.path.isabs(img_dir):
            img_dir = os.path.join(self.data_root, img_dir)
        records = load_caption_file(self.ann_file, img_dir)
        for r in records:
            r.update(seg_fields=[], reduce_zero_label=False)
        return records


@TRANSFORMS.register_module()
class SampleCaption(BaseTransform):
    """Put one of ``results['captions']`` into ``results['caption']``.

    Args:
        mode: ``'random'`` (Python's ``random``, seeded by mmengine's ``randomness``) or ``'first'``.
    """

    def __init__(self, mode: str = 'random') -> None:
        if mode not in ('random', 'first'):
            raise ValueError(f"SampleCaption mode must be 'random' or 'first', got {mode!r}")
        self.mode = mode

    def transform(self, results: dict) -> dict:
        """Select the caption."""
        caps = results.get('captions')
        if not caps:
            raise KeyError(f"SampleCaption: no 'captions' for {results.get('img_path', '?')}")
        results['caption'] = caps[0] if self.mode == 'first' else random.choice(caps)
        return results
