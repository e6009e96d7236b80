"""Dataset-scale pseudo-label job: validate, shard, resume, run the overlapped pipeline, report.

:func:`run_pseudo_job` reads three sections of an mmengine config::

    pseudo_dataset = dict(type='VOCImageLabels', data_root=..., split=..., labels=...)
    generator = dict(type='CLIPESGenerator', clip=dict(...), class_table='voc20', batch_size=8, ...)
    mask_maker = dict(type='PseudoMaskMaker', bg_power=1, crf=None, ignore_below=None)
    pseudo_job = dict(                      # optional, defaults shown
        save_cams=False,                    # also write cams/<id>.npy
        cam_dtype='float16',                # storage dtype of the CAM files
        log_interval=50,                    # progress line every N images (and every 10 s)
        exif_transpose=False,               # see wsss_mmseg.utils.images
        max_image_pixels='pil',             # decompression-bomb limit ('pil' = PIL's)
        max_image_memory=4 << 30,           # refuse an image whose estimate exceeds it (bytes)
        evaluate=True,                      # evaluate when GT masks exist
        eval_conf_thresholds=[0.95],        # extra eval variants: conf < mu -> ignore
        fsync=True,                         # fsync each output before its rename
        torch_threads=None,                 # None: 1 on the CPU (bit-identical whatever the launcher)
        num_workers=0,                      # data-loading workers (None: min(4, cores - 1); 0 inline)
        postprocess_workers=0,              # CRF/encode/write processes (None: min(4, cores - 1); 0 inline)
        verify_resume='crc',                # check finished files on resume: 'crc' or 'size'
        report=False)                       # also write the HTML report (report/index.html)

The work-dir rules (layout, fingerprint, provenance, locks, exit statuses) are in
:mod:`wsss_mmseg.pseudo.workdir`. This module plans the job (:func:`plan_pseudo_job`:
options, label source, fingerprint), builds the models, applies the work-dir rules and
shards the images; each rank runs the overlapped pipeline of
:mod:`wsss_mmseg.pseudo.pipeline` (loader workers -> batched generator -> post-processing
pool: a failing image is recorded and the job goes on, a failing write stops it), and
rank 0 merges the rank records into ``summary.json`` (:mod:`wsss_mmseg.pseudo.summary`).
Records are sorted by id and image ``i`` goes to rank ``i % world_size`` (disjoint,
deterministic).

Determinism: same inputs, weights and settings give byte-identical files, whatever the
batch composition (up to float rounding of batched kernels, see the generator), the
worker counts or the launcher: on the CPU the job pins torch to ``torch_threads`` threads
(default 1 -- ``torch.distributed.run`` sets ``OMP_NUM_THREADS=1`` and float reductions
depend on the thread count; use more processes for more cores, or set
``pseudo_job.torch_threads`` and accept last-bit differences between launchers).
"""
from __future__ import annotations

import copy
import datetime
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .fingerprint import jsonable
from .io import atomic_write_bytes, check_output_id, cleanup_stale_temps
from .job_log import log_line
from .options import PseudoConfigError
from .pipeline import RankPipeline, start_writer_pool
from .stages import OutputWriter
from .summary import merge_and_report, summarize_failures
from .workdir import (FINGERPRINT_FILE, JOB_DEFAULTS, LOCK_FILE, RANK_DIR, OutputLayout,
                      OutputWriteError, ProvenanceJournal, WorkDirConflictError, WorkDirLockedError,
                      acquire_work_dir_lock, check_writable, config_fingerprint,
                      describe_fingerprint_change, generator_label, has_outputs, inspect_work_dir,
                      move_aside, read_fingerprint, resolve_job_options, try_flock, write_fingerprint)

PathLike = Union[str, os.PathLike]

__all__ = ['run_pseudo_job', 'shard_indices', 'config_fingerprint', 'JOB_DEFAULTS',
           'summarize_failures', 'check_writable', 'OutputWriteError', 'WorkDirLockedError',
           'WorkDirConflictError', 'PseudoConfigError', 'acquire_work_dir_lock', 'try_flock',
           'LOCK_FILE', 'prepare_work_dir', 'mark_config_error', 'JobPlan', 'plan_pseudo_job']


def shard_indices(ids: Sequence[str], *, rank: int, world_size: int) -> List[int]:
    """Indices (into ``ids``) of this rank's share: sorted ids, ``i % world == rank``.

    Args:
        ids: All image ids (unique).
        rank: This process's rank.
        world_size: Number of processes.

    Returns:
        Indices into ``ids``, in sorted-id order.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f'rank {rank} is outside 0..{world_size - 1}')
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    return [idx for pos, idx in enumerate(order) if pos % world_size == rank]


# ------------------------------------------------------------------ set-up
def _build(section: str, cfg: Mapping[str, Any]) -> Any:
    """Build one config section through mmseg's registries; errors name the section."""
    from mmengine.registry import DefaultScope
    from mmseg.registry import DATASETS, MODELS
    registry = DATASETS if section == 'pseudo_dataset' else MODELS
    spec = cfg.get(section)
    if not isinstance(spec, Mapping) or 'type' not in spec:
        raise PseudoConfigError(f"the config's {section} section must be a dict with a 'type', got {spec!r}")
    try:
        with DefaultScope.overwrite_default_scope('mmseg'):
            return registry.build(copy.deepcopy(spec))
    except PseudoConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - any construction error is a config problem
        mark_config_error(exc, f'{section} ({spec.get("type")})')
        raise


def mark_config_error(exc: BaseException, where: str) -> BaseException:
    """Mark an error raised while building a config section (its type is kept: the tool exits 3).

    ``exc.wsss_config_section`` names the section; the note shows in tracebacks.
    """
    exc.wsss_config_section = where  # type: ignore[attr-defined]
    if hasattr(exc, 'add_note'):
        exc.add_note(f'(while building the config section {where})')
    return exc


def check_class_names(dataset: Any, generator: Any) -> int:
    """Dataset and generator classes must match by name (not only by count).

    Returns:
        The number of foreground classes.

    Raises:
        PseudoConfigError: The generator has no class names, or the names differ.
    """
    from ..text.vocab import find_class_index
    gen_names = [str(n) for n in (getattr(generator, 'class_names', []) or [])]
    if not gen_names:
        raise PseudoConfigError(f'the generator ({type(generator).__name__}) exposes no class_names')
    data_names = getattr(dataset, 'class_names', None)
    count = getattr(dataset, 'num_classes', None)
    if data_names:
        data_names = [str(n) for n in data_names]
        # same name (NFC, case, spaces) or another spelling of it (COCO 'couch' = VOC 'sofa')
        wrong = [i for i, n in enumerate(data_names) if find_class_index(n, gen_names) != i]
        if wrong or len(data_names) != len(gen_names):
            pairs = [f'{i}: dataset {data_names[i]!r} vs generator '
                     f'{gen_names[i] if i < len(gen_names) else None!r}' for i in wrong][:10]
            if len(data_names) != len(gen_names):
                pairs.insert(0, f'{len(data_names)} dataset classes vs {len(gen_names)} generator classes')
            raise PseudoConfigError(
                f'the dataset ({type(dataset).__name__}) and the generator ({type(generator).__name__}) '
                f'name their classes differently ({"; ".join(pairs)}): label ids would be read with '
                "the wrong prompts. Give the generator the same class list (generator.class_table="
                '<the same table or list of names>)')
    elif count is not None and count != len(gen_names):
        raise PseudoConfigError(
            f'the dataset ({type(dataset).__name__}) uses {count} classes but the generator '
            f'({type(generator).__name__}) has {len(gen_names)}; use the same class table for both')
    return len(gen_names)


_REQUIRED_SECTIONS = ('pseudo_dataset', 'generator', 'mask_maker')


class JobPlan:
    """What the job settles before any model is built: options, label source, fingerprint.

    Made once by :func:`plan_pseudo_job`; ``PseudoLabelHook`` inspects the work dir with it
    and hands it to :func:`run_pseudo_job`, so the dataset is built and the label files and
    weights are hashed once per hook run.

    Args:
        job: Resolved ``pseudo_job`` options (:func:`resolve_job_options`).
        dataset: The built ``pseudo_dataset`` (label source).
        ids: Its image ids (valid output names, unique, at least one).
        fingerprint: :func:`config_fingerprint` of the config (label files, weights hashed).
    """

    __slots__ = ('job', 'dataset', 'ids', 'fingerprint')

    def __init__(self, *, job: Dict[str, Any], dataset: Any, ids: List[str],
                 fingerprint: Dict[str, Any]) -> None:
        self.job = job
        self.dataset = dataset
        self.ids = ids
        self.fingerprint = fingerprint


def _check_sections(cfg: Mapping[str, Any]) -> None:
    for section in _REQUIRED_SECTIONS:
        if cfg.get(section) is None:
            raise PseudoConfigError(f'the config has no {section!r} section (needed by the pseudo-label job)')


def _label_source(cfg: Mapping[str, Any]) -> Tuple[Any, List[str]]:
    """Build ``pseudo_dataset`` and check its ids (valid output names, unique, not empty)."""
    dataset = _build('pseudo_dataset', cfg)
    try:
        ids = [check_output_id(i) for i in dataset.ids]
    except ValueError as exc:
        raise PseudoConfigError(f'pseudo_dataset: {exc}') from exc
    if len(set(ids)) != len(ids):
        raise PseudoConfigError('pseudo_dataset yields duplicate image ids')
    if not ids:
        raise PseudoConfigError(f'pseudo_dataset ({dataset!r}) lists no image: nothing to do')
    return dataset, ids


def _fingerprint(cfg: Mapping[str, Any], job: Mapping[str, Any], dataset: Any) -> Dict[str, Any]:
    return config_fingerprint(cfg, job, source_files=getattr(dataset, 'source_files', ()))


def plan_pseudo_job(cfg: Mapping[str, Any], *, save_cams: Optional[bool] = None) -> JobPlan:
    """The job's planning step: resolve the options, build the label source, fingerprint.

    Args:
        cfg: Job config (``pseudo_dataset``, ``generator``, ``mask_maker``, optional
            ``pseudo_job``).
        save_cams: Override of ``pseudo_job.save_cams`` (None: the config's).

    Returns:
        The plan, for :func:`run_pseudo_job` (``plan=``) and work-dir inspection.

    Raises:
        PseudoConfigError: A missing section, bad options, or bad image ids.
    """
    _check_sections(cfg)
    job = resolve_job_options(cfg, save_cams)
    dataset, ids = _label_source(cfg)
    return JobPlan(job=job, dataset=dataset, ids=ids, fingerprint=_fingerprint(cfg, job, dataset))


def _check_plan(cfg: Mapping[str, Any], plan: JobPlan, job: Mapping[str, Any]) -> None:
    """A plan handed to :func:`run_pseudo_job` must come from the same config and options."""
    settings = plan.fingerprint.get('settings') or {}
    other = [s for s in _REQUIRED_SECTIONS if settings.get(s) != jsonable(cfg.get(s))]
    if dict(job) != dict(plan.job):
        other.append('pseudo_job')
    if other:
        raise ValueError(f'run_pseudo_job(plan=...): the plan was made from other {other} sections '
                         'than the config given; make it with plan_pseudo_job(cfg) of this config')


def prepare_work_dir(work_dir: Path, fingerprint: Mapping[str, Any], *, resume: bool,
                     logger: Any = None) -> Optional[Path]:
    """Rank 0, lock held, config validated and models built: apply the fingerprint rules.

    ``resume``: refuse outputs of other or unknown settings; ``not resume``: move any
    existing set aside. Then write the fingerprint.

    Returns:
        Where an old set was moved, or None.

    Raises:
        WorkDirConflictError: Resuming into outputs of other or unknown settings.
    """
    status, stored = read_fingerprint(work_dir)
    moved = None
    if not resume:
        if status != 'absent' or has_outputs(work_dir):
            moved = move_aside(work_dir, stored)
            log_line(f'--no-resume: moved the previous outputs of {work_dir} ({generator_label(stored)}) '
                     f'to {moved}', logger)
    elif status == 'ok' and stored['sha256'] != fingerprint['sha256']:
        raise WorkDirConflictError(
            f'{work_dir} holds pseudo labels made with different settings ({generator_label(stored)}; '
            f'changed: {describe_fingerprint_change(stored, fingerprint)}); resuming would mix them. '
            'Use another --work-dir, or --no-resume to move them to superseded/ and recompute every image')
    elif status != 'ok' and has_outputs(work_dir):
        what = 'an unreadable' if status == 'corrupt' else 'no'
        raise WorkDirConflictError(
            f'{work_dir} holds pseudo-label outputs with {what} {FINGERPRINT_FILE}, so the settings '
            'they were made with are unknown and resuming could mix two settings. Use another '
            '--work-dir, or --no-resume to move them to superseded/ and recompute every image')
    if status != 'ok' or stored['sha256'] != fingerprint['sha256']:
        write_fingerprint(work_dir, fingerprint)
    return moved


# ------------------------------------------------------------------- driver
def run_pseudo_job(cfg: Mapping[str, Any], *, work_dir: PathLike,
                   save_cams: Optional[bool] = None, resume: bool = True,
                   logger: Any = 'current', lock_held: bool = False,
                   plan: Optional[JobPlan] = None) -> Dict[str, Any]:
    """Generate pseudo labels for a whole dataset (see the module docstring).

    Runs in every process of a distributed group (rank and world size from
    ``mmengine.dist.get_dist_info``); each handles its shard, rank 0 merges.

    Args:
        cfg: mmengine ``Config`` (or mapping) with ``pseudo_dataset``, ``generator``,
            ``mask_maker`` and optional ``pseudo_job``.
        work_dir: Output folder.
        save_cams: Write ``cams/<id>.npy``; None = ``cfg.pseudo_job.save_cams``.
        resume: Keep verified outputs of the same settings. False moves any existing
            set to ``superseded/`` and recomputes everything.
        logger: mmengine logger (or ``'current'``) for progress lines.
        lock_held: The caller (``PseudoLabelHook``) already holds the work dir's lock.
        plan: This process's :func:`plan_pseudo_job` of ``cfg`` (same ``save_cams``), made
            by the caller (``PseudoLabelHook``): its label source and fingerprint are used
            instead of building and hashing them again. None: planned here.

    Returns:
        The summary (written to ``<work_dir>/summary.json`` by rank 0; other ranks get
        the merged counts and failures too).

    Raises:
        PseudoConfigError: Bad options or sections, class mismatch, or a work dir with
            outputs of other settings (:class:`WorkDirConflictError`) -- before any image.
        ValueError: ``plan`` was made from other sections or options than ``cfg``.
        PermissionError / NotADirectoryError: ``work_dir`` cannot be created or written.
        WorkDirLockedError: Another job is using ``work_dir``.
        OutputWriteError: An output could not be written mid-run (disk full...).
    """
    from mmengine.dist import broadcast_object_list, get_dist_info

    started = time.time()
    started_iso = datetime.datetime.now().isoformat(timespec='seconds')
    rank, world_size = get_dist_info()
    work_dir = Path(work_dir)
    _check_sections(cfg)
    job = resolve_job_options(cfg, save_cams)
    if plan is not None:
        _check_plan(cfg, plan, job)
    layout = OutputLayout(work_dir, save_cams=job['save_cams'])
    check_writable(work_dir)
    lock = None
    lock_error: List[Optional[str]] = [None]
    if rank == 0 and not lock_held:
        try:
            lock = acquire_work_dir_lock(work_dir)
        except WorkDirLockedError as exc:
            lock_error[0] = str(exc)
    if world_size > 1:
        broadcast_object_list(lock_error, src=0)
    if lock_error[0] is not None:
        raise WorkDirLockedError(lock_error[0])
    import torch
    threads = torch.get_num_threads()
    try:
        return _run_locked(cfg, work_dir=work_dir, job=job, layout=layout, rank=rank,
                           world_size=world_size, resume=resume, logger=logger,
                           started=started, started_iso=started_iso, plan=plan)
    finally:
        torch.set_num_threads(threads)  # the job's own count does not leak into the caller
        if lock is not None:
            lock.close()


def _share_error(rank: int, world_size: int, fn, *args, **kwargs):
    """Run ``fn`` on rank 0 and raise its error (type and message) on every rank."""
    from mmengine.dist import broadcast_object_list
    box: List[Any] = [None]
    result = None
    if rank == 0:
        try:
            result = fn(*args, **kwargs)
        except (PseudoConfigError, OSError) as exc:
            box[0] = (type(exc), str(exc))
            if world_size == 1:
                raise
    if world_size > 1:
        broadcast_object_list(box, src=0)
        if box[0] is not None:
            cls, msg = box[0]
            raise cls(msg)
    return result


def _run_locked(cfg: Mapping[str, Any], *, work_dir: Path, job: Dict[str, Any],
                layout: OutputLayout, rank: int, world_size: int, resume: bool,
                logger: Any, started: float, started_iso: str,
                plan: Optional[JobPlan] = None) -> Dict[str, Any]:
    """The body of :func:`run_pseudo_job`, run while the work-dir lock is held.

    Without ``plan`` the label source is built here and the fingerprint taken after the
    models are built (the planning step, in the order of the tool); with it, both are
    the plan's.
    """
    import torch
    from mmengine.dist import barrier, broadcast_object_list

    if job['torch_threads'] is not None:
        torch.set_num_threads(job['torch_threads'])
    elif not torch.cuda.is_available():
        torch.set_num_threads(1)
    if plan is not None:
        dataset, ids = plan.dataset, plan.ids
    else:
        if rank == 0:
            log_line(f'pseudo labels -> {work_dir}: reading the label source', logger)
        dataset, ids = _label_source(cfg)

    # models: the mask maker first, then the post-processing pool is forked (before torch
    # starts its thread pools), then the generator (CLIP weights, text features)
    if rank == 0:
        log_line(f'{len(ids)} images; building the mask maker and the generator '
                 f'({cfg["generator"].get("type")})', logger)
    mask_maker = _build('mask_maker', cfg)
    writer = OutputWriter(mask_maker, layout, cam_dtype=job['cam_dtype'], fsync=job['fsync'])
    pool = start_writer_pool(job['postprocess_workers'], writer)
    try:
        t_model = time.perf_counter()
        generator = _build('generator', cfg)
        num_classes = check_class_names(dataset, generator)
        fingerprint = plan.fingerprint if plan is not None else _fingerprint(cfg, job, dataset)
        if rank == 0:
            log_line(f'generator ready in {time.perf_counter() - t_model:.1f} s', logger)
            removed = cleanup_stale_temps([work_dir])
            if removed:
                log_line(f'removed {len(removed)} stale temporary file(s) of an interrupted run', logger)
            shutil.rmtree(work_dir / RANK_DIR, ignore_errors=True)
        _share_error(rank, world_size, prepare_work_dir, work_dir, fingerprint, resume=resume, logger=logger)
        for d in layout.output_dirs():
            d.mkdir(parents=True, exist_ok=True)
        barrier()

        mine = shard_indices(ids, rank=rank, world_size=world_size)
        state = inspect_work_dir(work_dir, [ids[i] for i in mine], fingerprint, save_cams=layout.save_cams,
                                 verify=job['verify_resume'])
        done = set(state.done)
        todo = [i for i in mine if ids[i] not in done]
        if rank == 0:
            log_line(f'{len(ids)} images ({dataset!r}), {world_size} process(es); rank 0: {len(mine)} images, '
                     f'{len(mine) - len(todo)} already done, {len(todo)} to do', logger)
        journal = ProvenanceJournal(work_dir, rank=rank, fingerprint=fingerprint['sha256'], fsync=job['fsync'])
        try:
            run = RankPipeline(dataset=dataset, ids=ids, generator=generator, writer=writer, pool=pool,
                               journal=journal, job=job, num_classes=num_classes, rank=rank,
                               world_size=world_size, logger=logger, save_cams=layout.save_cams)
            run.run(todo)
        finally:
            journal.close()
    finally:
        if pool is not None:
            pool.close()

    rank_record = dict(rank=rank, assigned=len(mine), resumed=len(mine) - len(todo), attempted=len(todo),
                       succeeded=run.n_ok, failures=run.failures, loop_s=run.loop_s, stage_s=run.stage_s,
                       host=socket.gethostname(), pid=os.getpid(), torch_threads=torch.get_num_threads(),
                       batch_size=int(getattr(generator, 'batch_size', 1)),
                       num_workers=job['num_workers'], postprocess_workers=job['postprocess_workers'])
    rank_dir = work_dir / RANK_DIR
    rank_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(rank_dir / f'rank{rank}.json', json.dumps(jsonable(rank_record)).encode())
    barrier()
    summary: Dict[str, Any] = {}
    if rank == 0:
        summary = merge_and_report(
            cfg=cfg, dataset=dataset, generator=generator, ids=ids, layout=layout, job=job,
            world_size=world_size, num_classes=num_classes, started=started, started_iso=started_iso,
            resume=resume, fingerprint=fingerprint, logger=logger)
    brief = [dict(counts=summary.get('counts'), failures=summary.get('failures'),
                  evaluation_failures=summary.get('evaluation_failures'))]
    if world_size > 1:
        broadcast_object_list(brief, src=0)
    if rank != 0:
        summary = dict(brief[0], rank=rank, work_dir=str(work_dir))
    return summary
