"""Report figures drawn with matplotlib's Agg canvas (no display, no pyplot state).

Every function takes plain arrays / lists and writes one PNG. Class names are
user input: ``$`` is escaped so that matplotlib never parses a name as mathtext.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

__all__ = ['plot_class_scores', 'plot_confusion', 'plot_confidence_histograms',
           'plot_mu_sweep', 'plain_text']

_COLOURS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd']


def plain_text(name: str) -> str:
    """A label matplotlib draws verbatim (``$`` would start mathtext)."""
    return str(name).replace('$', r'\$')


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    fig.savefig(path, format='png', metadata={'Software': None})


def plot_class_scores(class_names: Sequence[str], iou: np.ndarray, precision: np.ndarray,
                      recall: np.ndarray, path: Path, *, title: str) -> None:
    """Grouped bars of IoU / precision / recall per class (NaN drawn as 0).

    Args:
        class_names: ``N`` names (background first).
        iou: ``(N,)`` in ``[0, 1]`` or NaN; likewise ``precision`` and ``recall``.
        precision: See ``iou``.
        recall: See ``iou``.
        path: Destination PNG.
        title: Figure title.
    """
    n = len(class_names)
    fig = _figure(max(6.0, 0.5 * n + 2), 4.0)
    ax = fig.add_subplot(1, 1, 1)
    xs = np.arange(n)
    width = 0.27
    for i, (label, vals) in enumerate((('IoU', iou), ('precision', precision),
                                       ('recall', recall))):
        v = np.nan_to_num(np.asarray(vals, np.float64), nan=0.0) * 100
        ax.bar(xs + (i - 1) * width, v, width, color=_COLOURS[i], label=label)
    ax.set_xticks(xs)
    ax.set_xticklabels([plain_text(c) for c in class_names], rotation=60, ha='right',
                       fontsize=7)
    ax.set_ylabel('%')
    ax.set_ylim(0, 112)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc='upper center', ncol=3, frameon=False)
    fig.tight_layout()
    _save(fig, path)


def plot_confusion(confusion: np.ndarray, class_names: Sequence[str], path: Path, *,
                   title: str) -> None:
    """Row-normalised confusion matrix heatmap (rows GT, columns pseudo label).

    Each cell shows the share of the row's GT pixels (in %) that got that
    pseudo label; rows without GT pixels stay empty.

    Args:
        confusion: ``(N, N)`` counts, ``[gt, pred]``.
        class_names: ``N`` names.
        path: Destination PNG.
        title: Figure title.
    """
    hist = np.asarray(confusion, np.float64)
    n = hist.shape[0]
    rows = hist.sum(1, keepdims=True)
    with np.errstate(divide='ignore', invalid='ignore'):
        share = np.where(rows > 0, hist / rows, np.nan) * 100
    side = max(4.5, 0.32 * n + 2.0)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(np.ma.masked_invalid(share), cmap='viridis', vmin=0, vmax=100,
                   interpolation='nearest')
    names = [plain_text(c) for c in class_names]
    ax.set_xticks(np.arange(n))
    ax.set_yticks(np.arange(n))
    fs = 7 if n <= 30 else 4
    ax.set_xticklabels(names, rotation=90, fontsize=fs)
    ax.set_yticklabels(names, fontsize=fs)
    ax.set_xlabel('pseudo label')
    ax.set_ylabel('ground truth')
    if n <= 25:
        for g in range(n):
            for p in range(n):
                v = share[g, p]
                if np.isfinite(v) and v >= 1:
                    ax.text(p, g, f'{v:.0f}', ha='center', va='center', fontsize=5,
                            color='white' if v < 60 else 'black')
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label='% of GT row')
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def plot_confidence_histograms(conf_hist: np.ndarray, class_names: Sequence[str],
                               path: Path) -> List[int]:
    """The confidence histogram of every pseudo class, one heatmap row per class.

    Row ``k`` is the histogram of the confidences of the pixels labelled ``k``
    (share of that class's pixels per bin, log colour scale so that the tails
    show beside the peak near 1); classes without pixels get no row.

    Args:
        conf_hist: ``(N, B + 1)`` pixel counts per pseudo class and bin
            (bin ``j`` covers ``[j / B, (j + 1) / B)``; the last holds 1.0 and is
            drawn with the bin before it).
        class_names: ``N`` names.
        path: Destination PNG.

    Returns:
        The class indices drawn (rows, top to bottom).
    """
    from matplotlib.colors import LogNorm
    hist = np.asarray(conf_hist, np.float64).copy()
    num_bins = hist.shape[1] - 1
    hist[:, num_bins - 1] += hist[:, num_bins]
    hist = hist[:, :num_bins]
    totals = hist.sum(1)
    drawn = [int(k) for k in range(hist.shape[0]) if totals[k] > 0]
    fig = _figure(7.5, max(2.2, 0.22 * len(drawn) + 1.3))
    ax = fig.add_subplot(1, 1, 1)
    if not drawn:
        ax.text(0.5, 0.5, 'no pseudo-labelled pixels', ha='center', va='center')
        ax.set_axis_off()
    else:
        share = hist[drawn] / totals[drawn, None] * 100
        im = ax.imshow(np.ma.masked_less_equal(share, 0), aspect='auto', cmap='magma_r',
                       norm=LogNorm(vmin=1e-3, vmax=100), interpolation='nearest',
                       extent=(0, 1, len(drawn) - 0.5, -0.5))
        ax.set_yticks(np.arange(len(drawn)))
        fs = 7 if len(drawn) <= 30 else 4
        ax.set_yticklabels([f'{plain_text(class_names[k])} ({int(totals[k])} px)'
                            for k in drawn], fontsize=fs)
        ax.set_xlabel('confidence')
        fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="% of the class's pixels")
    ax.set_title('Confidence histogram of each pseudo class', fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    return drawn


def plot_mu_sweep(mu: Sequence[float], miou: Sequence[Optional[float]],
                  coverage: Sequence[Optional[float]], path: Path, *,
                  marks: Sequence[float] = ()) -> None:
    """mIoU and labelled-pixel coverage against the confidence threshold μ.

    Args:
        mu: Thresholds.
        miou: mIoU at each μ (None: no GT / no surviving GT pixel).
        coverage: Share of all pixels still labelled at each μ.
        path: Destination PNG.
        marks: μ values to mark with a vertical line (e.g. the configured one).
    """
    fig = _figure(6.5, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    x = np.asarray(mu, np.float64)

    def arr(vals):
        return np.array([np.nan if v is None else 100 * v for v in vals], np.float64)

    ax.plot(x, arr(coverage), color=_COLOURS[1], label='labelled pixels (% of all)')
    if any(v is not None for v in miou):
        ax.plot(x, arr(miou), color=_COLOURS[0], label='mIoU of kept pixels (%)')
    for m in marks:
        ax.axvline(m, color='grey', linestyle='--', linewidth=0.8)
        ax.text(m, 102, f'μ={m:g}', fontsize=7, ha='center', color='grey')
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 108)
    ax.set_xlabel('confidence threshold μ (pixels with confidence < μ are ignored)')
    ax.set_ylabel('%')
    ax.legend(fontsize=7, loc='lower left', frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
