"""The pseudo-label work dir: layout, settings fingerprint, provenance, locks, options, exit codes.

One module owns these rules; ``tools/generate_pseudo.py`` (through
:func:`wsss_mmseg.pseudo.job.run_pseudo_job`) and ``PseudoLabelHook`` both use it. Three of
its parts are sibling modules whose public names are re-exported here:
:mod:`~wsss_mmseg.pseudo.fingerprint` (the settings fingerprint),
:mod:`~wsss_mmseg.pseudo.file_locks` (the ``flock`` primitive of the lock) and
:mod:`~wsss_mmseg.pseudo.job_options` (the ``pseudo_job`` options); the layout, the
provenance records, the resume inspection, moving an output set aside, the work-dir lock,
the exceptions and the exit statuses are defined here.

Layout below ``work_dir``::

    masks/<id>.png, confidence/<id>.png, cams/<id>.npy   the outputs (see pseudo.io)
    pseudo_fingerprint.json     the settings the outputs were made with (+ their sha256)
    .provenance/rank<r>.jsonl   one record per finished image: id, fingerprint, size and
                                CRC-32 of each of its files (append-only, per rank)
    summary.json, failures.txt, eval.json, eval.md, eval_iou.png, report/   reports
    superseded/<time>-<sha12>/  an older output set, moved aside (never deleted)
    .lock                       held (flock) by the job that writes the folder

Rules:

* **Provenance.** An image counts as done only when a provenance record of the
  *current* fingerprint lists it and each of its files still has the recorded size
  (and, with ``pseudo_job.verify_resume='crc'``, the default, the recorded CRC-32):
  a file from another run, a zeroed mask or a truncated confidence map is recomputed.
  The record is appended after the image's files are renamed into place, so a kill in
  between only costs recomputing that image.
* **One setting per folder.** The fingerprint covers the dataset, generator and mask
  sections, the content of the dataset's list/label files and of every weights or
  checkpoint file the generator names (sha256, cached by path + size + mtime + ctime +
  inode: :mod:`wsss_mmseg.utils.file_hash`), and
  the job options that change bytes. It is written only after the config has been
  validated and the models built. Resuming under another fingerprint, or into outputs
  without a readable fingerprint, is refused (exit status 3); ``--no-resume`` (the
  hook's ``mode='regenerate'``) first moves the old set to ``superseded/`` with one
  rename per entry -- old outputs are never deleted and never mixed with new ones.
* **One job per folder.** Rank 0 holds ``fcntl.flock`` on ``.lock`` for the whole job.

Exit statuses of the tool: :data:`EXIT_OK` 0 all done; :data:`EXIT_FAILED_IMAGES` 1 some
images (or evaluations) failed, the job completed; :data:`EXIT_WRITE` 2 an output could
not be written or the folder is locked by another job; :data:`EXIT_CONFIG` 3 bad config,
arguments or work dir (before any image); :data:`EXIT_INTERRUPTED` 130 interrupted.
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from .file_locks import close_inherited_locks, try_flock
from .fingerprint import (FINGERPRINT_FILE, config_fingerprint, describe_fingerprint_change,
                          generator_label, read_fingerprint, weights_ids, write_fingerprint)
from .io import atomic_write_bytes, check_output_id
from .job_options import JOB_DEFAULTS, resolve_job_options
from .options import PseudoConfigError

PathLike = Union[str, os.PathLike]

__all__ = [
    'EXIT_OK', 'EXIT_FAILED_IMAGES', 'EXIT_WRITE', 'EXIT_CONFIG', 'EXIT_INTERRUPTED',
    'FINGERPRINT_FILE', 'LOCK_FILE', 'RANK_DIR', 'PROVENANCE_DIR', 'SUPERSEDED_DIR', 'REPORT_FILES',
    'JOB_DEFAULTS', 'OutputLayout', 'OutputWriteError', 'WorkDirLockedError', 'WorkDirConflictError',
    'PseudoConfigError', 'resolve_job_options', 'config_fingerprint', 'weights_ids',
    'read_fingerprint', 'write_fingerprint', 'describe_fingerprint_change', 'generator_label',
    'has_outputs', 'ProvenanceJournal', 'read_provenance', 'WorkDirState', 'inspect_work_dir', 'move_aside',
    'try_flock', 'acquire_work_dir_lock', 'close_inherited_locks', 'check_writable',
]

EXIT_OK = 0
EXIT_FAILED_IMAGES = 1
EXIT_WRITE = 2
EXIT_CONFIG = 3
EXIT_INTERRUPTED = 130

LOCK_FILE = '.lock'
RANK_DIR = '.pseudo_ranks'
PROVENANCE_DIR = '.provenance'
SUPERSEDED_DIR = 'superseded'
OUTPUT_SUBDIRS = ('masks', 'confidence', 'cams')
REPORT_FILES = ('summary.json', 'failures.txt', 'eval.json', 'eval.md', 'eval_iou.png', 'report')


class OutputWriteError(OSError):
    """An output file could not be written: the job stops (not a per-image failure)."""


class WorkDirLockedError(RuntimeError):
    """Another pseudo-label job holds the lock of the work dir."""


class WorkDirConflictError(PseudoConfigError):
    """The work dir holds outputs of other (or unknown) settings; resuming would mix them."""


# ------------------------------------------------------------------- layout
class OutputLayout:
    """File names of one pseudo-label job below ``work_dir``.

    ``masks/<id>.png``, ``confidence/<id>.png`` and (optional) ``cams/<id>.npy``;
    ids with ``/`` create sub-folders.

    Args:
        work_dir: Output root.
        save_cams: Whether CAM files are part of a finished image.
    """

    SUBDIRS = OUTPUT_SUBDIRS

    def __init__(self, work_dir: PathLike, *, save_cams: bool = False) -> None:
        self.work_dir = Path(work_dir)
        self.save_cams = bool(save_cams)
        self.mask_dir = self.work_dir / 'masks'
        self.confidence_dir = self.work_dir / 'confidence'
        self.cam_dir = self.work_dir / 'cams'

    def mask_path(self, image_id: str) -> Path:
        """Path of the label mask of ``image_id``."""
        return self.mask_dir / f'{check_output_id(image_id)}.png'

    def confidence_path(self, image_id: str) -> Path:
        """Path of the confidence map of ``image_id``."""
        return self.confidence_dir / f'{check_output_id(image_id)}.png'

    def cam_path(self, image_id: str) -> Path:
        """Path of the CAM file of ``image_id``."""
        return self.cam_dir / f'{check_output_id(image_id)}.npy'

    def expected_paths(self, image_id: str) -> List[Path]:
        """All files that make ``image_id`` finished."""
        paths = [self.mask_path(image_id), self.confidence_path(image_id)]
        if self.save_cams:
            paths.append(self.cam_path(image_id))
        return paths

    def output_dirs(self) -> List[Path]:
        """The folders this layout writes into."""
        dirs = [self.mask_dir, self.confidence_dir]
        if self.save_cams:
            dirs.append(self.cam_dir)
        return dirs

    def make_dirs(self, image_id: str) -> None:
        """Create the (sub-)folders needed for ``image_id``'s files."""
        for p in self.expected_paths(image_id):
            p.parent.mkdir(parents=True, exist_ok=True)


def has_outputs(work_dir: PathLike) -> bool:
    """Any file in ``masks/``, ``confidence/`` or ``cams/``, or provenance records."""
    for name in OUTPUT_SUBDIRS + (PROVENANCE_DIR,):
        d = Path(work_dir) / name
        if d.is_dir():
            for _root, _dirs, files in os.walk(d):
                if files:
                    return True
    return False


# --------------------------------------------------------------- provenance
def file_record(path: Path, data: Optional[bytes] = None) -> List[int]:
    """``[size, crc32]`` of a file (of ``data`` when given: the bytes just written)."""
    if data is None:
        data = path.read_bytes()
    return [len(data), zlib.crc32(data) & 0xFFFFFFFF]


class ProvenanceJournal:
    """Append-only per-rank record of finished images (see the module docstring).

    Args:
        work_dir: Job output folder.
        rank: This process's rank (one file per rank: no two writers share a file).
        fingerprint: sha256 of the current settings.
        fsync: fsync after each append.
    """

    def __init__(self, work_dir: PathLike, *, rank: int, fingerprint: str, fsync: bool = True) -> None:
        self.dir = Path(work_dir) / PROVENANCE_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / f'rank{int(rank)}.jsonl'
        self.fingerprint = fingerprint
        self.fsync = fsync
        self._f = open(self.path, 'ab')

    def append(self, image_id: str, files: Mapping[str, Sequence[int]]) -> None:
        """Record that ``image_id``'s files (relative path -> ``[size, crc32]``) are complete."""
        line = json.dumps(dict(id=image_id, fp=self.fingerprint, files=dict(files)), sort_keys=True)
        try:
            self._f.write(line.encode() + b'\n')
            self._f.flush()
            if self.fsync:
                os.fsync(self._f.fileno())
        except OSError as exc:
            raise OutputWriteError(exc.errno, f'cannot write {self.path}: {exc.strerror or exc}',
                                   str(self.path)) from exc

    def close(self) -> None:
        """Close the file."""
        self._f.close()


def read_provenance(work_dir: PathLike, fingerprint: str) -> Dict[str, Dict[str, List[int]]]:
    """Records of the current fingerprint, ``{image id: {relative path: [size, crc32]}}``.

    Torn last lines (a killed writer) and records of other fingerprints are ignored;
    a later record of an id replaces an earlier one.
    """
    out: Dict[str, Dict[str, List[int]]] = {}
    d = Path(work_dir) / PROVENANCE_DIR
    if not d.is_dir():
        return out
    for path in sorted(d.glob('rank*.jsonl')):
        with open(path, 'rb') as f:
            for raw in f:
                try:
                    rec = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(rec, dict) and rec.get('fp') == fingerprint and isinstance(rec.get('id'), str) \
                        and isinstance(rec.get('files'), dict):
                    out[rec['id']] = rec['files']
    return out


def verify_record(work_dir: Path, files: Mapping[str, Sequence[int]], *, check_crc: bool) -> bool:
    """Whether every file of a record still has its recorded size (and CRC-32)."""
    for rel, (size, crc) in files.items():
        path = work_dir / rel
        try:
            if path.stat().st_size != size:
                return False
            if check_crc and file_record(path)[1] != crc:
                return False
        except OSError:
            return False
    return True


@dataclass
class WorkDirState:
    """What a work dir holds for a list of image ids under the current settings.

    Attributes:
        fingerprint_status: ``'match'``, ``'differs'``, ``'absent'`` or ``'corrupt'``.
        stored: The stored fingerprint (when readable).
        has_outputs: Any output or provenance file exists.
        done: Ids whose outputs are verified for the current fingerprint.
        total: Number of ids asked about.
    """

    fingerprint_status: str
    stored: Optional[Dict[str, Any]]
    has_outputs: bool
    done: List[str] = field(default_factory=list)
    total: int = 0

    @property
    def missing(self) -> int:
        """Number of ids without verified outputs."""
        return self.total - len(self.done)


def inspect_work_dir(work_dir: PathLike, ids: Sequence[str], fingerprint: Mapping[str, Any], *,
                     save_cams: bool = False, verify: str = 'crc') -> WorkDirState:
    """Fingerprint status and the verified finished images of ``ids``.

    Args:
        work_dir: Job output folder.
        ids: Image ids of the dataset.
        fingerprint: Current :func:`config_fingerprint`.
        save_cams: Whether a CAM file is part of a finished image.
        verify: ``'crc'`` (read every file) or ``'size'`` (stat only).

    Returns:
        The state; ``done`` is empty unless the fingerprint matches.
    """
    work_dir = Path(work_dir)
    status, stored = read_fingerprint(work_dir)
    if status == 'ok':
        status = 'match' if stored['sha256'] == fingerprint['sha256'] else 'differs'
    state = WorkDirState(fingerprint_status=status, stored=stored, has_outputs=has_outputs(work_dir),
                         total=len(ids))
    if status != 'match':
        return state
    records = read_provenance(work_dir, fingerprint['sha256'])
    layout = OutputLayout(work_dir, save_cams=save_cams)
    for image_id in ids:
        files = records.get(image_id)
        if files is None:
            continue
        needed = {p.relative_to(work_dir).as_posix() for p in layout.expected_paths(image_id)}
        if needed <= set(files) and verify_record(work_dir, {k: files[k] for k in needed},
                                                   check_crc=verify == 'crc'):
            state.done.append(image_id)
    return state


def move_aside(work_dir: PathLike, stored: Optional[Mapping[str, Any]] = None) -> Optional[Path]:
    """Move the current output set to ``superseded/<time>-<sha12>/`` (nothing is deleted).

    Moves ``masks/``, ``confidence/``, ``cams/``, ``.provenance/``, the fingerprint and the
    reports, one ``os.rename`` each (the fingerprint last but one, the provenance last,
    so an interrupted move never leaves new-looking records next to old files).

    Returns:
        The folder they went to, or None when there was nothing to move.
    """
    work_dir = Path(work_dir)
    names = [n for n in OUTPUT_SUBDIRS + REPORT_FILES + (FINGERPRINT_FILE, PROVENANCE_DIR)
             if (work_dir / n).exists() or (work_dir / n).is_symlink()]
    if not names:
        return None
    sha = str((stored or {}).get('sha256') or 'unknown')[:12]
    stamp = datetime.datetime.now().strftime('%Y%m%d_%H%M%S_%f')
    dest = work_dir / SUPERSEDED_DIR / f'{stamp}-{sha}'
    dest.mkdir(parents=True, exist_ok=False)
    for name in names:
        os.rename(work_dir / name, dest / name)
    return dest


# --------------------------------------------------------------------- lock
def acquire_work_dir_lock(work_dir: PathLike) -> Optional[Any]:
    """Take the exclusive lock of ``work_dir`` (``<work_dir>/.lock``), without waiting.

    Returns:
        The open lock file (closing it, or the process ending, releases it), or None
        where ``fcntl`` is unavailable.

    Raises:
        WorkDirLockedError: Another process holds it (message names folder and holder).
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


def check_writable(work_dir: PathLike) -> None:
    """Create ``work_dir`` and prove that files can be written there.

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
        raise PermissionError(f'the output directory {work_dir} is not writable: {exc}') from exc
