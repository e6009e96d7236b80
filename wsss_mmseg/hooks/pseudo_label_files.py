"""The pseudo-label files a training reads: its ``PseudoLabelSegDataset`` instances and their folders.

``PseudoLabelHook`` (:mod:`wsss_mmseg.hooks.pseudo_label_hook`, which re-exports the public
names) finds with them the folder the train dataset reads, and checks that every training
sample has its mask and confidence file.
"""
from __future__ import annotations

import os.path as osp
from typing import Any, Dict, List, Mapping, Sequence, Tuple

__all__ = ['pseudo_datasets_of', 'label_dirs_of', 'missing_label_files', 'list_missing']

_MAX_LISTED = 20


def pseudo_datasets_of(dataset: Any) -> List[Any]:
    """The ``PseudoLabelSegDataset`` instances inside a (possibly wrapped) dataset.

    Looks through ``.datasets`` (concatenations) and ``.dataset`` (repeat,
    class-balanced, mix, subset wrappers).

    Args:
        dataset: The train dataset.

    Returns:
        The datasets found, in traversal order.
    """
    from ..datasets.pseudo_seg import PseudoLabelSegDataset
    found: List[Any] = []
    seen = set()
    queue = [dataset]
    while queue:
        ds = queue.pop(0)
        if ds is None or id(ds) in seen:
            continue
        seen.add(id(ds))
        if isinstance(ds, PseudoLabelSegDataset):
            found.append(ds)
            continue
        queue.extend(list(getattr(ds, 'datasets', None) or []))
        inner = getattr(ds, 'dataset', None)
        if inner is not None:
            queue.append(inner)
    return found


def label_dirs_of(dataset: Any) -> Tuple[str, str]:
    """Mask and confidence folders a ``PseudoLabelSegDataset`` reads.

    Args:
        dataset: A built ``PseudoLabelSegDataset``.

    Returns:
        ``(mask_dir, conf_dir)`` as absolute, normalised paths.
    """
    mask_dir = dataset.data_prefix['seg_map_path']
    conf_dir = dataset.data_prefix.get('conf_path') or osp.join(
        osp.dirname(osp.normpath(mask_dir)), 'confidence')
    return osp.abspath(mask_dir), osp.abspath(conf_dir)


def missing_label_files(datasets: Sequence[Any]) -> List[Dict[str, Any]]:
    """Samples whose mask or confidence file does not exist.

    Args:
        datasets: Built ``PseudoLabelSegDataset`` instances.

    Returns:
        One dict per incomplete sample: ``dataset`` (position in
        ``datasets``), ``index``, ``img_path``, ``missing`` (list of paths).
    """
    out: List[Dict[str, Any]] = []
    for d, ds in enumerate(datasets):
        for i in range(len(ds)):
            info = ds.get_data_info(i)
            missing = [info[k] for k in ('seg_map_path', 'conf_path')
                       if not info.get(k) or not osp.isfile(info[k])]
            if missing:
                out.append(dict(dataset=d, index=i, img_path=info.get('img_path'),
                                missing=missing))
    return out


def list_missing(missing: Sequence[Mapping[str, Any]]) -> str:
    """The samples without label files, for messages (at most 20 lines and a count).

    Args:
        missing: :func:`missing_label_files` output.

    Returns:
        Multi-line text.
    """
    lines = [f'  {m["img_path"]}: no {", ".join(m["missing"])}' for m in missing[:_MAX_LISTED]]
    if len(missing) > _MAX_LISTED:
        lines.append(f'  ... and {len(missing) - _MAX_LISTED} more')
    return '\n'.join(lines)
