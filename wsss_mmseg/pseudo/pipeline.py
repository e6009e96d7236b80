"""One rank's overlapped pipeline of :func:`~wsss_mmseg.pseudo.job.run_pseudo_job`::

    DataLoader workers        main process                    post-processing pool
    decode, memory check, ->  generator.generate(batch)   ->  mask maker (CRF) at the working
    prepare (resize, input)   (bucketed, batched CLIP)        size, upsample, PNG, atomic write
                              provenance record  <----------  [size, crc32] of each file

Queues are bounded (the loader prefetches two batches, each post-processing worker holds
one image), so memory stays flat over any number of images. A failing image
(unreadable, no/unknown labels, too large, generator or mask error) is recorded with its
path and reason and the job goes on -- a batch whose generation fails is retried one
image at a time, so only the bad image fails. A failing *write* stops the job
(:class:`~wsss_mmseg.pseudo.workdir.OutputWriteError`). Its images (a shard of the dataset)
and its provenance journal are given by the job; the rank's counts, failures and stage
timings are left on the :class:`RankPipeline` for the job's rank record.
"""
from __future__ import annotations

import datetime
import time
import traceback
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..utils import heap
from .io import fault_point
from .job_log import log_line
from .stages import ImageLoader, OutputWriter
from .workdir import OutputWriteError, ProvenanceJournal, close_inherited_locks
from .writer_pool import WriterPool

__all__ = ['RankPipeline', 'start_writer_pool']


def _fmt_eta(seconds: float) -> str:
    if seconds != seconds or seconds in (float('inf'), float('-inf')):
        return '?'
    return str(datetime.timedelta(seconds=int(round(seconds))))


def _init_loader_worker(_: int) -> None:
    """DataLoader ``worker_init_fn``: drop the parent's locks; keep the decode heap flat.

    Every large buffer of a loading worker is an image (decoded, resized, network input) of a
    different size; with glibc's dynamic mmap threshold those fragment the heap and the
    worker's memory grows with the number of images (see :mod:`wsss_mmseg.utils.heap`).
    """
    close_inherited_locks()
    heap.use_fixed_mmap_threshold()


def start_writer_pool(n: int, writer: OutputWriter) -> Optional[WriterPool]:
    """The post-processing workers (None when ``n == 0`` or without ``fork``).

    Args:
        n: Number of worker processes (``pseudo_job.postprocess_workers``).
        writer: The post-processing step they run (forked with it).

    Returns:
        The pool, or None: post-process inline.
    """
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


class RankPipeline:
    """One rank's loop: loader workers -> batched generator -> post-processing pool.

    Args:
        dataset: The label source (``pseudo_dataset``).
        ids: All image ids of ``dataset``.
        generator: The built generator.
        writer: The post-processing step (mask maker, encode, atomic write).
        pool: Its worker pool (:func:`start_writer_pool`), or None: inline.
        journal: This rank's provenance journal.
        job: Resolved ``pseudo_job`` options.
        num_classes: Number of foreground classes.
        rank: This process's rank.
        world_size: Number of processes.
        logger: mmengine logger for progress lines.
        save_cams: Whether CAM files are written.
    """

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
        log_line(f'[rank {self.rank}] FAILED {rec["id"]} ({rec["img_path"]}): {stage}: {reason}', self.logger,
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
        log_line(f'[{n}/{total}] {rate:.2f} img/s, ETA {_fmt_eta((total - n) / rate if rate else float("nan"))}, '
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
