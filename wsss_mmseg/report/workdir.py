"""Read what a pseudo-label job left in its work dir (see :mod:`wsss_mmseg.pseudo.job`).

Used: ``summary.json`` (keys ``config``, ``counts``, ``failures``, ``timings``,
``fingerprint``; all optional), ``masks/<id>.png`` and ``confidence/<id>.png``
through the public readers of :mod:`wsss_mmseg.pseudo.io`, and the label
source rebuilt from ``summary['config']['pseudo_dataset']`` through mmseg's
``DATASETS`` registry (image and GT paths per id). Other files are ignored.

A folder is accepted when it has ``summary.json`` or a ``masks/`` folder; a
job killed before its summary still gets a report (from the mask files, with
a note saying what is missing).
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Union

PathLike = Union[str, os.PathLike]

__all__ = ['ReportArgumentError', 'NotAWorkDirError', 'PseudoWorkDir', 'ImageEntry']


class ReportArgumentError(ValueError):
    """A bad argument of the report (folder, option value); the message names it."""


class NotAWorkDirError(ReportArgumentError):
    """The folder is not a pseudo-label work dir (or its summary is unreadable)."""


class ImageEntry(dict):
    """``dict(id, img_path, gt_path, label_ids)``; paths/labels may be None."""


class PseudoWorkDir:
    """A pseudo-label work dir opened for reading.

    Args:
        work_dir: The folder a pseudo-label job wrote (``--work-dir``).

    Raises:
        NotAWorkDirError: Missing folder, neither ``summary.json`` nor
            ``masks/``, or a ``summary.json`` that is not a JSON object.
    """

    def __init__(self, work_dir: PathLike) -> None:
        self.path = Path(work_dir)
        if not self.path.is_dir():
            raise NotAWorkDirError(f'{self.path}: no such folder')
        self.mask_dir = self.path / 'masks'
        self.confidence_dir = self.path / 'confidence'
        summary_path = self.path / 'summary.json'
        self.summary: Dict[str, Any] = {}
        self.notes: List[str] = []
        if summary_path.is_file():
            try:
                data = json.loads(summary_path.read_text(encoding='utf-8'))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise NotAWorkDirError(f'{summary_path}: not readable as JSON ({exc})') from exc
            if not isinstance(data, dict):
                raise NotAWorkDirError(f'{summary_path}: expected a JSON object, got '
                                       f'{type(data).__name__}')
            self.summary = data
        elif self.mask_dir.is_dir():
            self.notes.append('summary.json is missing (job still running or killed): '
                              'run settings, timings and failures are unknown')
        else:
            raise NotAWorkDirError(
                f'{self.path} is not a pseudo-label work dir: it has neither summary.json '
                'nor a masks/ folder (make one with tools/generate_pseudo.py)')
        self.dataset = self._build_dataset()
        self.class_names = self._class_names()

    # ------------------------------------------------------------ summary
    @property
    def config(self) -> Dict[str, Any]:
        """The job's config (empty without summary)."""
        cfg = self.summary.get('config')
        return cfg if isinstance(cfg, dict) else {}

    @property
    def failures(self) -> List[Dict[str, Any]]:
        """Failed images (``dict(id, img_path, stage, reason)``) from the summary."""
        fails = self.summary.get('failures')
        return [f for f in fails if isinstance(f, dict)] if isinstance(fails, list) else []

    def conf_thresholds(self) -> List[float]:
        """The μ values the job evaluated (``pseudo_job.eval_conf_thresholds``)."""
        job = self.summary.get('job')
        if not isinstance(job, dict):
            job = self.config.get('pseudo_job') or {}
        vals = job.get('eval_conf_thresholds') or []
        out = []
        for v in vals if isinstance(vals, list) else []:
            try:
                out.append(float(v))
            except (TypeError, ValueError):
                continue
        return [v for v in out if 0.0 <= v <= 1.0]

    # ------------------------------------------------------------ dataset
    def _build_dataset(self) -> Any:
        ds_cfg = self.config.get('pseudo_dataset')
        if not isinstance(ds_cfg, dict):
            if self.summary:
                self.notes.append('summary.json has no config.pseudo_dataset: images and GT '
                                  'are not shown')
            return None
        try:
            import wsss_mmseg  # noqa: F401  (registers the label sources)
            from mmseg.registry import DATASETS
            return DATASETS.build(copy.deepcopy(ds_cfg))
        except Exception as exc:  # any failure only means "no images in the report"
            self.notes.append(f'the label source {ds_cfg.get("type")!r} could not be rebuilt '
                              f'({type(exc).__name__}: {exc}): images and GT are not shown')
            return None

    def _class_names(self) -> Optional[List[str]]:
        names = getattr(self.dataset, 'class_names', None)
        if names:
            return [str(n) for n in names]
        gen = self.config.get('generator')
        table = gen.get('class_table') if isinstance(gen, dict) else None
        if isinstance(table, str):
            try:
                from wsss_mmseg.text.vocab import class_names
                return class_names(table)
            except KeyError:
                return None
        if isinstance(table, list) and table:
            return [str(n) for n in table]
        return None

    def ids(self) -> List[str]:
        """Image ids: the label source's, else the mask files' (sorted)."""
        if self.dataset is not None:
            return list(self.dataset.ids)
        if not self.mask_dir.is_dir():
            return []
        return sorted(p.relative_to(self.mask_dir).with_suffix('').as_posix()
                      for p in self.mask_dir.rglob('*.png') if not p.name.startswith('.'))

    def entries(self) -> Iterator[ImageEntry]:
        """One :class:`ImageEntry` per id, streamed (paths None where unknown)."""
        if self.dataset is None:
            for image_id in self.ids():
                yield ImageEntry(id=image_id, img_path=None, gt_path=None, label_ids=None)
            return
        for idx in range(len(self.dataset)):
            try:
                rec = self.dataset[idx]
                yield ImageEntry(id=rec['id'], img_path=rec.get('img_path'),
                                 gt_path=rec.get('gt_path'), label_ids=rec.get('label_ids'))
            except Exception:  # one broken record (the job recorded it as a failure)
                image_id = self.dataset.ids[idx]
                yield ImageEntry(id=image_id, img_path=None, gt_path=None, label_ids=None)

    def mask_path(self, image_id: str) -> Path:
        """``masks/<id>.png``."""
        return self.mask_dir / f'{image_id}.png'

    def confidence_path(self, image_id: str) -> Path:
        """``confidence/<id>.png``."""
        return self.confidence_dir / f'{image_id}.png'
