"""Class-aware Attention Affinity (CAA) of CLIP-ES (spec ``clip_es.md`` §6) as pure functions.

``M~_k = minmax( (Sym(Sinkhorn_3(A))^2 * 1 B_k^T) @ vec(M_k) )`` where ``A`` is the
mean of the head-averaged attention maps of the last 8 ViT blocks (CLS row and
column dropped), ``B_k`` the union of the bounding boxes of the thresholded
patch-level CAM ``M_k``.  The class-independent transition matrix is computed
once per image (:func:`caa_transition`); the per-class part is one matrix
product for all ``K`` classes (:func:`caa_propagate`).

All matrix algebra runs in float32 with autocast disabled (fp16 attention maps
are up-cast), so the result does not depend on an enclosing autocast region.

Fidelity (``fidelity=True`` in :func:`cam_boxes`, the default) reproduces the
official ``scoremap2bbox``:
    * the CAM is truncated to uint8 (``(cam * 255).astype(uint8)``; its maximum
      is 254 because of the 1e-7 of the min-max) and thresholded with a strict
      ``>`` at ``int(threshold * max(u8))``;
    * ``cv2.findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)``: every contour
      (hole contours included) gives a ``cv2.boundingRect`` box;
    * box ends are clamped ``x1 = min(x + w, W - 1)``, ``y1 = min(y + h, H - 1)``
      and used as exclusive slice ends, so the last patch row and column are
      never inside the mask;
    * no contour -> the single box ``[0, 0, 0, 0]`` (empty mask).
``fidelity=False`` (corrected): the float map is thresholded directly
(``cam > threshold * max(cam)``; an all-zero map gives no box), only outer
contours are used (``RETR_EXTERNAL``; hole boxes lie inside their outer box, so
the mask union is unchanged) and box ends are NOT clamped
(``x1 = x + w``, ``y1 = y + h`` exclusive), so a blob touching the last
row/column is fully covered.  No contour -> an empty ``(0, 4)`` box array.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, List, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torch import Tensor

__all__ = [
    'CAA_EPS',
    'average_attention',
    'sinkhorn',
    'symmetrize',
    'matrix_power',
    'caa_transition',
    'caa_propagate_power',
    'cam_boxes',
    'box_mask',
    'class_box_masks',
    'caa_propagate',
    'caa_refine',
]

#: Additive epsilon of the final min-max normalisation.
CAA_EPS = 1e-7

ArrayLike = Union[np.ndarray, Tensor]


@contextlib.contextmanager
def _fp32(device: torch.device) -> Iterator[None]:
    """Disable autocast for ``device`` (matrix algebra of CAA is done in float32)."""
    if device.type in ('cuda', 'cpu'):
        with torch.autocast(device_type=device.type, enabled=False):
            yield
    else:  # pragma: no cover - other backends
        yield


def average_attention(attn_list: Sequence[Tensor], *, last_n: int = 8, drop_cls: bool = True) -> Tensor:
    """Mean of the last ``last_n`` head-averaged attention maps, CLS row/column dropped.

    Python slice semantics as the official ``[-8:]``: with fewer maps, all are used.

    Args:
        attn_list: per-block attention maps, each ``(T, T)`` or ``(1, T, T)``
            (rows = queries), in block order.
        last_n: number of final blocks to average.
        drop_cls: drop token 0 (CLS) from rows and columns.

    Returns:
        ``(N, N)`` float32 affinity (``N = T - 1`` with ``drop_cls``).
    """
    if last_n < 1:
        raise ValueError(f'last_n must be >= 1, got {last_n}')
    maps = list(attn_list)[-last_n:]
    if not maps:
        raise ValueError('average_attention needs at least one attention map')
    out = []
    for m in maps:
        if m.dim() == 3:
            if m.shape[0] != 1:
                raise ValueError(f'attention maps must be (T, T) or (1, T, T), got {tuple(m.shape)}')
            m = m[0]
        if m.dim() != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f'attention maps must be square, got {tuple(m.shape)}')
        out.append(m[1:, 1:] if drop_cls else m)
    with _fp32(out[0].device):
        return torch.stack(out).float().mean(dim=0)


def sinkhorn(affinity: Tensor, *, rounds: int = 3) -> Tensor:
    """Sinkhorn normalisation: each round divides by column sums, then by row sums.

    Args:
        affinity: ``(..., N, N)`` non-negative matrix.
        rounds: number of (column, row) normalisation rounds (official: 3).

    Returns:
        ``(..., N, N)`` float32, row-stochastic after the last round (and
        approximately column-stochastic, increasingly with more rounds).
    """
    if rounds < 0:
        raise ValueError(f'rounds must be >= 0, got {rounds}')
    with _fp32(affinity.device):
        t = affinity.float()
        for _ in range(rounds):
            t = t / t.sum(dim=-2, keepdim=True)
            t = t / t.sum(dim=-1, keepdim=True)
    return t


def symmetrize(mat: Tensor) -> Tensor:
    """``(T + T^T) / 2`` over the last two dimensions.

    Args:
        mat: ``(..., N, N)`` matrix.

    Returns:
        Symmetric ``(..., N, N)`` matrix.
    """
    return (mat + mat.transpose(-1, -2)) / 2


def matrix_power(mat: Tensor, *, power: int = 2) -> Tensor:
    """Integer matrix power by repeated right-multiplication (``power=2``: one squaring ``T @ T``).

    Args:
        mat: ``(..., N, N)`` matrix.
        power: exponent ``>= 1``.

    Returns:
        ``mat ** power`` (float32).
    """
    if int(power) != power or power < 1:
        raise ValueError(f'power must be an integer >= 1, got {power}')
    with _fp32(mat.device):
        base = mat.float()
        out = base
        for _ in range(int(power) - 1):
            out = out @ base
    return out


def caa_transition(attn_avg: Tensor, *, sinkhorn_rounds: int = 3, power: int = 2) -> Tensor:
    """Class-independent CAA transition ``Sym(Sinkhorn(A)) ** power``.

    Args:
        attn_avg: ``(N, N)`` averaged attention (:func:`average_attention`).
        sinkhorn_rounds: Sinkhorn rounds.
        power: matrix power ``t``.

    Returns:
        ``(N, N)`` float32 transition matrix.
    """
    if attn_avg.dim() != 2 or attn_avg.shape[0] != attn_avg.shape[1]:
        raise ValueError(f'attn_avg must be (N, N), got {tuple(attn_avg.shape)}')
    return matrix_power(symmetrize(sinkhorn(attn_avg, rounds=sinkhorn_rounds)), power=power)


def _to_numpy_2d(cam: ArrayLike) -> np.ndarray:
    if isinstance(cam, Tensor):
        cam = cam.detach().float().cpu().numpy()
    arr = np.asarray(cam, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f'cam must be a (h, w) map, got shape {arr.shape}')
    return arr


def cam_boxes(cam_patch: ArrayLike, *, threshold: float, fidelity: bool = True) -> np.ndarray:
    """Bounding boxes of the high-activation blobs of one patch-level CAM.

    Args:
        cam_patch: ``(h, w)`` CAM in ``[0, 1]``.
        threshold: relative threshold ``lambda`` (0.4 VOC, 0.7 COCO).
        fidelity: official ``scoremap2bbox`` behaviour (see the module docstring) or the corrected one.

    Returns:
        ``(n, 4)`` int64 boxes ``x0, y0, x1, y1`` with exclusive ends (slice ``[y0:y1, x0:x1]``).
    """
    g = _to_numpy_2d(cam_patch)
    h, w = g.shape
    if fidelity:
        u8 = np.clip(g * np.float32(255), 0, 255).astype(np.uint8)  # truncation, as astype(uint8)
        thr = int(threshold * int(u8.max()))
        binary = (u8 > thr).astype(np.uint8) * 255
        mode = cv2.RETR_TREE
    else:
        gmax = float(g.max())
        binary = ((g > threshold * gmax) & (gmax > 0)).astype(np.uint8) * 255
        mode = cv2.RETR_EXTERNAL
    contours = cv2.findContours(binary, mode, cv2.CHAIN_APPROX_SIMPLE)[-2]
    if len(contours) == 0:
        return np.zeros((1, 4) if fidelity else (0, 4), dtype=np.int64)
    boxes = []
    for contour in contours:
        x, y, bw, bh = cv2.boundingRect(contour)
        x1, y1 = x + bw, y + bh
        if fidelity:
            x1, y1 = min(x1, w - 1), min(y1, h - 1)
        boxes.append((x, y, x1, y1))
    return np.asarray(boxes, dtype=np.int64).reshape(-1, 4)


def box_mask(boxes: ArrayLike, h: int, w: int) -> np.ndarray:
    """Union of boxes as a ``(h, w)`` uint8 {0, 1} mask, ``mask[y0:y1, x0:x1] = 1`` per box.

    Args:
        boxes: ``(n, 4)`` boxes ``x0, y0, x1, y1`` (exclusive ends, non-negative).
        h: mask height.
        w: mask width.

    Returns:
        ``(h, w)`` uint8 mask.
    """
    b = np.asarray(boxes.cpu() if isinstance(boxes, Tensor) else boxes, dtype=np.int64).reshape(-1, 4)
    if (b < 0).any():
        raise ValueError(f'boxes must be non-negative (padding rows are not accepted), got {b.tolist()}')
    mask = np.zeros((int(h), int(w)), dtype=np.uint8)
    for x0, y0, x1, y1 in b.tolist():
        mask[y0:y1, x0:x1] = 1
    return mask


def class_box_masks(cams: Tensor, *, threshold: float, fidelity: bool = True) -> Tuple[Tensor, List[np.ndarray]]:
    """Box masks of all classes.

    Args:
        cams: ``(K, h, w)`` patch-level CAMs.
        threshold: relative box threshold.
        fidelity: see :func:`cam_boxes`.

    Returns:
        ``(masks (K, h, w) uint8 on the device of cams, boxes: K arrays (n_k, 4))``.
    """
    if cams.dim() != 3:
        raise ValueError(f'cams must be (K, h, w), got {tuple(cams.shape)}')
    _, h, w = cams.shape
    boxes = [cam_boxes(c, threshold=threshold, fidelity=fidelity) for c in cams.detach().float().cpu()]
    masks = np.stack([box_mask(b, h, w) for b in boxes]) if boxes else np.zeros((0, h, w), np.uint8)
    return torch.from_numpy(masks).to(cams.device), boxes


def caa_propagate(transition: Tensor, cams: Tensor, masks: Tensor) -> Tensor:
    """Per-class propagation ``r_k = (T * B_k[None, :]) @ vec(M_k)`` for all classes at once.

    Masking the columns of ``T`` by ``B_k`` equals masking the source vector,
    so ``R = (B * M) @ T^T`` with ``B, M`` flattened row-major to ``(K, N)``.

    Args:
        transition: ``(N, N)`` transition matrix (:func:`caa_transition`).
        cams: ``(K, h, w)`` patch-level CAMs.
        masks: ``(K, h, w)`` {0, 1} box masks.

    Returns:
        ``(K, h, w)`` float32 refined maps before normalisation.
    """
    return _propagate(transition, cams, masks, power=1, name='transition')


def caa_propagate_power(sym: Tensor, cams: Tensor, masks: Tensor, *, power: int = 2) -> Tensor:
    """:func:`caa_propagate` with ``transition = sym ** power`` without forming the power.

    ``R = (B * M) @ (S^t)^T`` is evaluated as ``t`` products of the ``(K, N)`` sources with
    ``S^T``: ``O(t K N^2)`` instead of the ``O(N^3)`` matrix power (at ViT-B/16 on a VOC
    image, N ~ 800: ~5 MFLOP instead of ~1 GFLOP). Equal to
    ``caa_propagate(matrix_power(sym, power=power), cams, masks)`` up to float rounding.

    Args:
        sym: ``(N, N)`` symmetrised Sinkhorn matrix (``symmetrize(sinkhorn(A))``).
        cams: ``(K, h, w)`` patch-level maps.
        masks: ``(K, h, w)`` {0, 1} box masks.
        power: matrix power ``t >= 1``.

    Returns:
        ``(K, h, w)`` float32 refined maps before normalisation.
    """
    return _propagate(sym, cams, masks, power=power, name='sym')


def _propagate(mat: Tensor, cams: Tensor, masks: Tensor, *, power: int, name: str) -> Tensor:
    """``(B * M) @ (mat^T)^power`` in float32, with the shape checks of both public functions."""
    if cams.dim() != 3 or masks.shape != cams.shape:
        raise ValueError(f'cams and masks must both be (K, h, w); got {tuple(cams.shape)} and {tuple(masks.shape)}')
    if int(power) != power or power < 1:
        raise ValueError(f'power must be an integer >= 1, got {power}')
    k, h, w = cams.shape
    n = h * w
    if mat.shape != (n, n):
        raise ValueError(f'{name} must be ({n}, {n}) for a {h}x{w} grid, got {tuple(mat.shape)}')
    with _fp32(cams.device):
        out = (masks.to(device=cams.device, dtype=torch.float32) * cams.float()).reshape(k, n)
        mat_t = mat.to(cams.device).float().t()
        for _ in range(int(power)):
            out = out @ mat_t
    return out.view(k, h, w)


def caa_refine(attn_avg: Tensor, cams: Tensor, masks: Tensor, *, sinkhorn_rounds: int = 3, power: int = 2,
               eps: float = CAA_EPS) -> Tensor:
    """CAA refinement of ``K`` class maps with one shared transition matrix.

    Args:
        attn_avg: ``(N, N)`` averaged attention, ``N = h * w``.
        cams: ``(K, h, w)`` patch-level CAMs (any class-wise maps).
        masks: ``(K, h, w)`` {0, 1} box masks (:func:`class_box_masks`; all ones = no masking).
        sinkhorn_rounds: Sinkhorn rounds.
        power: matrix power.
        eps: additive epsilon of the final min-max normalisation.

    Returns:
        ``(K, h, w)`` float32 refined maps in ``[0, 1)``.
    """
    sym = symmetrize(sinkhorn(attn_avg.to(cams.device), rounds=sinkhorn_rounds))
    raw = caa_propagate_power(sym, cams, masks, power=power)
    flat = raw.flatten(1)
    flat = flat - flat.amin(dim=1, keepdim=True)
    flat = flat / (eps + flat.amax(dim=1, keepdim=True))
    return flat.view_as(raw)
