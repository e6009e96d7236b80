"""Quality of pseudo masks against ground truth: mIoU, precision, recall, coverage.

Conventions (those of the official CLIP-ES ``eval_cam.py``):

* A confusion matrix ``hist[gt, pred]`` over ``N = C + 1`` classes
  (0 = background, ``c + 1`` = class ``c``) is summed over all images.
* ``IoU_k = hist[k, k] / (hist[k, :].sum() + hist[:, k].sum() - hist[k, k])``;
  mIoU averages over the classes **present in the ground truth**
  (``valid = hist.sum(1) > 0``), ignoring NaNs.
* Pixels whose GT is 255 (ignore) are left out. Pixels that the *pseudo mask*
  marks 255 are left out of the matrix too (they produce no training signal)
  and are reported separately as ``ignored_fraction`` — the share of all
  pixels of the evaluated masks that are 255. (The official script never sees
  255 in predictions; it evaluates masks before the 255 step.)
* ``precision_k = hist[k, k] / hist[:, k].sum()`` (of the pixels labelled k,
  the share that is k), ``recall_k = hist[k, k] / hist[k, :].sum()``;
  their means run over the same ``valid`` classes (NaN entries skipped).
* Confidence threshold μ: for every μ in ``conf_thresholds`` a second matrix is
  accumulated from the same masks with pixels whose confidence is below μ set
  to 255 (the CLIP-ES "CGL" masks use μ = 0.95). Results are reported per
  *variant*: ``'all'`` (the masks as written) and ``'conf>=μ'``.

Reports: ``eval.json`` (everything), ``eval.md`` (a Markdown table readable as
text) and ``eval_iou.png`` (per-class IoU bar chart, one bar per variant;
drawn with matplotlib's Agg canvas where matplotlib is importable, otherwise
with Pillow).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

PathLike = Union[str, os.PathLike]

__all__ = [
    'confusion_matrix', 'scores_from_confusion', 'PseudoMaskEvaluator',
    'evaluate_pseudo_dir', 'format_markdown', 'plot_iou_bars',
    'write_eval_reports', 'variant_name',
]


# ------------------------------------------------------------ pure functions
def confusion_matrix(gt: np.ndarray, pred: np.ndarray, *, num_classes: int,
                     ignore_index: int = 255) -> np.ndarray:
    """Confusion matrix ``hist[gt, pred]`` of one label map pair.

    Args:
        gt: Integer GT ``(H, W)``; values ``0..num_classes-1`` or ``ignore_index``.
        pred: Integer prediction of the same shape, same value range.
        num_classes: Number of classes including background.
        ignore_index: Label excluded on either side.

    Returns:
        ``int64`` array ``(num_classes, num_classes)``.

    Raises:
        ValueError: Shape mismatch or a value outside the class range.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f'GT shape {gt.shape} differs from prediction shape {pred.shape}')
    gt = gt.astype(np.int64).ravel()
    pred = pred.astype(np.int64).ravel()
    for name, arr in (('GT', gt), ('prediction', pred)):
        bad = (arr != ignore_index) & ((arr < 0) | (arr >= num_classes))
        if bad.any():
            vals = np.unique(arr[bad])[:10].tolist()
            raise ValueError(f'{name} holds values {vals} outside 0..{num_classes - 1} '
                             f'(and {ignore_index} = ignore)')
    keep = (gt != ignore_index) & (pred != ignore_index)
    flat = num_classes * gt[keep] + pred[keep]
    return np.bincount(flat, minlength=num_classes ** 2).reshape(
        num_classes, num_classes).astype(np.int64)


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float('nan')


def scores_from_confusion(hist: np.ndarray) -> Dict[str, Any]:
    """Per-class and mean scores of a confusion matrix (official mIoU convention).

    Args:
        hist: ``(N, N)`` matrix, rows = GT, columns = prediction.

    Returns:
        Dict with ``iou``, ``precision``, ``recall`` (float64 arrays, NaN where
        undefined), ``valid`` (bool array, class present in GT), ``miou``,
        ``mean_precision``, ``mean_recall`` (over valid classes) and
        ``pixel_accuracy`` (NaN for an empty matrix).
    """
    hist = np.asarray(hist, dtype=np.float64)
    diag = np.diag(hist)
    gt_sum = hist.sum(axis=1)
    pred_sum = hist.sum(axis=0)
    with np.errstate(divide='ignore', invalid='ignore'):
        iou = diag / (gt_sum + pred_sum - diag)
        precision = diag / pred_sum
        recall = diag / gt_sum
    valid = gt_sum > 0
    total = hist.sum()
    return dict(
        iou=iou, precision=precision, recall=recall, valid=valid,
        miou=_nanmean(iou[valid]),
        mean_precision=_nanmean(precision[valid]),
        mean_recall=_nanmean(recall[valid]),
        pixel_accuracy=float(diag.sum() / total) if total > 0 else float('nan'),
    )


def variant_name(threshold: Optional[float]) -> str:
    """Name of an evaluation variant: ``'all'`` or ``'conf>=0.95'``."""
    return 'all' if threshold is None else f'conf>={threshold:g}'


def _finite_or_none(x: float) -> Optional[float]:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


# ---------------------------------------------------------------- evaluator
class PseudoMaskEvaluator:
    """Accumulates confusion matrices of pseudo masks over a dataset.

    Args:
        num_classes: Number of classes including background (C + 1).
        conf_thresholds: Confidence thresholds μ; each adds a variant in which
            pixels with confidence < μ are ignored.
        ignore_index: Ignore label of GT and pseudo masks.
    """

    def __init__(self, *, num_classes: int, conf_thresholds: Sequence[float] = (),
                 ignore_index: int = 255) -> None:
        if num_classes < 2:
            raise ValueError(f'num_classes must be >= 2 (background + 1), got {num_classes}')
        for mu in conf_thresholds:
            if not 0.0 <= float(mu) <= 1.0:
                raise ValueError(f'confidence threshold {mu} is outside [0, 1]')
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.thresholds: List[Optional[float]] = [None] + [float(m) for m in conf_thresholds]
        self.hists = {variant_name(t): np.zeros((num_classes, num_classes), np.int64)
                      for t in self.thresholds}
        self.ignored = {variant_name(t): 0 for t in self.thresholds}
        self.total_pixels = 0
        self.num_images = 0

    def update(self, gt: np.ndarray, pred: np.ndarray,
               confidence: Optional[np.ndarray] = None) -> None:
        """Add one image.

        Args:
            gt: GT label map ``(H, W)``.
            pred: Pseudo mask ``(H, W)`` (255 = ignored).
            confidence: ``(H, W)`` confidence in ``[0, 1]``; required when
                thresholds were given.

        Raises:
            ValueError: Shape mismatch, out-of-range labels, or a missing
                confidence map while thresholds are set.
        """
        pred = np.asarray(pred)
        if len(self.thresholds) > 1:
            if confidence is None:
                raise ValueError('a confidence map is needed for the confidence '
                                 'threshold variants')
            confidence = np.asarray(confidence)
            if confidence.shape != pred.shape:
                raise ValueError(f'confidence shape {confidence.shape} differs from '
                                 f'mask shape {pred.shape}')
        hists = {}
        ignored = {}
        for t in self.thresholds:
            p = pred if t is None else np.where(confidence < t, self.ignore_index, pred)
            name = variant_name(t)
            hists[name] = confusion_matrix(gt, p, num_classes=self.num_classes,
                                           ignore_index=self.ignore_index)
            ignored[name] = int((p == self.ignore_index).sum())
        for name in hists:  # only commit once every variant succeeded
            self.hists[name] += hists[name]
            self.ignored[name] += ignored[name]
        self.total_pixels += int(pred.size)
        self.num_images += 1

    def result(self, class_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        """JSON-ready results.

        Args:
            class_names: ``num_classes`` names (background first); default
                ``background, class_0, class_1, ...``.

        Returns:
            ``dict(num_images, num_classes, class_names, total_pixels,
            variants={name: dict(miou, mean_precision, mean_recall,
            pixel_accuracy, ignored_pixels, ignored_fraction, per_class=[...],
            confusion=[[...]])})``; undefined values are None.
        """
        if class_names is None:
            class_names = ['background'] + [f'class_{i}' for i in range(self.num_classes - 1)]
        if len(class_names) != self.num_classes:
            raise ValueError(f'{len(class_names)} class names for {self.num_classes} classes')
        variants = {}
        for name, hist in self.hists.items():
            s = scores_from_confusion(hist)
            per_class = []
            for k in range(self.num_classes):
                per_class.append(dict(
                    name=str(class_names[k]), present=bool(s['valid'][k]),
                    iou=_finite_or_none(s['iou'][k]),
                    precision=_finite_or_none(s['precision'][k]),
                    recall=_finite_or_none(s['recall'][k]),
                    gt_pixels=int(hist[k, :].sum()), pred_pixels=int(hist[:, k].sum())))
            variants[name] = dict(
                miou=_finite_or_none(s['miou']),
                mean_precision=_finite_or_none(s['mean_precision']),
                mean_recall=_finite_or_none(s['mean_recall']),
                pixel_accuracy=_finite_or_none(s['pixel_accuracy']),
                ignored_pixels=self.ignored[name],
                ignored_fraction=(self.ignored[name] / self.total_pixels
                                  if self.total_pixels else None),
                per_class=per_class,
                confusion=hist.tolist())
        return dict(num_images=self.num_images, num_classes=self.num_classes,
                    class_names=[str(c) for c in class_names],
                    total_pixels=self.total_pixels, variants=variants)


def _read_label_png(path: Path) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as img:
        if img.mode not in ('P', 'L'):
            raise ValueError(f'{path} has mode {img.mode!r}; expected a palette or '
                             '8-bit grayscale label PNG')
        return np.array(img, dtype=np.uint8)


def evaluate_pseudo_dir(items: Sequence[Dict[str, Any]], *, num_classes: int,
                        mask_dir: PathLike, confidence_dir: Optional[PathLike] = None,
                        class_names: Optional[Sequence[str]] = None,
                        conf_thresholds: Sequence[float] = (),
                        ignore_index: int = 255) -> Dict[str, Any]:
    """Evaluate written pseudo masks against GT masks.

    Args:
        items: ``dict(id, gt_path)`` per image; items without ``gt_path`` are
            skipped, items whose mask file is missing are counted in
            ``missing_masks`` (e.g. images that failed).
        num_classes: Classes including background.
        mask_dir: Folder with ``<id>.png`` pseudo masks.
        confidence_dir: Folder with ``<id>.png`` 16-bit confidence maps
            (needed for ``conf_thresholds``).
        class_names: ``num_classes`` names, background first.
        conf_thresholds: Confidence thresholds μ to report besides the raw masks.
        ignore_index: Ignore label.

    Returns:
        :meth:`PseudoMaskEvaluator.result` plus ``missing_masks`` (ids),
        ``no_gt`` (count) and ``failures`` (``dict(id, reason)`` for GT/mask
        pairs that could not be compared).
    """
    from wsss_mmseg.pseudo.io import read_confidence_png
    mask_dir = Path(mask_dir)
    conf_dir = None if confidence_dir is None else Path(confidence_dir)
    if conf_thresholds and conf_dir is None:
        raise ValueError('confidence_dir is required for conf_thresholds')
    evaluator = PseudoMaskEvaluator(num_classes=num_classes,
                                    conf_thresholds=conf_thresholds,
                                    ignore_index=ignore_index)
    missing: List[str] = []
    failures: List[Dict[str, str]] = []
    no_gt = 0
    for item in items:
        image_id, gt_path = item['id'], item.get('gt_path')
        if gt_path is None:
            no_gt += 1
            continue
        mask_path = mask_dir / f'{image_id}.png'
        if not mask_path.is_file():
            missing.append(image_id)
            continue
        try:
            gt = _read_label_png(Path(gt_path))
            pred = _read_label_png(mask_path)
            conf = None
            if conf_thresholds:
                conf = read_confidence_png(conf_dir / f'{image_id}.png')
            if gt.shape != pred.shape:
                raise ValueError(f'GT {gt_path} has shape {gt.shape}, pseudo mask '
                                 f'{mask_path} has shape {pred.shape}')
            evaluator.update(gt, pred, conf)
        except (OSError, ValueError) as exc:
            failures.append(dict(id=image_id, reason=f'{type(exc).__name__}: {exc}'))
    result = evaluator.result(class_names)
    result.update(missing_masks=missing, no_gt=no_gt, failures=failures)
    return result


# ------------------------------------------------------------------ reports
def _fmt(x: Optional[float], scale: float = 100.0) -> str:
    return '—' if x is None else f'{x * scale:.2f}'


def format_markdown(result: Dict[str, Any]) -> str:
    """Markdown report: summary per variant and a per-class table (values in %).

    Args:
        result: Output of :meth:`PseudoMaskEvaluator.result` /
            :func:`evaluate_pseudo_dir`.

    Returns:
        Markdown text (also readable as plain text).
    """
    variants = result['variants']
    names = list(variants)
    lines = ['# Pseudo-mask evaluation', '',
             f'Images evaluated: {result["num_images"]}; classes (incl. background): '
             f'{result["num_classes"]}.', '',
             'mIoU over classes present in the GT (official CLIP-ES convention); '
             'pixels marked 255 in the pseudo mask are excluded and counted as '
             'ignored. Values in %.', '',
             '| variant | mIoU | mean precision | mean recall | pixel acc. | ignored |',
             '|---|---:|---:|---:|---:|---:|']
    for n in names:
        v = variants[n]
        lines.append(f'| {n} | {_fmt(v["miou"])} | {_fmt(v["mean_precision"])} | '
                     f'{_fmt(v["mean_recall"])} | {_fmt(v["pixel_accuracy"])} | '
                     f'{_fmt(v["ignored_fraction"])} |')
    lines += ['', '## Per class (IoU / precision / recall, %)', '',
              '| class | ' + ' | '.join(f'{n} IoU | {n} P | {n} R' for n in names) + ' |',
              '|---|' + '---:|' * (3 * len(names))]
    for k, cname in enumerate(result['class_names']):
        cells = []
        for n in names:
            pc = variants[n]['per_class'][k]
            cells += [_fmt(pc['iou']), _fmt(pc['precision']), _fmt(pc['recall'])]
        absent = '' if variants[names[0]]['per_class'][k]['present'] else ' (not in GT)'
        lines.append(f'| {cname}{absent} | ' + ' | '.join(cells) + ' |')
    extra = []
    if result.get('missing_masks'):
        extra.append(f'- images without a pseudo mask (failed?): {len(result["missing_masks"])}')
    if result.get('failures'):
        extra.append(f'- images that could not be compared: {len(result["failures"])}')
        extra += [f'  - {f["id"]}: {f["reason"]}' for f in result['failures'][:20]]
    if result.get('no_gt'):
        extra.append(f'- images without GT (skipped): {result["no_gt"]}')
    if extra:
        lines += ['', '## Notes', ''] + extra
    return '\n'.join(lines) + '\n'


_BAR_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
                (148, 103, 189), (140, 86, 75)]


def _bar_data(result: Dict[str, Any]):
    names = list(result['variants'])
    labels = result['class_names']
    values = [[(pc['iou'] or 0.0) * 100 for pc in result['variants'][n]['per_class']]
              for n in names]
    return names, labels, values


def _plot_matplotlib(result: Dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    names, labels, values = _bar_data(result)
    n_cls = len(labels)
    fig = Figure(figsize=(max(6.0, 0.45 * n_cls + 2), 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(names)
    xs = np.arange(n_cls)
    for i, (n, vals) in enumerate(zip(names, values)):
        miou = result['variants'][n]['miou']
        colour = tuple(c / 255 for c in _BAR_COLOURS[i % len(_BAR_COLOURS)])
        ax.bar(xs + (i - (len(names) - 1) / 2) * width, vals, width, color=colour,
               label=f'{n} (mIoU {_fmt(miou)})')
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, rotation=60, ha='right', fontsize=7)
    ax.set_ylabel('IoU (%)')
    ax.set_ylim(0, 118)
    ax.set_yticks([0, 20, 40, 60, 80, 100])
    ax.set_title(f'Pseudo-mask IoU per class ({result["num_images"]} images)')
    ax.legend(fontsize=7, loc='upper center', ncol=len(names), frameon=False)
    fig.tight_layout()
    fig.savefig(path, format='png', metadata={'Software': None})


def _plot_pil(result: Dict[str, Any], path: Path) -> None:
    """Fallback bar chart drawn with Pillow (no matplotlib)."""
    from PIL import Image, ImageDraw
    names, labels, values = _bar_data(result)
    n_cls = len(labels)
    group_w = 12 * len(names) + 8
    left, top, bottom, plot_h = 40, 30, 110, 200
    width = max(left + n_cls * group_w + 20, left + 160 * len(names) + 20)
    img = Image.new('RGB', (width, top + plot_h + bottom), 'white')
    draw = ImageDraw.Draw(img)
    y0 = top + plot_h
    draw.line([(left, top), (left, y0), (left + n_cls * group_w + 10, y0)], fill='black')
    for pct in (0, 25, 50, 75, 100):
        y = y0 - plot_h * pct / 100
        draw.text((4, y - 5), f'{pct}', fill='black')
    for k in range(n_cls):
        x = left + 4 + k * group_w
        for i, vals in enumerate(values):
            h = plot_h * max(0.0, min(100.0, vals[k])) / 100
            colour = _BAR_COLOURS[i % len(_BAR_COLOURS)]
            draw.rectangle([x + 12 * i, y0 - h, x + 12 * i + 10, y0], fill=colour)
        label = Image.new('RGB', (bottom - 5, 12), 'white')
        ImageDraw.Draw(label).text((0, 0), labels[k][:16], fill='black')
        rotated = label.rotate(90, expand=True)
        img.paste(rotated, (x, y0 + 4))
    for i, n in enumerate(names):
        colour = _BAR_COLOURS[i % len(_BAR_COLOURS)]
        draw.rectangle([left + 160 * i, 8, left + 160 * i + 10, 18], fill=colour)
        draw.text((left + 160 * i + 14, 7),
                  f'{n} mIoU {_fmt(result["variants"][n]["miou"])}', fill='black')
    img.save(path, format='PNG')


def plot_iou_bars(result: Dict[str, Any], path: PathLike, *,
                  backend: str = 'auto') -> str:
    """Draw the per-class IoU bar chart to a PNG.

    Args:
        result: Evaluation result (see :func:`evaluate_pseudo_dir`).
        path: Destination ``.png``.
        backend: ``'auto'`` (matplotlib if importable, else Pillow),
            ``'matplotlib'`` or ``'pil'``.

    Returns:
        The backend used.
    """
    path = Path(path)
    if backend not in ('auto', 'matplotlib', 'pil'):
        raise ValueError(f'backend must be auto, matplotlib or pil, got {backend!r}')
    if backend in ('auto', 'matplotlib'):
        try:
            _plot_matplotlib(result, path)
            return 'matplotlib'
        except ImportError:
            if backend == 'matplotlib':
                raise
    _plot_pil(result, path)
    return 'pil'


def write_eval_reports(result: Dict[str, Any], out_dir: PathLike) -> Dict[str, str]:
    """Write ``eval.json``, ``eval.md`` and ``eval_iou.png`` into ``out_dir``.

    Args:
        result: Evaluation result.
        out_dir: Existing folder.

    Returns:
        Mapping report kind -> written path.
    """
    from wsss_mmseg.pseudo.io import atomic_write_bytes
    out_dir = Path(out_dir)
    paths = dict(json=out_dir / 'eval.json', markdown=out_dir / 'eval.md',
                 chart=out_dir / 'eval_iou.png')
    atomic_write_bytes(paths['json'], (json.dumps(result, indent=1) + '\n').encode())
    atomic_write_bytes(paths['markdown'], format_markdown(result).encode())
    tmp_png = out_dir / '.eval_iou.png.partial.wsss-tmp'
    try:
        plot_iou_bars(result, tmp_png)
        os.replace(tmp_png, paths['chart'])
    finally:
        if tmp_png.exists():
            tmp_png.unlink()
    return {k: str(v) for k, v in paths.items()}
