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
:mod:`wsss_mmseg.pseudo.workdir`. The pipeline per rank::

    DataLoader workers        main process                    post-processing pool
    decode, memory check, ->  generator.generate(batch)   ->  mask maker (CRF) at the working
    prepare (resize, input)   (bucketed, batched CLIP)        size, upsample, PNG, atomic write
                              provenance record  <----------  [size, crc32] of each file

Queues are bounded (the loader prefetches two batches, each post-processing worker holds
one image), so memory stays flat over any number of images. A failing image
(unreadable, no/unknown labels, too large, generator or mask error) is recorded with its
path and reason and the job goes on -- a batch whose generation fails is retried one
image at a time, so only the bad image fails. A failing *write* stops the job
(:class:`OutputWriteError`). Records are sorted by id and image ``i`` goes to rank
``i % world_size`` (disjoint, deterministic).

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
import platform
import shutil
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .io import atomic_write_bytes, check_output_id, cleanup_stale_temps, fault_point
from .options import PseudoConfigError
from .stages import ImageLoader, OutputWriter
from .writer_pool import WriterPool
from .workdir import (FINGERPRINT_FILE, JOB_DEFAULTS, LOCK_FILE, RANK_DIR, OutputLayout,
                      OutputWriteError, ProvenanceJournal, WorkDirConflictError, WorkDirLockedError,
                      _jsonable, acquire_work_dir_lock, check_writable, config_fingerprint,
                      describe_fingerprint_change, generator_label, has_outputs, inspect_work_dir,
                      move_aside, read_fingerprint, resolve_job_options, try_flock, write_fingerprint,
                      close_inherited_locks)

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


def _versions() -> Dict[str, Optional[str]]:
    out: Dict[str, Optional[str]] = dict(python=platform.python_version())
    for name, module in (('torch', 'torch'), ('open_clip', 'open_clip'), ('mmseg', 'mmseg'),
                         ('mmengine', 'mmengine'), ('mmcv', 'mmcv'), ('numpy', 'numpy'),
                         ('pillow', 'PIL'), ('wsss_mmseg', 'wsss_mmseg.version')):
        try:
            mod = __import__(module, fromlist=['__version__'])
            out[name] = str(getattr(mod, '__version__', None))
        except Exception:  # noqa: BLE001 - a missing optional package is reported as None
            out[name] = None
    return out


def _log(msg: str, logger: Any, level: int = 20) -> None:
    from mmengine.logging import print_log
    print_log(msg, logger=logger, level=level)


def _fmt_eta(seconds: float) -> str:
    if seconds != seconds or seconds in (float('inf'), float('-inf')):
        return '?'
    return str(datetime.timedelta(seconds=int(round(seconds))))


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
    other = [s for s in _REQUIRED_SECTIONS if settings.get(s) != _jsonable(cfg.get(s))]
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
            _log(f'--no-resume: moved the previous outputs of {work_dir} ({generator_label(stored)}) '
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
            _log(f'pseudo labels -> {work_dir}: reading the label source', logger)
        dataset, ids = _label_source(cfg)

    # models: the mask maker first, then the post-processing pool is forked (before torch
    # starts its thread pools), then the generator (CLIP weights, text features)
    if rank == 0:
        _log(f'{len(ids)} images; building the mask maker and the generator '
             f'({cfg["generator"].get("type")})', logger)
    mask_maker = _build('mask_maker', cfg)
    writer = OutputWriter(mask_maker, layout, cam_dtype=job['cam_dtype'], fsync=job['fsync'])
    pool = _start_pool(job['postprocess_workers'], writer)
    try:
        t_model = time.perf_counter()
        generator = _build('generator', cfg)
        num_classes = check_class_names(dataset, generator)
        fingerprint = plan.fingerprint if plan is not None else _fingerprint(cfg, job, dataset)
        if rank == 0:
            _log(f'generator ready in {time.perf_counter() - t_model:.1f} s', logger)
            removed = cleanup_stale_temps([work_dir])
            if removed:
                _log(f'removed {len(removed)} stale temporary file(s) of an interrupted run', logger)
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
            _log(f'{len(ids)} images ({dataset!r}), {world_size} process(es); rank 0: {len(mine)} images, '
                 f'{len(mine) - len(todo)} already done, {len(todo)} to do', logger)
        journal = ProvenanceJournal(work_dir, rank=rank, fingerprint=fingerprint['sha256'], fsync=job['fsync'])
        try:
            run = _Pipeline(dataset=dataset, ids=ids, generator=generator, writer=writer, pool=pool,
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
    atomic_write_bytes(rank_dir / f'rank{rank}.json', json.dumps(_jsonable(rank_record)).encode())
    barrier()
    summary: Dict[str, Any] = {}
    if rank == 0:
        summary = _merge_and_report(
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


# ------------------------------------------------------------------ pipeline
def _init_loader_worker(_: int) -> None:
    close_inherited_locks()


def _start_pool(n: int, writer: OutputWriter) -> Optional[WriterPool]:
    """The post-processing workers (None when ``n == 0`` or without ``fork``)."""
    import multiprocessing as mp
    if not n or 'fork' not in mp.get_all_start_methods():
        return None
    return WriterPool(n, writer)


class _LoaderDataset:
    """Index -> :class:`ImageLoader` output, for a torch DataLoader."""

    def __init__(self, loader: ImageLoader, pairs: Sequence[Tuple[int, str]]) -> None:
        self.loader = loader
        self.pairs = list(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, j: int) -> Dict[str, Any]:
        return self.loader(*self.pairs[j])


def _collate(batch: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return batch


class _Pipeline:
    """One rank's loop: loader workers -> batched generator -> post-processing pool."""

    def __init__(self, *, dataset: Any, ids: List[str], generator: Any, writer: OutputWriter, pool: Any,
                 journal: ProvenanceJournal, job: Mapping[str, Any], num_classes: int, rank: int,
                 world_size: int, logger: Any, save_cams: bool) -> None:
        self.dataset, self.ids, self.generator = dataset, ids, generator
        self.writer, self.pool, self.journal = writer, pool, journal
        self.job, self.rank, self.world_size, self.logger = job, rank, world_size, logger
        self.loader = ImageLoader(dataset, generator.input_preparer(), num_classes=num_classes,
                                  max_side=getattr(generator, 'max_side', None),
                                  exif_transpose=job['exif_transpose'], max_image_pixels=job['max_image_pixels'],
                                  max_image_memory=job['max_image_memory'], save_cams=save_cams)
        self.failures: List[Dict[str, Any]] = []
        self.n_ok = 0
        self.n_handled = 0
        self.stage_s = dict(wait_loader=0.0, decode=0.0, model=0.0, mask_crf=0.0, encode_write=0.0,
                            wait_writer=0.0)
        self.loop_s = 0.0

    # -- bookkeeping
    def _fail(self, entry: Mapping[str, Any], stage: str, reason: str, tb: Optional[str] = None) -> None:
        rec = dict(id=entry['id'], img_path=entry.get('img_path'), stage=stage, reason=reason, rank=self.rank)
        if tb:
            rec['traceback'] = tb
        self.failures.append(rec)
        _log(f'[rank {self.rank}] FAILED {rec["id"]} ({rec["img_path"]}): {stage}: {reason}', self.logger,
             level=30)

    def _finish(self, entry: Mapping[str, Any], outcome: Mapping[str, Any]) -> None:
        if 'write_error' in outcome:
            err = outcome['write_error']
            raise OutputWriteError(
                err['errno'], f'cannot write {err["filename"]} (image {entry["id"]!r}): {err["strerror"]}. '
                'The job stops: this is not a problem of the image. Files already written are '
                'complete; fix the cause (free space, permissions) and rerun the same command to resume',
                err['filename'])
        if 'stage' in outcome:
            self._fail(entry, outcome['stage'], outcome['reason'], outcome.get('traceback'))
        else:
            self.journal.append(entry['id'], outcome['files'])
            self.n_ok += 1
            t = outcome['timings']
            self.stage_s['mask_crf'] += t.get('mask', 0.0)
            self.stage_s['encode_write'] += t.get('write', 0.0)
        fault_point('between_images', entry['id'])
        self.n_handled += 1
        self._progress()

    def _progress(self, final: bool = False) -> None:
        if self.rank != 0:
            return
        now = time.perf_counter()
        n, total = self.n_handled, self.total
        if final and self._last_n == n:
            return
        if not (final or n == 1 or n % self.job['log_interval'] == 0 or now - self._last_log > 10):
            return
        self._last_log, self._last_n = now, n
        rate = n / max(now - self._start, 1e-9)
        _log(f'[{n}/{total}] {rate:.2f} img/s, ETA {_fmt_eta((total - n) / rate if rate else float("nan"))}, '
             f'{len(self.failures)} failed (rank 0 of {self.world_size})', self.logger)

    # -- stages
    def _generate(self, entries: List[Dict[str, Any]]) -> List[Tuple[Dict[str, Any], Any]]:
        """``(entry, result)`` pairs; a failing batch is retried image by image."""
        items = [e['item'] for e in entries]
        try:
            results = self.generator.generate(items)
            if len(results) != len(items):
                raise ValueError(f'generate returned {len(results)} results for {len(items)} images')
            return list(zip(entries, results))
        except Exception as exc:  # noqa: BLE001
            if len(entries) > 1:
                return [pair for e in entries for pair in self._generate([e])]
            return [(entries[0], exc)]

    def _submit(self, entry: Dict[str, Any], result: Any) -> None:
        import numpy as np
        item = entry.pop('item')
        res = dict(result)
        for key in ('cam', 'cam_refined'):
            if hasattr(res.get(key), 'detach'):
                res[key] = res[key].detach().float().cpu().numpy()
        task = dict(id=entry['id'], result=res, image=np.asarray(item['image']), label_ids=item['label_ids'],
                    work_hw=tuple(item['work_hw']), image_hw=tuple(item['image_hw']))
        if self.pool is None:
            self._finish(entry, self.writer(task))
            return
        while not self.pool.has_idle():
            self._collect(block=True)
        self.pool.submit(entry, task)
        self._collect(block=False)

    def _collect(self, *, block: bool) -> None:
        t = time.perf_counter()
        done = self.pool.collect(block=block)
        if block:
            self.stage_s['wait_writer'] += time.perf_counter() - t
        for entry, outcome in done:
            self._finish(entry, outcome)

    def _drain(self) -> None:
        while self.pool is not None and self.pool.busy():
            self._collect(block=True)

    def run(self, todo: Sequence[int]) -> None:
        """Process the images ``todo`` (indices into ``ids``)."""
        import torch
        self.total = len(todo)
        self._start = self._last_log = time.perf_counter()
        self._last_n = 0
        if not todo:
            return
        batch_size = max(1, int(getattr(self.generator, 'batch_size', 1) or 1))
        workers = self.job['num_workers']
        data = _LoaderDataset(self.loader, [(i, self.ids[i]) for i in todo])
        loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=workers,
                                             collate_fn=_collate, prefetch_factor=2 if workers else None,
                                             worker_init_fn=_init_loader_worker if workers else None)
        it = iter(loader)
        while True:
            t = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            self.stage_s['wait_loader'] += time.perf_counter() - t
            ready = []
            for entry in batch:
                if 'stage' in entry:
                    self._fail(entry, entry['stage'], entry['reason'])
                    fault_point('between_images', entry['id'])
                    self.n_handled += 1
                    self._progress()
                else:
                    self.stage_s['decode'] += entry.pop('load_s', 0.0)
                    ready.append(entry)
            if not ready:
                continue
            t = time.perf_counter()
            pairs = self._generate(ready)
            self.stage_s['model'] += time.perf_counter() - t
            for entry, result in pairs:
                if isinstance(result, BaseException):
                    entry.pop('item', None)
                    self._fail(entry, 'generate', f'{type(result).__name__}: {result}',
                               ''.join(traceback.format_exception(result)))
                    fault_point('between_images', entry['id'])
                    self.n_handled += 1
                    self._progress()
                    continue
                self._submit(entry, result)
        self._drain()
        self.loop_s = time.perf_counter() - self._start
        self._progress(final=True)


# ------------------------------------------------------------------- report
def _class_names_for_eval(dataset: Any, generator: Any, num_classes: int) -> List[str]:
    names = list(getattr(generator, 'class_names', []) or [])
    if len(names) != num_classes:
        names = [f'class_{i}' for i in range(num_classes)]
    return ['background'] + [str(n) for n in names]


def _merge_and_report(*, cfg: Mapping[str, Any], dataset: Any, generator: Any,
                      ids: List[str], layout: OutputLayout, job: Dict[str, Any],
                      world_size: int, num_classes: int, started: float, started_iso: str,
                      resume: bool, fingerprint: Dict[str, Any], logger: Any) -> Dict[str, Any]:
    """Rank 0: merge the rank records, evaluate, write summary.json."""
    work_dir = layout.work_dir
    ranks = []
    for r in range(world_size):
        path = work_dir / RANK_DIR / f'rank{r}.json'
        if not path.is_file():
            raise RuntimeError(f'rank {r} did not leave its record {path}')
        ranks.append(json.loads(path.read_text()))
    shutil.rmtree(work_dir / RANK_DIR, ignore_errors=True)
    failures = sorted((f for r in ranks for f in r['failures']), key=lambda f: f['id'])
    stage_s = {k: sum(r['stage_s'][k] for r in ranks) for k in ranks[0]['stage_s']}
    succeeded = sum(r['succeeded'] for r in ranks)
    loop_wall = max(r['loop_s'] for r in ranks)
    done = len(inspect_work_dir(work_dir, ids, fingerprint, save_cams=layout.save_cams, verify='size').done)
    counts = dict(total=len(ids), done=done, processed=succeeded,
                  skipped_resumed=sum(r['resumed'] for r in ranks), failed=len(failures),
                  evaluation_failed=0)
    evaluation_failures: List[Dict[str, Any]] = []

    evaluation = None
    eval_files = None
    if job['evaluate']:
        items = dataset.gt_items()
        if any(it['gt_path'] for it in items):
            fault_point('evaluate', work_dir)
            from .evaluate import evaluate_pseudo_dir, write_eval_reports
            t = time.perf_counter()
            result = evaluate_pseudo_dir(
                items, num_classes=num_classes + 1, mask_dir=layout.mask_dir,
                confidence_dir=layout.confidence_dir,
                class_names=_class_names_for_eval(dataset, generator, num_classes),
                conf_thresholds=job['eval_conf_thresholds'])
            eval_files = write_eval_reports(result, work_dir)
            evaluation_failures = list(result['failures'])
            counts['evaluation_failed'] = len(evaluation_failures)
            for f in evaluation_failures[:20]:
                _log(f'evaluation FAILED for {f}', logger, level=30)
            if len(evaluation_failures) > 20:
                _log(f'... and {len(evaluation_failures) - 20} more evaluation failures (eval.json)', logger,
                     level=30)
            evaluation = dict(
                num_images=result['num_images'], seconds=time.perf_counter() - t,
                missing_masks=len(result['missing_masks']), failures=result['failures'],
                variants={n: dict(miou=v['miou'], mean_precision=v['mean_precision'],
                                  mean_recall=v['mean_recall'],
                                  ignored_fraction=v['ignored_fraction'])
                          for n, v in result['variants'].items()})
            for n, v in evaluation['variants'].items():
                miou = 'n/a' if v['miou'] is None else f'{100 * v["miou"]:.2f}'
                _log(f'eval [{n}] mIoU {miou} on {result["num_images"]} images', logger)

    wall = time.time() - started
    summary = dict(
        work_dir=str(work_dir),
        config_file=getattr(cfg, 'filename', None),
        config=_jsonable(cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)),
        fingerprint=fingerprint['sha256'],
        job=_jsonable(job), resume=resume, world_size=world_size,
        versions=_versions(), host=socket.gethostname(), argv=list(sys.argv),
        started_at=started_iso,
        finished_at=datetime.datetime.now().isoformat(timespec='seconds'),
        counts=counts,
        timings=dict(wall_s=wall, loop_wall_s=loop_wall, stage_s=stage_s,
                     images_per_s=(succeeded / loop_wall if loop_wall > 0 else None),
                     per_rank=[dict(rank=r['rank'], assigned=r['assigned'],
                                    attempted=r['attempted'], succeeded=r['succeeded'],
                                    loop_s=r['loop_s'], torch_threads=r['torch_threads'])
                               for r in ranks]),
        outputs=dict(masks=str(layout.mask_dir), confidence=str(layout.confidence_dir),
                     cams=str(layout.cam_dir) if layout.save_cams else None),
        failures=failures, evaluation_failures=evaluation_failures, evaluation=evaluation,
        eval_files=eval_files)
    fault_point('before_summary', work_dir)
    atomic_write_bytes(work_dir / 'summary.json',
                       (json.dumps(_jsonable(summary), indent=1) + '\n').encode())
    failures_txt = work_dir / 'failures.txt'
    if failures:
        lines = [f'{f["id"]}\t{f["img_path"]}\t{f["stage"]}\t{f["reason"]}' for f in failures]
        atomic_write_bytes(failures_txt, ('\n'.join(lines) + '\n').encode())
    elif failures_txt.exists():
        failures_txt.unlink()
    if job.get('report'):
        try:
            from ..report import write_report
            summary['report'] = str(write_report(work_dir))
            _log(f'report: {summary["report"]}', logger)
        except Exception as exc:  # noqa: BLE001 - the labels are done; the report is extra
            _log(f'could not write the HTML report: {type(exc).__name__}: {exc}', logger, level=30)
    rate = summary['timings']['images_per_s']
    _log(f'done: {counts["done"]}/{counts["total"]} images have pseudo labels '
         f'({counts["processed"]} made now, {counts["skipped_resumed"]} resumed, '
         f'{counts["failed"]} failed'
         + (f', {counts["evaluation_failed"]} evaluation failures' if counts['evaluation_failed'] else '')
         + f') in {wall:.1f} s'
         + (f', {rate:.2f} img/s' if rate else '') + f'; summary: {work_dir / "summary.json"}',
         logger)
    return summary


def summarize_failures(failures: Sequence[Mapping[str, Any]], *, limit: int = 20) -> str:
    """Human-readable list of failed images for the CLI.

    Args:
        failures: ``summary['failures']``.
        limit: Maximum number of lines before ``... and N more``.

    Returns:
        Multi-line text.
    """
    lines = [f'{len(failures)} image(s) failed:']
    for f in list(failures)[:limit]:
        lines.append(f'  {f["id"]} ({f.get("img_path")}): {f["stage"]}: {f["reason"]}')
    if len(failures) > limit:
        lines.append(f'  ... and {len(failures) - limit} more (see failures.txt)')
    return '\n'.join(lines)

