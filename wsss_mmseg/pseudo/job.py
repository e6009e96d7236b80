"""Dataset-scale pseudo-label job: iterate, shard, resume, write, record failures.

:func:`run_pseudo_job` reads three sections of an mmengine config::

    pseudo_dataset = dict(type='VOCImageLabels', data_root=..., split=..., labels=...)
    generator = dict(type='CLIPESGenerator', clip=dict(...), class_table='voc20', ...)
    mask_maker = dict(type='PseudoMaskMaker', bg_power=1, crf=None, ignore_below=None)
    pseudo_job = dict(                      # optional, defaults shown
        save_cams=False,                    # also write cams/<id>.npy
        cam_dtype='float16',                # storage dtype of the CAM files
        log_interval=50,                    # progress line every N images (rank 0)
        exif_transpose=False,               # see wsss_mmseg.utils.images
        max_image_pixels='pil',             # decompression-bomb limit ('pil' = PIL's)
        evaluate=True,                      # evaluate when GT masks exist
        eval_conf_thresholds=[0.95],        # extra eval variants: conf < mu -> ignore
        fsync=True,                         # fsync each output before its rename
        torch_threads=None)                 # torch.set_num_threads(n) in every process

and writes, below ``work_dir``::

    masks/<id>.png         palette PNG, 0 bg, c+1 class c, 255 ignore
    confidence/<id>.png    16-bit PNG of round(conf * 65535)
    cams/<id>.npy          (with save_cams) keys / cam / cam_refined / attn_highres
    summary.json           config, versions, counts, timings, failures, eval summary
    failures.txt           one line per failed image (only when some failed)
    eval.json, eval.md, eval_iou.png   (when GT masks exist)
    pseudo_fingerprint.json            the settings the outputs were made with

Determinism: the same inputs and settings give byte-identical files (PNG and
``.npy`` encoding is deterministic). On CPU, torch's float reductions depend on
the number of intra-op threads, so a CLIP generator run with 1 thread per
process (``torch.distributed.run`` sets ``OMP_NUM_THREADS=1``) can differ in the
last bits — and at argmax ties in a few mask pixels — from a run with 16 threads.
Set ``pseudo_job.torch_threads`` to the same number for runs whose bytes must
match (1 is the safest choice: multi-threaded BLAS kernels are reproducible
only when they really run with the same thread split); the thread count of
every rank is recorded in ``summary.json``.

Records are sorted by id and image ``i`` goes to rank ``i % world_size``
(disjoint, deterministic). An image counts as finished when all its files exist
(writes are atomic, so final names are always complete) and is skipped on a
rerun; stale temporary files of a killed run are removed first. Resuming into a
work dir made with different dataset/generator/mask settings, or after the
content of the split/label files changed, is refused (``resume=False`` /
``--no-resume`` recomputes everything).
A failing image (unreadable file, no labels, label index out of range,
generator/mask error) is recorded with its path and the reason and the job goes
on; ``summary['counts']['failed']`` tells the caller to exit non-zero.

A failing *write* (full disk, read-only or vanished folder, I/O error) is not a
problem of one image: the job stops at once with :class:`OutputWriteError`
naming the file. Every file already under its final name stays complete, and
rerunning the same command resumes (``summary['counts']['skipped_resumed']``
says how many images were found finished).

One job per work dir: rank 0 holds an exclusive ``fcntl.flock`` on
``<work_dir>/.lock`` from before the stale-temp cleanup until the job returns
(the OS releases it when the process dies, so a killed job never leaves a stale
lock). A second job on the same folder is refused at once with
:class:`WorkDirLockedError` naming the folder and the holder's pid and host;
the ranks of one distributed job share rank 0's lock. ``flock`` is advisory and
local: jobs on different hosts sharing a network file system that does not
propagate ``flock`` (some NFS setups) are not protected; without ``fcntl``
(Windows) no lock is taken.
"""
from __future__ import annotations

import copy
import datetime
import errno
import hashlib
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

import numpy as np

from .io import (OutputLayout, atomic_write_bytes, check_output_id,
                 cleanup_stale_temps, fault_point, save_cam_npy,
                 write_confidence_png, write_mask_png)

PathLike = Union[str, os.PathLike]

__all__ = ['run_pseudo_job', 'shard_indices', 'config_fingerprint',
           'process_one', 'JOB_DEFAULTS', 'ImageFailure', 'summarize_failures',
           'check_writable', 'OutputWriteError', 'WorkDirLockedError',
           'acquire_work_dir_lock', 'LOCK_FILE']

#: Defaults of ``cfg.pseudo_job``.
JOB_DEFAULTS: Dict[str, Any] = dict(
    save_cams=False, cam_dtype='float16', log_interval=50, exif_transpose=False,
    max_image_pixels='pil', evaluate=True, eval_conf_thresholds=[0.95], fsync=True,
    torch_threads=None)

_RANK_DIR = '.pseudo_ranks'
_FINGERPRINT_FILE = 'pseudo_fingerprint.json'
#: Lock file of a work dir (see the module docstring).
LOCK_FILE = '.lock'


class OutputWriteError(OSError):
    """An output file could not be written: the job stops (not a per-image failure)."""


class WorkDirLockedError(RuntimeError):
    """Another pseudo-label job holds the lock of the work dir."""


def try_flock(path: PathLike) -> Tuple[Optional[Any], Optional[str]]:
    """Try to take an exclusive advisory ``flock`` on ``path`` without waiting.

    On success the file records who holds it (pid, host, start time).

    Args:
        path: Lock file (created if missing).

    Returns:
        ``(open file, None)`` when taken (keep it open to hold the lock; closing it or
        the process ending releases it), ``(None, holder)`` when another process holds
        it, ``(None, None)`` where ``fcntl`` is unavailable.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory lock
        return None, None
    f = open(path, 'a+', encoding='utf-8')
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or 'holder unknown'
        f.close()
        return None, holder
    f.seek(0)
    f.truncate()
    f.write(f'pid {os.getpid()} on {socket.gethostname()} since '
            f'{datetime.datetime.now().isoformat(timespec="seconds")}\n')
    f.flush()
    return f, None


def acquire_work_dir_lock(work_dir: PathLike) -> Optional[Any]:
    """Take the exclusive lock of ``work_dir`` (``<work_dir>/.lock``), without waiting.

    Args:
        work_dir: Existing output folder.

    Returns:
        The open lock file (keep it open to hold the lock; closing it, or the
        process ending, releases it), or None where ``fcntl`` is unavailable.

    Raises:
        WorkDirLockedError: Another process holds it; the message names the
            folder and the holder (pid, host, start time).
    """
    path = Path(work_dir) / LOCK_FILE
    handle, holder = try_flock(path)
    if holder is not None:
        raise WorkDirLockedError(
            f'the output directory {work_dir} is in use by another pseudo-label job '
            f'({holder}); two jobs writing the same folder would race. Wait for it to '
            f'finish, or use another --work-dir. (The lock is {path}; it is released '
            'when that process ends.)')
    return handle


class ImageFailure(Exception):
    """A per-image problem, raised inside :func:`process_one`.

    Args:
        stage: Where it happened (``labels``, ``load``, ``generate``, ``mask``,
            ``write``).
        reason: Human-readable cause.
    """

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f'{stage}: {reason}')
        self.stage = stage
        self.reason = reason


# ------------------------------------------------------------------ helpers
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


def _jsonable(obj: Any) -> Any:
    """Convert config values to JSON types (unknown objects -> ``repr``)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return repr(obj)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def config_fingerprint(cfg: Mapping[str, Any], job: Mapping[str, Any], *,
                       source_files: Sequence[PathLike] = ()) -> Dict[str, Any]:
    """The settings that determine the output bytes, and their hash.

    Args:
        cfg: Job config (``pseudo_dataset``, ``generator``, ``mask_maker``).
        job: Resolved ``pseudo_job`` options.
        source_files: List/label files of the dataset; their content is hashed
            so that edited labels are noticed.

    Returns:
        ``dict(sha256=..., settings=...)``.
    """
    settings = dict(pseudo_dataset=_jsonable(cfg.get('pseudo_dataset')),
                    generator=_jsonable(cfg.get('generator')),
                    mask_maker=_jsonable(cfg.get('mask_maker')),
                    exif_transpose=bool(job['exif_transpose']),
                    cam_dtype=str(job['cam_dtype']),
                    label_files={str(p): _file_sha256(Path(p)) for p in source_files
                                 if Path(p).is_file()})
    blob = json.dumps(settings, sort_keys=True).encode()
    return dict(sha256=hashlib.sha256(blob).hexdigest(), settings=settings)


def _versions() -> Dict[str, Optional[str]]:
    out: Dict[str, Optional[str]] = dict(python=platform.python_version())
    for name, module in (('torch', 'torch'), ('open_clip', 'open_clip'),
                         ('mmseg', 'mmseg'), ('mmengine', 'mmengine'),
                         ('mmcv', 'mmcv'), ('numpy', 'numpy'), ('pillow', 'PIL'),
                         ('wsss_mmseg', 'wsss_mmseg.version')):
        try:
            mod = __import__(module, fromlist=['__version__'])
            out[name] = str(getattr(mod, '__version__', None))
        except Exception:  # noqa: BLE001 - a missing optional package is reported as None
            out[name] = None
    return out


def check_writable(work_dir: PathLike) -> None:
    """Create ``work_dir`` and prove that files can be written there.

    Args:
        work_dir: Output folder.

    Raises:
        PermissionError: It cannot be created or written (message names it).
        NotADirectoryError: It exists as a file.
    """
    work_dir = Path(work_dir)
    if work_dir.exists() and not work_dir.is_dir():
        raise NotADirectoryError(f'output path {work_dir} exists and is not a directory')
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PermissionError(f'cannot create the output directory {work_dir}: '
                              f'{exc.strerror or exc}') from exc
    if not work_dir.is_dir():
        raise NotADirectoryError(f'output path {work_dir} exists and is not a directory')
    probe = work_dir / f'.write_probe.{os.getpid()}.{socket.gethostname()}'
    try:
        atomic_write_bytes(probe, b'ok', fsync=False)
        probe.unlink()
    except OSError as exc:
        raise PermissionError(f'the output directory {work_dir} is not writable: '
                              f'{exc}') from exc


def _log(msg: str, logger: Any, level: int = 20) -> None:
    from mmengine.logging import print_log
    print_log(msg, logger=logger, level=level)


def _fmt_eta(seconds: float) -> str:
    if not np.isfinite(seconds):
        return '?'
    return str(datetime.timedelta(seconds=int(round(seconds))))


# ---------------------------------------------------------------- one image
def process_one(record: Mapping[str, Any], *, generator: Any, mask_maker: Any,
                layout: OutputLayout, num_classes: int, cam_dtype: str = 'float16',
                exif_transpose: bool = False, max_image_pixels: Any = 'pil',
                fsync: bool = True) -> Dict[str, float]:
    """Make and write the outputs of one image.

    Args:
        record: ``dict(id, img_path, label_ids, gt_path)``.
        generator: Object with ``generate(img, label_ids) -> dict(keys, cam,
            cam_refined)``.
        mask_maker: Callable ``(result, img) -> (mask uint8, confidence float32)``.
        layout: Output file names (``layout.save_cams`` decides the CAM file).
        num_classes: Number of foreground classes of the generator.
        cam_dtype: Storage dtype of CAM files.
        exif_transpose: Passed to :func:`wsss_mmseg.utils.images.load_rgb`.
        max_image_pixels: ``'pil'`` or an int/None, see ``load_rgb``.
        fsync: Flush every file to disk before its atomic rename (without it a
            killed process still never leaves partial files; a power loss may).

    Returns:
        Seconds spent per stage (``load``, ``generate``, ``mask``, ``write``).

    Raises:
        ImageFailure: Any per-image problem, with the stage and the reason.
        OutputWriteError: An output file could not be written (disk full,
            unwritable folder): not a per-image problem, the caller stops.
    """
    from wsss_mmseg.utils.images import load_rgb
    image_id = record['id']
    img_path = record['img_path']
    labels = list(record.get('label_ids') or [])
    if not labels:
        raise ImageFailure('labels', 'no image-level labels')
    bad = [c for c in labels if isinstance(c, bool) or not isinstance(c, (int, np.integer))
           or not 0 <= int(c) < num_classes]
    if bad:
        raise ImageFailure('labels', f'label index {bad} out of range for the generator\'s '
                           f'{num_classes} classes (valid 0..{num_classes - 1})')
    timings: Dict[str, float] = {}
    t = time.perf_counter()
    try:
        kwargs: Dict[str, Any] = dict(exif_transpose=exif_transpose)
        if max_image_pixels != 'pil':
            kwargs['max_image_pixels'] = max_image_pixels
        img = load_rgb(img_path, **kwargs)
    except (OSError, ValueError) as exc:
        raise ImageFailure('load', f'{type(exc).__name__}: {exc}') from exc
    timings['load'] = time.perf_counter() - t
    h0, w0 = img.shape[:2]

    t = time.perf_counter()
    try:
        result = generator.generate(img, [int(c) for c in labels])
    except Exception as exc:  # noqa: BLE001 - any generator error is this image's failure
        raise ImageFailure('generate', f'{type(exc).__name__}: {exc}') from exc
    timings['generate'] = time.perf_counter() - t
    try:
        keys = np.asarray(result['keys']).astype(np.int64).reshape(-1)
        cam = _as_numpy(result['cam'])
        refined = result.get('cam_refined')
        refined = None if refined is None else _as_numpy(refined)
        k = len(labels)
        for name, arr in (('cam', cam), ('cam_refined', refined)):
            if arr is not None and arr.shape != (k, h0, w0):
                raise ValueError(f'{name} has shape {arr.shape}, expected {(k, h0, w0)}')
    except (KeyError, ValueError, TypeError) as exc:
        raise ImageFailure('generate', f'invalid generator output: {type(exc).__name__}: '
                           f'{exc}') from exc

    t = time.perf_counter()
    try:
        mask, confidence = mask_maker(result, img)
        mask = np.asarray(mask)
        confidence = np.asarray(confidence)
        if mask.shape != (h0, w0) or confidence.shape != (h0, w0):
            raise ValueError(f'mask {mask.shape} / confidence {confidence.shape} do not '
                             f'match the image size {(h0, w0)}')
    except Exception as exc:  # noqa: BLE001
        raise ImageFailure('mask', f'{type(exc).__name__}: {exc}') from exc
    timings['mask'] = time.perf_counter() - t

    t = time.perf_counter()
    try:
        layout.make_dirs(image_id)
        if layout.save_cams:
            save_cam_npy(layout.cam_path(image_id), keys, cam, refined, dtype=cam_dtype,
                         fsync=fsync)
        write_confidence_png(layout.confidence_path(image_id), confidence, fsync=fsync)
        # the mask is written last: masks/<id>.png existing means "probably done"
        write_mask_png(layout.mask_path(image_id), mask, fsync=fsync)
    except OSError as exc:  # the disk/folder, not the image: stop the job
        if exc.errno == errno.ENAMETOOLONG:  # ... except a name this file system refuses
            raise ImageFailure('write', f'output file name too long: {exc}') from exc
        where = exc.filename or layout.work_dir
        err = OutputWriteError(
            f'cannot write {where} (image {image_id!r}): {exc.strerror or exc}. '
            'The job stops: this is not a problem of the image. Files already written '
            'are complete; fix the cause (free space, permissions) and rerun the same '
            'command to resume')
        err.path = str(where)
        raise err from exc
    except ValueError as exc:
        raise ImageFailure('write', f'{type(exc).__name__}: {exc}') from exc
    timings['write'] = time.perf_counter() - t
    return timings


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, 'detach'):  # torch tensor
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


# ---------------------------------------------------------------------- job
def _resolve_job_options(cfg: Mapping[str, Any], save_cams: Optional[bool]) -> Dict[str, Any]:
    job = dict(JOB_DEFAULTS)
    user = cfg.get('pseudo_job') or {}
    unknown = sorted(set(user) - set(JOB_DEFAULTS))
    if unknown:
        raise KeyError(f'unknown pseudo_job option(s) {unknown}; known: {sorted(JOB_DEFAULTS)}')
    job.update(user)
    if save_cams is not None:
        job['save_cams'] = bool(save_cams)
    job['eval_conf_thresholds'] = [float(m) for m in (job['eval_conf_thresholds'] or [])]
    if job['torch_threads'] is not None and int(job['torch_threads']) < 1:
        raise ValueError(f'pseudo_job.torch_threads must be >= 1, got {job["torch_threads"]}')
    if int(job['log_interval']) < 1:
        raise ValueError(f'pseudo_job.log_interval must be >= 1, got {job["log_interval"]}')
    np.dtype(job['cam_dtype'])  # raises TypeError for an unknown dtype
    return job


def _check_fingerprint(work_dir: Path, fingerprint: Dict[str, Any], *, resume: bool) -> None:
    path = work_dir / _FINGERPRINT_FILE
    if resume and path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            old = None
        if old is not None and old.get('sha256') != fingerprint['sha256']:
            before = old.get('settings', {})
            changed = sorted(k for k in fingerprint['settings']
                             if before.get(k) != fingerprint['settings'][k])
            if 'label_files' in changed:
                files = fingerprint['settings']['label_files']
                edited = sorted(f for f in set(files) | set(before.get('label_files') or {})
                                if files.get(f) != (before.get('label_files') or {}).get(f))
                changed[changed.index('label_files')] = f'label files {edited}'
            raise ValueError(
                f'{work_dir} holds pseudo labels made with different settings '
                f'(changed: {", ".join(changed) or "unknown"}); resuming would mix '
                f'them. Use another --work-dir, or --no-resume to recompute every image.')
    atomic_write_bytes(path, (json.dumps(fingerprint, indent=1, sort_keys=True) + '\n').encode())


def _class_names_for_eval(dataset: Any, generator: Any, num_classes: int) -> List[str]:
    names = getattr(dataset, 'class_names', None)
    if not names or len(names) != num_classes:
        names = list(getattr(generator, 'class_names', []) or [])
    if len(names) != num_classes:
        names = [f'class_{i}' for i in range(num_classes)]
    return ['background'] + [str(n) for n in names]


def run_pseudo_job(cfg: Mapping[str, Any], *, work_dir: PathLike,
                   save_cams: Optional[bool] = None, resume: bool = True,
                   logger: Any = 'current') -> Dict[str, Any]:
    """Generate pseudo labels for a whole dataset (see the module docstring).

    Runs in every process of a distributed group (rank and world size from
    ``mmengine.dist.get_dist_info``); each handles its shard, rank 0 merges.

    Args:
        cfg: mmengine ``Config`` (or mapping) with ``pseudo_dataset``,
            ``generator``, ``mask_maker`` and optional ``pseudo_job``.
        work_dir: Output folder.
        save_cams: Write ``cams/<id>.npy``; None = ``cfg.pseudo_job.save_cams``.
        resume: Skip images whose outputs all exist. False recomputes all.
        logger: mmengine logger (or ``'current'``) for progress lines.

    Returns:
        The summary (written to ``<work_dir>/summary.json`` by rank 0; other
        ranks get the merged counts and failures too).

    Raises:
        PermissionError: ``work_dir`` cannot be created or written (before any
            image is processed).
        WorkDirLockedError: Another job is using ``work_dir``.
        OutputWriteError: An output could not be written mid-run (disk full...).
        KeyError / ValueError: Config problems (missing sections, class-count
            mismatch, resuming a work dir made with other settings).
    """
    from mmengine.dist import broadcast_object_list, get_dist_info

    started = time.time()
    started_iso = datetime.datetime.now().isoformat(timespec='seconds')
    rank, world_size = get_dist_info()
    work_dir = Path(work_dir)
    for section in ('pseudo_dataset', 'generator', 'mask_maker'):
        if cfg.get(section) is None:
            raise KeyError(f'the config has no {section!r} section (needed by the '
                           'pseudo-label job)')
    job = _resolve_job_options(cfg, save_cams)
    layout = OutputLayout(work_dir, save_cams=job['save_cams'])
    import torch
    if job['torch_threads'] is not None:
        torch.set_num_threads(int(job['torch_threads']))

    # 1. output folder, before any expensive work; its lock (rank 0 for the whole
    #    job, outcome shared with the other ranks); the dataset (cheap)
    check_writable(work_dir)
    lock = None
    lock_error: List[Optional[str]] = [None]
    if rank == 0:
        try:
            lock = acquire_work_dir_lock(work_dir)
        except WorkDirLockedError as exc:
            lock_error[0] = str(exc)
    if world_size > 1:
        broadcast_object_list(lock_error, src=0)
    if lock_error[0] is not None:
        raise WorkDirLockedError(lock_error[0])
    try:
        return _run_locked(cfg, work_dir=work_dir, job=job, layout=layout, rank=rank,
                           world_size=world_size, resume=resume, logger=logger,
                           started=started, started_iso=started_iso)
    finally:
        if lock is not None:
            lock.close()


def _run_locked(cfg: Mapping[str, Any], *, work_dir: Path, job: Dict[str, Any],
                layout: OutputLayout, rank: int, world_size: int, resume: bool,
                logger: Any, started: float, started_iso: str) -> Dict[str, Any]:
    """The body of :func:`run_pseudo_job`, run while the work-dir lock is held."""
    import torch
    from mmengine.dist import barrier, broadcast_object_list
    from mmseg.registry import DATASETS, MODELS
    dataset = DATASETS.build(copy.deepcopy(cfg['pseudo_dataset']))
    ids = [check_output_id(i) for i in dataset.ids]
    if len(set(ids)) != len(ids):
        raise ValueError('the dataset yields duplicate image ids')
    fingerprint = config_fingerprint(cfg, job,
                                     source_files=getattr(dataset, 'source_files', ()))
    if rank == 0:
        removed = cleanup_stale_temps([work_dir])  # outputs, rank records, reports (locked)
        if removed:
            _log(f'removed {len(removed)} stale temporary file(s) of an interrupted run',
                 logger)
        shutil.rmtree(work_dir / _RANK_DIR, ignore_errors=True)
        _check_fingerprint(work_dir, fingerprint, resume=resume)
    for d in layout.output_dirs():
        d.mkdir(parents=True, exist_ok=True)
    barrier()

    # 2. this rank's shard
    mine = shard_indices(ids, rank=rank, world_size=world_size)
    todo = [i for i in mine if not (resume and layout.is_done(ids[i]))]
    n_resumed = len(mine) - len(todo)

    # 3. models
    generator = MODELS.build(copy.deepcopy(cfg['generator']))
    mask_maker = MODELS.build(copy.deepcopy(cfg['mask_maker']))
    gen_names = list(getattr(generator, 'class_names', []) or [])
    if not gen_names:
        raise ValueError('the generator exposes no class_names')
    num_classes = len(gen_names)
    if dataset.num_classes is not None and dataset.num_classes != num_classes:
        raise ValueError(
            f'the dataset ({type(dataset).__name__}) uses {dataset.num_classes} classes but '
            f'the generator ({type(generator).__name__}) has {num_classes}; use the same '
            'class table for both')
    if rank == 0:
        _log(f'pseudo labels: {len(ids)} images ({dataset!r}), {world_size} process(es); '
             f'rank 0: {len(mine)} images, {n_resumed} already done, {len(todo)} to do; '
             f'output {work_dir}', logger)

    # 4. the loop
    failures: List[Dict[str, Any]] = []
    stage_s = dict(load=0.0, generate=0.0, mask=0.0, write=0.0)
    n_ok = 0
    loop_start = time.perf_counter()
    last_log = loop_start
    for n, idx in enumerate(todo, 1):
        image_id = ids[idx]
        img_path: Optional[str] = None
        try:
            record = dataset[idx]
            img_path = record['img_path']
            timings = process_one(record, generator=generator, mask_maker=mask_maker,
                                  layout=layout, num_classes=num_classes,
                                  cam_dtype=job['cam_dtype'],
                                  exif_transpose=job['exif_transpose'],
                                  max_image_pixels=job['max_image_pixels'],
                                  fsync=bool(job['fsync']))
            for k, v in timings.items():
                stage_s[k] += v
            n_ok += 1
        except OutputWriteError:
            raise
        except ImageFailure as exc:
            failures.append(dict(id=image_id, img_path=img_path, stage=exc.stage,
                                 reason=exc.reason, rank=rank))
        except (OSError, ValueError, KeyError) as exc:  # dataset[idx] (e.g. missing GT)
            failures.append(dict(id=image_id, img_path=img_path, stage='record',
                                 reason=f'{type(exc).__name__}: {exc}', rank=rank))
        except Exception as exc:  # noqa: BLE001 - unexpected, keep the traceback
            failures.append(dict(id=image_id, img_path=img_path, stage='unexpected',
                                 reason=f'{type(exc).__name__}: {exc}', rank=rank,
                                 traceback=traceback.format_exc()))
        fault_point('between_images', image_id)
        if failures and failures[-1]['id'] == image_id:
            f = failures[-1]
            _log(f'[rank {rank}] FAILED {image_id} ({f["img_path"]}): {f["stage"]}: '
                 f'{f["reason"]}', logger, level=30)
        now = time.perf_counter()
        if rank == 0 and (n % int(job['log_interval']) == 0 or n == len(todo)
                          or now - last_log > 60):
            last_log = now
            rate = n / max(now - loop_start, 1e-9)
            _log(f'[{n}/{len(todo)}] {rate:.2f} img/s, ETA {_fmt_eta((len(todo) - n) / rate)}, '
                 f'{len(failures)} failed (rank 0 of {world_size})', logger)
    loop_s = time.perf_counter() - loop_start

    # 5. per-rank record, merged by rank 0
    rank_record = dict(rank=rank, assigned=len(mine), resumed=n_resumed, attempted=len(todo),
                       succeeded=n_ok, failures=failures, loop_s=loop_s, stage_s=stage_s,
                       host=socket.gethostname(), pid=os.getpid(),
                       torch_threads=torch.get_num_threads())
    rank_dir = work_dir / _RANK_DIR
    rank_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(rank_dir / f'rank{rank}.json',
                       json.dumps(_jsonable(rank_record)).encode())
    barrier()

    summary: Dict[str, Any] = {}
    if rank == 0:
        summary = _merge_and_report(
            cfg=cfg, dataset=dataset, generator=generator, ids=ids, layout=layout,
            job=job, world_size=world_size, num_classes=num_classes, started=started,
            started_iso=started_iso, resume=resume, fingerprint=fingerprint, logger=logger)
    brief = [dict(counts=summary.get('counts'), failures=summary.get('failures'))]
    broadcast_object_list(brief, src=0)
    if rank != 0:
        summary = dict(brief[0], rank=rank, work_dir=str(work_dir))
    return summary


def _merge_and_report(*, cfg: Mapping[str, Any], dataset: Any, generator: Any,
                      ids: List[str], layout: OutputLayout, job: Dict[str, Any],
                      world_size: int, num_classes: int, started: float, started_iso: str,
                      resume: bool, fingerprint: Dict[str, Any], logger: Any) -> Dict[str, Any]:
    """Rank 0: merge the rank records, evaluate, write summary.json."""
    work_dir = layout.work_dir
    ranks = []
    for r in range(world_size):
        path = work_dir / _RANK_DIR / f'rank{r}.json'
        if not path.is_file():
            raise RuntimeError(f'rank {r} did not leave its record {path}')
        ranks.append(json.loads(path.read_text()))
    shutil.rmtree(work_dir / _RANK_DIR, ignore_errors=True)
    failures = sorted((f for r in ranks for f in r['failures']), key=lambda f: f['id'])
    stage_s = {k: sum(r['stage_s'][k] for r in ranks) for k in ranks[0]['stage_s']}
    succeeded = sum(r['succeeded'] for r in ranks)
    loop_wall = max(r['loop_s'] for r in ranks)
    done = sum(1 for i in ids if layout.is_done(i))
    counts = dict(total=len(ids), done=done, processed=succeeded,
                  skipped_resumed=sum(r['resumed'] for r in ranks), failed=len(failures))

    evaluation = None
    eval_files = None
    if job['evaluate']:
        items = dataset.gt_items()
        if any(it['gt_path'] for it in items):
            fault_point('evaluate', work_dir)
            from wsss_mmseg.evaluation.pseudo_eval import (evaluate_pseudo_dir,
                                                           write_eval_reports)
            t = time.perf_counter()
            result = evaluate_pseudo_dir(
                items, num_classes=num_classes + 1, mask_dir=layout.mask_dir,
                confidence_dir=layout.confidence_dir,
                class_names=_class_names_for_eval(dataset, generator, num_classes),
                conf_thresholds=job['eval_conf_thresholds'])
            eval_files = write_eval_reports(result, work_dir)
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
        failures=failures, evaluation=evaluation, eval_files=eval_files)
    fault_point('before_summary', work_dir)
    atomic_write_bytes(work_dir / 'summary.json',
                       (json.dumps(_jsonable(summary), indent=1) + '\n').encode())
    failures_txt = work_dir / 'failures.txt'
    if failures:
        lines = [f'{f["id"]}\t{f["img_path"]}\t{f["stage"]}\t{f["reason"]}' for f in failures]
        atomic_write_bytes(failures_txt, ('\n'.join(lines) + '\n').encode())
    elif failures_txt.exists():
        failures_txt.unlink()
    rate = summary['timings']['images_per_s']
    _log(f'done: {counts["done"]}/{counts["total"]} images have pseudo labels '
         f'({counts["processed"]} made now, {counts["skipped_resumed"]} resumed, '
         f'{counts["failed"]} failed) in {wall:.1f} s'
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

