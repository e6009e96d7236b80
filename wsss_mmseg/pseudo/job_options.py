"""The ``pseudo_job`` options of the pseudo-label job: their defaults and validation.

Part of the work-dir rules owned by :mod:`wsss_mmseg.pseudo.workdir` (which re-exports
these names): the tool and ``PseudoLabelHook`` resolve the options alike, and those that
change output bytes enter the settings fingerprint (:mod:`wsss_mmseg.pseudo.fingerprint`).
"""
from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional

import numpy as np

from .options import PseudoConfigError, check_bool, check_fraction, check_int

__all__ = ['JOB_DEFAULTS', 'resolve_job_options']

#: Defaults of ``cfg.pseudo_job`` (validated by :func:`resolve_job_options`).
JOB_DEFAULTS: Dict[str, Any] = dict(
    save_cams=False, cam_dtype='float16', log_interval=50, exif_transpose=False,
    max_image_pixels='pil', max_image_memory=4 << 30, evaluate=True, eval_conf_thresholds=[0.95],
    fsync=True, torch_threads=None, num_workers=0, postprocess_workers=0,
    verify_resume='crc', report=False)


def _default_workers() -> int:
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def resolve_job_options(cfg: Mapping[str, Any], save_cams: Optional[bool] = None) -> Dict[str, Any]:
    """``JOB_DEFAULTS`` updated with ``cfg.pseudo_job``, every value checked.

    Args:
        cfg: Job config (its optional ``pseudo_job`` section).
        save_cams: Command-line override of ``save_cams`` (None: the config's).

    Returns:
        The resolved options (``num_workers``/``postprocess_workers`` filled in).

    Raises:
        PseudoConfigError: Unknown option, wrong type or value; the message names it.
    """
    section = cfg.get('pseudo_job') or {}
    if not isinstance(section, Mapping):
        raise PseudoConfigError(f'pseudo_job must be a dict, got {section!r}')
    unknown = sorted(set(section) - set(JOB_DEFAULTS))
    if unknown:
        raise PseudoConfigError(f'unknown pseudo_job option(s) {unknown}; known: {sorted(JOB_DEFAULTS)}')
    job = dict(JOB_DEFAULTS)
    job.update(section)
    if save_cams is not None:
        job['save_cams'] = save_cams
    for key in ('save_cams', 'exif_transpose', 'evaluate', 'fsync', 'report'):
        job[key] = check_bool(f'pseudo_job.{key}', job[key])
    try:
        dtype = np.dtype(job['cam_dtype'])
    except TypeError as exc:
        raise PseudoConfigError(f'pseudo_job.cam_dtype {job["cam_dtype"]!r} is not a dtype') from exc
    if not np.issubdtype(dtype, np.floating):
        raise PseudoConfigError(f'pseudo_job.cam_dtype must be a float dtype, got {job["cam_dtype"]!r}')
    job['log_interval'] = check_int('pseudo_job.log_interval', job['log_interval'], lo=1)
    if job['max_image_pixels'] not in ('pil', None):
        job['max_image_pixels'] = check_int('pseudo_job.max_image_pixels', job['max_image_pixels'], lo=1)
    if job['max_image_memory'] is not None:
        job['max_image_memory'] = check_int('pseudo_job.max_image_memory', job['max_image_memory'], lo=1)
    thresholds = job['eval_conf_thresholds']
    if thresholds is None:
        thresholds = []
    if not isinstance(thresholds, (list, tuple)):
        raise PseudoConfigError(f'pseudo_job.eval_conf_thresholds must be a list of numbers in [0, 1], '
                                f'got {thresholds!r}')
    job['eval_conf_thresholds'] = [check_fraction('pseudo_job.eval_conf_thresholds', t) for t in thresholds]
    for key in ('torch_threads',):
        if job[key] is not None:
            job[key] = check_int(f'pseudo_job.{key}', job[key], lo=1)
    for key in ('num_workers', 'postprocess_workers'):
        job[key] = _default_workers() if job[key] is None else check_int(f'pseudo_job.{key}', job[key], lo=0)
    if job['verify_resume'] not in ('crc', 'size'):
        raise PseudoConfigError(f"pseudo_job.verify_resume must be 'crc' or 'size', got {job['verify_resume']!r}")
    return job

