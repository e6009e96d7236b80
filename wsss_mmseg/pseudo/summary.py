"""The end of the pseudo-label job: rank 0 merges the rank records, evaluates, reports.

:func:`merge_and_report` (the last step of :func:`wsss_mmseg.pseudo.job.run_pseudo_job`)
writes ``summary.json``, ``failures.txt`` and, when asked, the HTML report;
:func:`summarize_failures` is the failure list the tool and ``PseudoLabelHook`` print.
"""
from __future__ import annotations

import datetime
import json
import platform
import shutil
import socket
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

from .fingerprint import jsonable
from .io import atomic_write_bytes, fault_point
from .job_log import log_line
from .workdir import RANK_DIR, OutputLayout, inspect_work_dir

__all__ = ['merge_and_report', 'summarize_failures']


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


def _class_names_for_eval(dataset: Any, generator: Any, num_classes: int) -> List[str]:
    names = list(getattr(generator, 'class_names', []) or [])
    if len(names) != num_classes:
        names = [f'class_{i}' for i in range(num_classes)]
    return ['background'] + [str(n) for n in names]


def merge_and_report(*, cfg: Mapping[str, Any], dataset: Any, generator: Any,
                     ids: List[str], layout: OutputLayout, job: Dict[str, Any],
                     world_size: int, num_classes: int, started: float, started_iso: str,
                     resume: bool, fingerprint: Dict[str, Any], logger: Any) -> Dict[str, Any]:
    """Rank 0: merge the rank records, evaluate, write summary.json.

    Args:
        cfg: The job config (recorded in the summary).
        dataset: The label source (GT items for the evaluation).
        generator: The built generator (class names for the evaluation).
        ids: All image ids.
        layout: The job's output layout.
        job: Resolved ``pseudo_job`` options.
        world_size: Number of ranks (one record each).
        num_classes: Number of foreground classes.
        started: ``time.time()`` at the start of the job.
        started_iso: The same, ISO-formatted.
        resume: Whether the job resumed.
        fingerprint: The settings fingerprint of the outputs.
        logger: mmengine logger for the result lines.

    Returns:
        The summary (as written to ``summary.json``, plus ``report`` when written).
    """
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
                log_line(f'evaluation FAILED for {f}', logger, level=30)
            if len(evaluation_failures) > 20:
                log_line(f'... and {len(evaluation_failures) - 20} more evaluation failures (eval.json)', logger,
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
                log_line(f'eval [{n}] mIoU {miou} on {result["num_images"]} images', logger)

    wall = time.time() - started
    summary = dict(
        work_dir=str(work_dir),
        config_file=getattr(cfg, 'filename', None),
        config=jsonable(cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)),
        fingerprint=fingerprint['sha256'],
        job=jsonable(job), resume=resume, world_size=world_size,
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
                       (json.dumps(jsonable(summary), indent=1) + '\n').encode())
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
            log_line(f'report: {summary["report"]}', logger)
        except Exception as exc:  # noqa: BLE001 - the labels are done; the report is extra
            log_line(f'could not write the HTML report: {type(exc).__name__}: {exc}', logger, level=30)
    rate = summary['timings']['images_per_s']
    log_line(f'done: {counts["done"]}/{counts["total"]} images have pseudo labels '
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
