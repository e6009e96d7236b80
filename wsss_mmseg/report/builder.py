"""``write_report``: the inspection report of a pseudo-label work dir.

Two passes over the data, each streaming one image at a time:

1. every image with a mask: statistics (:mod:`.statistics`) and the gallery
   selection (:mod:`.gallery`) — memory stays constant in the number of images;
2. the selected images only (at most ``gallery_size``): thumbnails.

Then the figures (:mod:`.plots`) and ``index.html`` (:mod:`.render`). The
report folder (default ``<work_dir>/report``) holds ``index.html``,
``figures/*.png`` and ``thumbs/*.jpg``; it opens from disk without a server or
a network.
"""
from __future__ import annotations

import datetime
import numbers
import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from wsss_mmseg.pseudo.io import read_confidence_png, read_mask_png
from wsss_mmseg.utils.atomic import atomic_replace

from . import plots, render
from .gallery import (GallerySelector, confidence_image, overlay_mask, resize_nearest,
                      resize_rgb, save_thumbnail, thumbnail_size)
from .statistics import ReportStatistics
from .workdir import ImageEntry, PseudoWorkDir, ReportArgumentError

PathLike = Union[str, os.PathLike]

__all__ = ['write_report', 'DEFAULT_GALLERY_SIZE']

DEFAULT_GALLERY_SIZE = 200
#: μ values listed in the sweep table (besides the job's own).
_TABLE_MUS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99)


def _pct(x: Optional[float]) -> str:
    return '—' if x is None or (isinstance(x, float) and np.isnan(x)) else f'{100 * x:.2f}'


def _read_gt(path: Optional[str]) -> Optional[np.ndarray]:
    if not path:
        return None
    return read_mask_png(path)


def _entry_classes(rec: Dict[str, Any], entry: ImageEntry) -> List[int]:
    labels = {int(c) + 1 for c in (entry.get('label_ids') or [])
              if isinstance(c, numbers.Integral)}
    return sorted(set(rec['pred_classes']) | set(rec['gt_classes']) | labels)


def _score_text(rec: Dict[str, Any]) -> str:
    parts = []
    if rec['miou'] is not None:
        parts.append(f'mIoU {_pct(rec["miou"])}')
    parts.append(f'mean conf. {_pct(rec["mean_confidence"])}')
    parts.append(f'labelled {_pct(rec["labelled_fraction"])} %')
    parts.append(f'foreground {_pct(rec["foreground_fraction"])} %')
    return ' · '.join(parts)


def _run_rows(wd: PseudoWorkDir) -> List[tuple]:
    s = wd.summary
    counts = s.get('counts') if isinstance(s.get('counts'), dict) else {}
    timings = s.get('timings') if isinstance(s.get('timings'), dict) else {}
    cfg = wd.config
    gen = cfg.get('generator') if isinstance(cfg.get('generator'), dict) else {}
    rate = timings.get('images_per_s')
    wall = timings.get('wall_s')
    rows = [
        ('config file', s.get('config_file')),
        ('settings fingerprint (sha256)', s.get('fingerprint')),
        ('generator', gen.get('type')),
        ('label source', repr(wd.dataset) if wd.dataset is not None else None),
        ('images', ', '.join(f'{k} {v}' for k, v in counts.items()) if counts else None),
        ('started / finished', f'{s.get("started_at", "?")} / {s.get("finished_at", "?")}'
         if s else None),
        ('wall time', None if not isinstance(wall, (int, float)) else f'{wall:.1f} s'),
        ('images/s', None if not isinstance(rate, (int, float)) else f'{rate:.3f}'),
        ('processes', s.get('world_size')),
        ('host', s.get('host')),
    ]
    return rows


def _class_label_names(wd: PseudoWorkDir, num_classes: int) -> List[str]:
    names = wd.class_names
    if not names or len(names) != num_classes - 1:
        names = [f'class_{i}' for i in range(num_classes - 1)]
    return ['background'] + list(names)


def _guess_num_classes(wd: PseudoWorkDir) -> int:
    if wd.class_names:
        return len(wd.class_names) + 1
    # no class table: the largest label value in the masks decides (one cheap pass)
    top = 0
    for image_id in wd.ids():
        p = wd.mask_path(image_id)
        if p.is_file():
            m = read_mask_png(p)
            vals = m[m != 255]
            if vals.size:
                top = max(top, int(vals.max()))
    return max(2, top + 1)


def _thumb_tiles(wd: PseudoWorkDir, entry: ImageEntry, slot: int, thumbs: Path, *,
                 max_side: int, exif_transpose: bool) -> tuple:
    """Write the thumbnails of one gallery image; returns (tiles, note)."""
    from wsss_mmseg.utils.images import load_rgb
    mask = read_mask_png(wd.mask_path(entry['id']))
    conf = read_confidence_png(wd.confidence_path(entry['id']))
    note = ''
    photo = None
    if entry.get('img_path'):
        try:
            photo = load_rgb(entry['img_path'], exif_transpose=exif_transpose)
            if photo.shape[:2] != mask.shape:
                note = (f'photo size {photo.shape[1]}x{photo.shape[0]} differs from the mask '
                        f'{mask.shape[1]}x{mask.shape[0]}: photo not shown')
                photo = None
        except (OSError, ValueError) as exc:
            note = f'photo not readable: {exc}'
    else:
        note = 'photo path unknown (label source not available)'
    size = thumbnail_size(mask.shape[0], mask.shape[1], max_side)
    small_mask = resize_nearest(mask, size)
    if photo is not None:
        base = resize_rgb(photo, size)
        alpha = 0.55
    else:
        base, alpha = np.zeros(size + (3,), np.uint8), 1.0
    gt = None
    if entry.get('gt_path'):
        try:
            gt = _read_gt(entry['gt_path'])
        except (OSError, ValueError) as exc:
            note = (note + '; ' if note else '') + f'GT not readable: {exc}'
    images = []
    if photo is not None:
        images.append(('image', 'image', base))
    images.append(('pseudo mask', 'pseudo', overlay_mask(base, small_mask, alpha=alpha)))
    images.append(('confidence', 'confidence',
                   confidence_image(resize_nearest(conf, size), small_mask)))
    if gt is not None and gt.shape == mask.shape:
        images.append(('ground truth', 'gt',
                       overlay_mask(base, resize_nearest(gt, size), alpha=alpha)))
    elif gt is not None:
        note = (note + '; ' if note else '') + (
            f'GT size {gt.shape[1]}x{gt.shape[0]} differs from the mask: GT not shown')
    tiles = []
    for caption, suffix, arr in images:
        rel = f'thumbs/{slot:06d}_{suffix}.jpg'
        save_thumbnail(arr, thumbs / rel.split('/', 1)[1])
        tiles.append((caption, rel))
    return tiles, note


def _sweep_table(sweep: Dict[str, list], marks: Sequence[float], num_bins: int) -> str:
    """Rows of the sweep at a few μ (snapped to the grid j / B) and at the job's own μ."""
    settings: Dict[int, List[float]] = {}
    for mu in list(_TABLE_MUS) + list(marks):
        settings.setdefault(int(round(mu * num_bins)), [])
    for m in marks:
        settings[int(round(m * num_bins))].append(m)
    rows = []
    for j in sorted(settings):
        grid = j / num_bins
        label = f'{grid:g}'
        job_mus = settings[j]
        if job_mus and all(abs(m - grid) < 1e-9 for m in job_mus):
            label += ' (job setting)'
        elif job_mus:
            given = ', '.join(f'{m:g}' for m in job_mus)
            label += f' (nearest threshold to the job setting {given})'
        rows.append((label, _pct(sweep['coverage'][j]), _pct(sweep['miou'][j])))
    return render.table(['μ', 'labelled pixels %', 'mIoU of kept pixels %'], rows)


def write_report(work_dir: PathLike, out_dir: Optional[PathLike] = None, *,
                 gallery_size: int = DEFAULT_GALLERY_SIZE, num_bins: int = 100,
                 thumb_size: int = 192, seed: int = 0, logger: Any = None) -> Path:
    """Write the HTML inspection report of a pseudo-label work dir.

    Args:
        work_dir: Folder written by ``tools/generate_pseudo.py`` /
            ``run_pseudo_job`` (``summary.json``, ``masks/``, ``confidence/``).
        out_dir: Report folder; default ``<work_dir>/report``. Its ``index.html``,
            ``figures/`` and ``thumbs/`` are replaced; nothing else in it is touched.
        gallery_size: Most images in the gallery (worst half, best quarter, a
            random rest when there are more images; see :mod:`.gallery`).
        num_bins: Confidence bins; the μ sweep has thresholds ``j / num_bins``.
        thumb_size: Longest side of the thumbnails, in pixels.
        seed: Seed of the gallery's random sample.
        logger: Optional callable taking one progress line (e.g. ``print``).

    Returns:
        Path of ``index.html``.

    Raises:
        NotAWorkDirError: ``work_dir`` is not a pseudo-label work dir.
        ReportArgumentError: Bad ``gallery_size`` / ``num_bins`` /
            ``thumb_size``, or ``out_dir`` is an existing file.
    """
    for name, value, low in (('gallery_size', gallery_size, 0), ('num_bins', num_bins, 1),
                             ('thumb_size', thumb_size, 16)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ReportArgumentError(f'{name} must be an integer >= {low}, got {value!r}')
    t0 = time.perf_counter()
    wd = PseudoWorkDir(work_dir)
    out = Path(out_dir) if out_dir is not None else wd.path / 'report'
    if out.exists() and not out.is_dir():
        raise ReportArgumentError(f'report folder {out} exists and is not a folder')
    out.mkdir(parents=True, exist_ok=True)
    figures, thumbs = out / 'figures', out / 'thumbs'
    for d in (figures, thumbs):
        if d.is_dir():
            shutil.rmtree(d)
        d.mkdir()
    num_classes = _guess_num_classes(wd)
    names = _class_label_names(wd, num_classes)
    stats = ReportStatistics(num_classes=num_classes, num_bins=num_bins)
    selector = GallerySelector(gallery_size, seed=seed)
    notes = list(wd.notes)
    failed_ids = {str(f.get('id')) for f in wd.failures}
    missing: List[str] = []
    unreadable: List[tuple] = []
    kept: Dict[int, tuple] = {}  # scan index -> (entry, record) of gallery candidates only
    job = wd.summary.get('job') if isinstance(wd.summary.get('job'), dict) else {}
    exif = bool(job.get('exif_transpose', False))

    # pass 1: statistics + selection (streamed)
    for idx, entry in enumerate(wd.entries()):
        image_id = entry['id']
        mpath, cpath = wd.mask_path(image_id), wd.confidence_path(image_id)
        if not (mpath.is_file() and cpath.is_file()):
            if image_id not in failed_ids:
                missing.append(image_id)
            continue
        try:
            mask = read_mask_png(mpath)
            conf = read_confidence_png(cpath)
            gt = None
            if entry.get('gt_path'):
                try:
                    gt = _read_gt(entry['gt_path'])
                except (OSError, ValueError) as exc:
                    unreadable.append((image_id, f'GT: {exc}'))
            rec = stats.update(mask, conf, gt)
        except (OSError, ValueError) as exc:
            unreadable.append((image_id, f'{type(exc).__name__}: {exc}'))
            continue
        score = rec['miou'] if gt is not None else rec['mean_confidence']
        selector.add(idx, score)
        kept[idx] = (ImageEntry(entry), rec)
        if len(kept) > 4 * max(gallery_size, 1):  # forget what can no longer be shown
            keep = selector.candidates()
            kept = {k: v for k, v in kept.items() if k in keep}
        if logger and stats.num_images % 500 == 0:
            logger(f'report: {stats.num_images} images scanned')

    # pass 2: thumbnails of the selected images
    sections = selector.sections()
    cards_html, gallery_classes, slot = [], set(), 0
    titles = dict(all='All images, worst first', worst='Worst', best='Best',
                  random='Random sample')
    for sec, keys in sections:
        if not keys:
            continue
        cards = []
        for key in keys:
            entry, rec = kept[key]
            try:
                tiles, note = _thumb_tiles(wd, entry, slot, thumbs, max_side=thumb_size,
                                           exif_transpose=exif)
            except (OSError, ValueError) as exc:
                tiles, note = [], f'thumbnails failed: {exc}'
            slot += 1
            classes = _entry_classes(rec, entry)
            gallery_classes.update(classes)
            cards.append(render.gallery_card(
                image_id=entry['id'], score_text=_score_text(rec), classes=classes,
                class_names=names, tiles=tiles, note=note))
        cards_html.append(f'<div class="sec-title">{render.esc(titles[sec])} '
                          f'({len(keys)})</div><div class="cards">{"".join(cards)}</div>')

    # figures
    has_gt = stats.num_images_with_gt > 0
    scores = stats.scores()
    sweep = stats.sweep()
    marks = wd.conf_thresholds()
    fig_paths: Dict[str, Optional[str]] = dict(scores=None, confusion=None)
    if has_gt:
        plots.plot_class_scores(names, scores['iou'], scores['precision'], scores['recall'],
                                figures / 'class_scores.png',
                                title=f'IoU / precision / recall per class '
                                      f'({stats.num_images_with_gt} images with GT)')
        plots.plot_confusion(stats.confusion(0.0), names, figures / 'confusion.png',
                             title='Confusion (row-normalised, % of GT pixels)')
        fig_paths.update(scores='figures/class_scores.png', confusion='figures/confusion.png')
    plots.plot_confidence_histograms(stats.conf_hist, names, figures / 'confidence_hist.png')
    plots.plot_mu_sweep(sweep['mu'], sweep['miou'], sweep['coverage'],
                        figures / 'mu_sweep.png', marks=marks)

    # tables
    conf_totals = stats.conf_hist.sum(1)
    mean_conf = stats.mean_confidence()
    hist = stats.confusion(0.0)
    class_rows = []
    for k, name in enumerate(names):
        class_rows.append((name,
                           _pct(scores['iou'][k]) if has_gt else '—',
                           _pct(scores['precision'][k]) if has_gt else '—',
                           _pct(scores['recall'][k]) if has_gt else '—',
                           int(hist[k].sum()) if has_gt else '—', int(conf_totals[k]),
                           _pct(float(mean_conf[k]))))
    if has_gt:
        quality = render.key_values([
            ('images with GT', stats.num_images_with_gt),
            ('mIoU (classes present in GT) %', _pct(scores['miou'])),
            ('mean precision %', _pct(scores['mean_precision'])),
            ('mean recall %', _pct(scores['mean_recall'])),
            ('pixel accuracy %', _pct(scores['pixel_accuracy'])),
            ('labelled pixels (not 255) %', _pct(sweep['coverage'][0])),
        ])
    else:
        quality = '<p class="note">No GT masks: IoU, precision, recall and the confusion ' \
                  'matrix need them; the gallery is sorted by mean confidence.</p>'
    failures = wd.failures
    fail_rows = [(f.get('id'), f.get('img_path'), f.get('stage'), f.get('reason'))
                 for f in failures]
    eval_fails = wd.summary.get('evaluation_failures')
    if isinstance(eval_fails, list):  # written by newer jobs: GT/mask pairs not compared
        fail_rows += [(f.get('id'), f.get('gt_path'), 'evaluation', f.get('reason'))
                      for f in eval_fails if isinstance(f, dict)]
    fail_rows += [(i, None, 'report', r) for i, r in unreadable]
    failed_html = (render.table(['id', 'image', 'stage', 'error'], fail_rows, numeric_from=99)
                   if fail_rows else '<p>None.</p>')
    if missing:
        notes.append(f'{len(missing)} image(s) of the label source have no mask and no '
                     f'recorded failure (not generated yet?), e.g. '
                     + ', '.join(missing[:5]))
    counts = wd.summary.get('counts') if isinstance(wd.summary.get('counts'), dict) else {}
    n_failed = counts.get('failed', len(failures))
    intro = (f'{selector.count} image(s) with masks; showing {slot}. Sorted '
             + ('worst first by per-image mIoU (classes present in its GT).' if has_gt else
                'by mean confidence of the labelled pixels, lowest first.')
             + ' Tiles: photo, pseudo mask over the photo (VOC palette, white = ignored), '
               'confidence (black 0 … white 1, ignored pixels red)'
             + (', ground truth.' if has_gt else '.'))
    elapsed = time.perf_counter() - t0
    page = render.render_page(dict(
        title=render.esc(f'Pseudo-label report: {"/".join(wd.path.resolve().parts[-2:])}'),
        work_dir=render.esc(wd.path),
        made=render.esc(datetime.datetime.now().isoformat(timespec='seconds')),
        n_images=render.esc(stats.num_images),
        report_seconds=render.esc(f'{elapsed:.1f}'),
        notes=render.notes_list(notes),
        run_table=render.key_values(_run_rows(wd) + [('failed (listed below)', n_failed)]),
        quality=quality,
        class_table=render.table(['class', 'IoU %', 'precision %', 'recall %', 'GT px',
                                  'pseudo px', 'mean conf. %'], class_rows),
        class_plot=render.figure(fig_paths['scores'], 'IoU, precision and recall per class'),
        confusion_plot=render.figure(fig_paths['confusion'], 'Confusion matrix'),
        confidence_plot=render.figure('figures/confidence_hist.png',
                                      'Confidence histogram per pseudo class'),
        mu_plot=render.figure('figures/mu_sweep.png', 'μ sweep'),
        mu_table=_sweep_table(sweep, marks, num_bins),
        gallery_intro=render.esc(intro),
        gallery_filter=render.class_filter(names, gallery_classes) if slot else '',
        gallery=''.join(cards_html) or '<p>No images with masks.</p>',
        failed=failed_html,
    ))
    index = out / 'index.html'
    atomic_replace(index, lambda f: f.write(page.encode('utf-8')))
    if logger:
        logger(f'report: {index} ({stats.num_images} images, {slot} in the gallery, '
               f'{time.perf_counter() - t0:.1f} s)')
    return index
