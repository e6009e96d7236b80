"""Registered CAM post-processors: CAA (attention affinity) and dense CRF.

Thin wrappers that read their config and call the pure functions of
:mod:`wsss_mmseg.postprocess`; build them with ``MODELS.build(dict(type='CAA', ...))``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmseg.registry import MODELS
from torch import Tensor

from ..cam.clip_es import resize_maps
from ..postprocess.caa import average_attention, caa_refine, class_box_masks
from ..postprocess.crf import crf_refine

__all__ = ['CAA', 'DenseCRF']


@MODELS.register_module()
class CAA:
    """Class-aware Attention Affinity refinement of any class-wise patch-grid maps (CLIP-ES §6).

    ``refined_k = minmax((Sym(Sinkhorn(A)) ** power * B_k[None, :]) @ vec(M_k))`` with the
    box mask ``B_k`` of the thresholded map ``M_k`` (or no mask with ``use_boxes=False``).

    Args:
        box_threshold: relative box threshold ``lambda`` (0.4 VOC, 0.7 COCO).
        attn_layers: number of final attention maps averaged when a list of maps is given.
        sinkhorn_rounds: Sinkhorn rounds.
        power: matrix power.
        use_boxes: restrict the propagation sources to the boxes of each map.
        fidelity: official box extraction quirks (:func:`wsss_mmseg.postprocess.caa.cam_boxes`).
        eps: additive epsilon of the final min-max normalisation.
    """

    def __init__(self, box_threshold: float = 0.4, attn_layers: int = 8, sinkhorn_rounds: int = 3,
                 power: int = 2, use_boxes: bool = True, fidelity: bool = True, eps: float = 1e-7) -> None:
        if not 0.0 <= box_threshold < 1.0:
            raise ValueError(f'box_threshold must be in [0, 1), got {box_threshold}')
        self.box_threshold = float(box_threshold)
        self.attn_layers = int(attn_layers)
        self.sinkhorn_rounds = int(sinkhorn_rounds)
        self.power = int(power)
        self.use_boxes = bool(use_boxes)
        self.fidelity = bool(fidelity)
        self.eps = float(eps)

    def __call__(self, cams: Tensor, *, attn: Union[Tensor, Sequence[Tensor]],
                 out_hw: Optional[Tuple[int, int]] = None) -> Union[Tensor, np.ndarray]:
        """Refine ``K`` patch-grid maps.

        Args:
            cams: ``(K, h, w)`` maps in ``[0, 1]`` (row-major patch grid).
            attn: the averaged ``(N, N)`` attention (CLS dropped, ``N = h * w``), or the list of
                per-block head-averaged ``(1+N, 1+N)`` maps (the last ``attn_layers`` are averaged,
                CLS dropped).
            out_hw: optional ``(H0, W0)``: resize the result (``cv2`` bilinear) and return numpy.

        Returns:
            ``(K, h, w)`` float32 tensor in ``[0, 1)``, or ``(K, H0, W0)`` numpy with ``out_hw``.
        """
        cams = torch.as_tensor(cams)
        if cams.dim() != 3:
            raise ValueError(f'cams must be (K, h, w), got {tuple(cams.shape)}')
        if isinstance(attn, Tensor):
            attn_avg = attn
        else:
            attn_avg = average_attention(list(attn), last_n=self.attn_layers)
        if self.use_boxes:
            masks, _ = class_box_masks(cams, threshold=self.box_threshold, fidelity=self.fidelity)
        else:
            masks = torch.ones_like(cams, dtype=torch.uint8)
        refined = caa_refine(attn_avg.to(cams.device), cams, masks, sinkhorn_rounds=self.sinkhorn_rounds,
                             power=self.power, eps=self.eps)
        if out_hw is not None:
            return resize_maps(refined, out_hw)
        return refined


@MODELS.register_module()
class DenseCRF:
    """Dense CRF of CLIP-ES / deeplab-pytorch on foreground maps (CLIP-ES §7).

    Args:
        iters: mean-field iterations (10).
        pos_xy_std: Gaussian kernel spatial std (1).
        pos_w: Gaussian kernel weight (3).
        bi_xy_std: bilateral kernel spatial std (67).
        bi_rgb_std: bilateral kernel colour std (3).
        bi_w: bilateral kernel weight (4).
        bg_power: exponent of the background score ``(1 - max_k cam_k) ** bg_power`` (1).
        fidelity: official quirks (wrap-around image, float16 unnormalised probabilities).
    """

    def __init__(self, iters: int = 10, pos_xy_std: float = 1.0, pos_w: float = 3.0, bi_xy_std: float = 67.0,
                 bi_rgb_std: float = 3.0, bi_w: float = 4.0, bg_power: float = 1.0, fidelity: bool = True) -> None:
        from ..pseudo.options import check_bool, check_int, check_number
        self.params = dict(iters=check_int('crf.iters', iters, lo=1),
                           pos_xy_std=check_number('crf.pos_xy_std', pos_xy_std, lo=0.0, lo_open=True),
                           pos_w=check_number('crf.pos_w', pos_w, lo=0.0),
                           bi_xy_std=check_number('crf.bi_xy_std', bi_xy_std, lo=0.0, lo_open=True),
                           bi_rgb_std=check_number('crf.bi_rgb_std', bi_rgb_std, lo=0.0, lo_open=True),
                           bi_w=check_number('crf.bi_w', bi_w, lo=0.0))
        self.bg_power = check_number('crf.bg_power', bg_power, lo=0.0, lo_open=True)
        self.fidelity = check_bool('crf.fidelity', fidelity)

    def __call__(self, cams: Union[np.ndarray, Tensor], img_rgb: np.ndarray) -> np.ndarray:
        """Posterior of the background + ``K`` foreground labels.

        Args:
            cams: ``(K, H0, W0)`` foreground maps in ``[0, 1]``.
            img_rgb: ``(H0, W0, 3)`` uint8 RGB image.

        Returns:
            ``(K + 1, H0, W0)`` float32 posterior ``Q`` (channel 0 = background).
        """
        if isinstance(cams, Tensor):
            cams = cams.detach().float().cpu().numpy()
        return crf_refine(cams, img_rgb, bg_power=self.bg_power, fidelity=self.fidelity, **self.params)
