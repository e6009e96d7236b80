"""What ``PseudoLabelHook`` does with its pseudo-label folder: reuse, resume, generate or regenerate.

The rules are stated in :mod:`wsss_mmseg.hooks.pseudo_label_hook` ("What it decides", which
re-exports :data:`MODES` and :func:`decide_action`). :func:`decide_action` applies them to
the folder's :class:`~wsss_mmseg.pseudo.workdir.WorkDirState`; :func:`make_decision` is rank
0's whole step (plan the job, take the work dir's lock, inspect the folder with the work-dir
rules of :mod:`wsss_mmseg.pseudo.workdir`, decide); :func:`error_types` lets the other ranks
raise rank 0's error again from its type name and message.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

__all__ = ['MODES', 'decide_action', 'make_decision', 'error_types']

#: Values of ``PseudoLabelHook(mode=...)``.
MODES = ('auto', 'reuse', 'regenerate')


def error_types() -> Dict[str, type]:
    """The errors rank 0's decision may raise, by class name (the other ranks raise them again).

    Returns:
        ``{class name: class}``.
    """
    from ..pseudo.workdir import PseudoConfigError, WorkDirConflictError, WorkDirLockedError
    return {cls.__name__: cls for cls in
            (ValueError, KeyError, RuntimeError, FileNotFoundError, PermissionError,
             NotADirectoryError, TypeError, PseudoConfigError, WorkDirConflictError, WorkDirLockedError)}


def decide_action(state: Any, *, mode: str, configured: Optional[Mapping[str, Any]]) -> Tuple[str, str]:
    """Decide what to do with a pseudo-label folder (rules: :mod:`wsss_mmseg.hooks.pseudo_label_hook`).

    Args:
        state: :class:`wsss_mmseg.pseudo.workdir.WorkDirState` of the folder.
        mode: ``'auto'``, ``'reuse'`` or ``'regenerate'``.
        configured: Fingerprint of the configured sections (None: unknown, only
            allowed with ``mode='reuse'``).

    Returns:
        ``(action, reason)``; action is ``'reuse'``, ``'resume'``, ``'generate'`` or
        ``'regenerate'``.

    Raises:
        ValueError: Unknown mode; in ``auto`` mode, outputs of other or unknown settings.
    """
    from ..pseudo.workdir import describe_fingerprint_change, generator_label
    if mode not in MODES:
        raise ValueError(f'PseudoLabelHook mode must be one of {MODES}, got {mode!r}')
    status = state.fingerprint_status
    if mode == 'reuse':
        notes = []
        if status == 'differs':
            notes.append(f'they were made by {generator_label(state.stored)}, not by the configured '
                         f'{generator_label(configured)}')
        elif status in ('absent', 'corrupt') and state.has_outputs:
            notes.append('no readable fingerprint: their settings are unknown')
        if configured is not None and status == 'match' and state.missing:
            notes.append(f'{state.missing} of {state.total} images of pseudo_dataset have no pseudo label')
        return 'reuse', "mode='reuse'" + (f' ({"; ".join(notes)})' if notes else '')
    if configured is None:
        raise ValueError(f"PseudoLabelHook(mode={mode!r}) needs the config's generator sections")
    if mode == 'regenerate':
        return 'regenerate', "mode='regenerate' (any previous set is moved to superseded/)"
    if status == 'match':
        if not state.missing:
            return 'reuse', 'all images done, fingerprint matches the config'
        return 'resume', (f'{state.missing} of {state.total} images missing (an interrupted or partly '
                          'failed run), fingerprint matches')
    if status == 'absent' and not state.has_outputs:
        return 'generate', 'no pseudo labels yet'
    if status == 'differs':
        made_by = (f'pseudo labels made by {generator_label(state.stored)}, while this config makes them with '
                   f'{generator_label(configured)} (changed: '
                   f'{describe_fingerprint_change(state.stored, configured)})')
    else:
        made_by = ('pseudo labels without a readable pseudo_fingerprint.json (not made by the wsss_mmseg job, '
                   'or by an older version), so their settings are unknown')
    raise ValueError(
        f"holds {made_by}. The hook never deletes or overwrites labels it did not make: use "
        "PseudoLabelHook(mode='reuse') (--cfg-options custom_hooks.<i>.mode=reuse) to train on them as "
        "they are, or mode='regenerate' to move them to superseded/ and make new ones")


def make_decision(cfg: Any, out_dir: Path, *, mode: str,
                  training_started: bool) -> Tuple[Dict[str, Any], Any, Any]:
    """Rank 0: plan the job, take the work dir's lock, inspect the folder (work-dir rules), decide.

    Args:
        cfg: The generator sections (None: absent, ``mode='reuse'`` only).
        out_dir: The pseudo-label folder.
        mode: ``PseudoLabelHook(mode=...)``, one of :data:`MODES`.
        training_started: The training resumes from a checkpoint.

    Returns:
        ``(decision, lock, job_plan)``: the decision every rank follows (``action``,
        ``reason``, ``done``, ``total``, optional ``warning``); the held lock
        (:func:`wsss_mmseg.pseudo.workdir.acquire_work_dir_lock`; None when reusing)
        and the :class:`wsss_mmseg.pseudo.job.JobPlan` the job runs with (None when
        reusing) -- the label source is built and the fingerprint taken only here.
    """
    from ..pseudo.job import plan_pseudo_job
    from ..pseudo.workdir import acquire_work_dir_lock, inspect_work_dir
    job_plan = None
    unchecked = None
    if cfg is not None:
        try:
            job_plan = plan_pseudo_job(cfg)
        except Exception as exc:  # noqa: BLE001 - only fatal when we must generate
            if mode != 'reuse':
                raise
            unchecked = f'{type(exc).__name__}: {exc}'
    configured = job_plan.fingerprint if job_plan is not None else None
    ids = job_plan.ids if job_plan is not None else []
    job = job_plan.job if job_plan is not None else dict(save_cams=False, verify_resume='crc')
    lock = None
    if mode != 'reuse':
        out_dir.mkdir(parents=True, exist_ok=True)
        # before inspecting: no other training or tools/generate_pseudo.py job writes here
        lock = acquire_work_dir_lock(out_dir)
    try:
        state = inspect_work_dir(out_dir, ids, configured or dict(sha256=None, settings={}),
                                 save_cams=bool(job['save_cams']), verify=job['verify_resume'])
        try:
            action, reason = decide_action(state, mode=mode, configured=configured)
        except ValueError as exc:
            raise ValueError(f'PseudoLabelHook: {out_dir} {exc}') from exc
    except BaseException:
        if lock is not None:
            lock.close()
        raise
    decision: Dict[str, Any] = dict(action=action, reason=reason, done=len(state.done),
                                    total=state.total)
    if action == 'reuse':
        if lock is not None:
            lock.close()
        lock = job_plan = None
        if unchecked is not None:
            decision['warning'] = (f'reusing {out_dir} without checking its fingerprint: the '
                                   f'pseudo_dataset section cannot be built ({unchecked})')
        elif mode == 'reuse' and reason != "mode='reuse'":
            decision['warning'] = f'reusing {out_dir}: {reason}'
    elif action == 'regenerate' and training_started:
        decision['warning'] = ('regenerating the pseudo labels of a training that resumes from '
                               'a checkpoint: the rest of the training uses the new labels')
    return decision, lock, job_plan
