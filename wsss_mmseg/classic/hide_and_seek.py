"""Hide-and-Seek (Singh & Lee, ICCV 2017): hide random grid patches of a training image.

The image is divided into square cells of side ``grid_size`` (the last row /
column may be smaller); every cell is hidden independently with probability
``prob`` and hidden pixels take the ``fill`` value (the dataset mean, so that
the first-layer activation statistics are unchanged on average). The grid size
is drawn per image from a set (paper: {16, 32, 44, 56}, prob 0.5).
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple, Union

import numpy as np

__all__ = ['draw_hidden_cells', 'apply_hidden_cells', 'hide_and_seek']


def draw_hidden_cells(h: int, w: int, *, grid_size: int, prob: float,
                      rng: np.random.Generator) -> np.ndarray:
    """Draw which cells of the grid are hidden.

    Args:
        h: Image height.
        w: Image width.
        grid_size: Cell side in pixels (>= 1).
        prob: Probability that a cell is hidden, in ``[0, 1]``.
        rng: Random generator (one ``rng.random((ny, nx))`` draw).

    Returns:
        ``(ceil(h / g), ceil(w / g))`` bool array, True = hidden.

    Raises:
        ValueError: Bad size, grid size or probability.
    """
    if h < 1 or w < 1:
        raise ValueError(f'image size must be positive, got {(h, w)}')
    if int(grid_size) < 1:
        raise ValueError(f'grid_size must be >= 1, got {grid_size}')
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f'prob must be in [0, 1], got {prob}')
    ny, nx = math.ceil(h / grid_size), math.ceil(w / grid_size)
    return rng.random((ny, nx)) < prob


def apply_hidden_cells(img: np.ndarray, cells: np.ndarray, *, grid_size: int,
                       fill: Union[float, Sequence[float]]) -> np.ndarray:
    """Fill the hidden cells of an image.

    Args:
        img: ``(H, W)`` or ``(H, W, C)`` image (not modified).
        cells: Bool grid from :func:`draw_hidden_cells` for this image size.
        grid_size: Cell side used to draw ``cells``.
        fill: Scalar or per-channel fill value (in the image's channel order).

    Returns:
        A copy of ``img`` with the hidden cells filled (same dtype; the fill is
        rounded for integer images).

    Raises:
        ValueError: ``cells`` does not match the image size, or ``fill`` has the
            wrong number of channels.
    """
    img = np.asarray(img)
    h, w = img.shape[:2]
    ny, nx = math.ceil(h / grid_size), math.ceil(w / grid_size)
    if cells.shape != (ny, nx):
        raise ValueError(f'cells {cells.shape} do not match a {(h, w)} image with grid '
                         f'{grid_size} (expected {(ny, nx)})')
    fill_arr = np.asarray(fill, dtype=np.float64).reshape(-1)
    channels = 1 if img.ndim == 2 else img.shape[2]
    if fill_arr.size not in (1, channels):
        raise ValueError(f'fill has {fill_arr.size} values, the image {channels} channel(s)')
    if np.issubdtype(img.dtype, np.integer):
        fill_arr = np.rint(fill_arr)
    pixel_mask = np.kron(cells.astype(np.uint8),
                         np.ones((grid_size, grid_size), np.uint8))[:h, :w].astype(bool)
    out = img.copy()
    out[pixel_mask] = fill_arr.astype(img.dtype) if img.ndim == 3 else fill_arr[0]
    return out


def hide_and_seek(img: np.ndarray, *, grid_sizes: Sequence[int], prob: float,
                  fill: Union[float, Sequence[float]],
                  rng: np.random.Generator) -> Tuple[np.ndarray, int, np.ndarray]:
    """Draw a grid size and hidden cells, and hide them.

    Args:
        img: ``(H, W[, C])`` image.
        grid_sizes: Candidate cell sides; one is drawn uniformly
            (``rng.integers``), then the cells (``rng.random``).
        prob: Per-cell hiding probability.
        fill: Fill value(s), see :func:`apply_hidden_cells`.
        rng: Random generator.

    Returns:
        ``(hidden image, grid size, cells)``.

    Raises:
        ValueError: Empty ``grid_sizes`` or bad arguments.
    """
    if len(grid_sizes) == 0:
        raise ValueError('grid_sizes must not be empty')
    g = int(grid_sizes[int(rng.integers(len(grid_sizes)))])
    cells = draw_hidden_cells(img.shape[0], img.shape[1], grid_size=g, prob=prob, rng=rng)
    return apply_hidden_cells(img, cells, grid_size=g, fill=fill), g, cells
