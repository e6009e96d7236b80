"""Registered random-walk refinement (AffinityNet / IRN) for the CAMs of any generator.

* ``RandomWalk`` (MODELS, a post-processor next to ``CAA`` / ``DenseCRF``):
  ``RandomWalk(beta=10, steps=256, radius=5)(cams, embedding=f)`` or
  ``(cams, affinity=A)`` refines ``(K, h, w)`` maps with the pair affinities of an
  AffinityNet embedding (sparse, pairs within ``radius``) or any dense ``(N, N)``
  affinity (e.g. :func:`wsss_mmseg.classic.cam.feature_affinity`); math in
  :mod:`wsss_mmseg.classic.random_walk`.
* ``RandomWalkGenerator`` (MODELS): wraps any pseudo-label generator of
  ``tools/generate_pseudo.py`` (``ClassifierCAMGenerator``, ``CLIPESGenerator``, ...):
  its maps (``cam_refined`` when present, else ``cam``) are refined by the random walk
  on the embedding of a trained ``AffinityNet`` and returned as ``cam_refined``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor

from ..classic.affinity import pair_affinity, radius_offsets
from ..classic.random_walk import (RW_BETA, RW_STEPS, affinity_matrix, dense_transition_matrix,
                                   refine_with_random_walk, transition_matrix)
from .generators import resolve_device
from .trained_model import build_trained_model
from ..generators import PseudoLabelGenerator

__all__ = ['RandomWalk', 'RandomWalkGenerator']


@MODELS.register_module()
class RandomWalk:
    """Random-walk refinement of class maps with inter-pixel affinities.

    ``T = D^-1 A^beta``, ``r = T^steps [bg; cams]``, output ``r_k / (r_bg + max_j r_j)``
    (see :mod:`wsss_mmseg.classic.random_walk`).

    Args:
        beta: Affinity exponent (IRN 10).
        steps: Random-walk steps (IRN ``2 ** 8``).
        radius: Pair radius on the embedding grid (must match the AffinityNet's, 5).
        bg_threshold: Constant background score (IRN 0.25), or
        bg_power: AffinityNet's ``(1 - max cam) ** bg_power`` background (exactly one).
    """

    def __init__(self, beta: float = RW_BETA, steps: int = RW_STEPS, radius: int = 5,
                 bg_threshold: Optional[float] = 0.25, bg_power: Optional[float] = None) -> None:
        if not beta > 0:
            raise ValueError(f'RandomWalk beta must be > 0, got {beta}')
        if int(steps) < 0:
            raise ValueError(f'RandomWalk steps must be >= 0, got {steps}')
        if (bg_threshold is None) == (bg_power is None):
            raise ValueError('RandomWalk needs exactly one of bg_threshold and bg_power, got '
                             f'bg_threshold={bg_threshold}, bg_power={bg_power}')
        self.beta = float(beta)
        self.steps = int(steps)
        self.offsets = radius_offsets(radius)
        self.bg_threshold = bg_threshold
        self.bg_power = bg_power

    def transition(self, *, embedding: Optional[Tensor] = None,
                   affinity: Optional[Tensor] = None) -> Tensor:
        """Row-stochastic transition matrix of an embedding ``(D, h, w)`` or ``(N, N)`` affinity."""
        if (embedding is None) == (affinity is None):
            raise ValueError('RandomWalk needs exactly one of embedding=(D, h, w) or '
                             'affinity=(N, N)')
        if embedding is not None:
            if embedding.dim() != 3:
                raise ValueError(f'embedding must be (D, h, w), got {tuple(embedding.shape)}')
            pair = pair_affinity(embedding.float(), self.offsets)
            return transition_matrix(affinity_matrix(pair, self.offsets), beta=self.beta)
        return dense_transition_matrix(affinity.float(), beta=self.beta)

    def __call__(self, cams: Union[Tensor, np.ndarray], *, embedding: Optional[Tensor] = None,
                 affinity: Optional[Tensor] = None,
                 out_hw: Optional[Tuple[int, int]] = None) -> Union[Tensor, np.ndarray]:
        """Refine ``K`` maps.

        Args:
            cams: ``(K, H, W)`` maps in ``[0, 1]``; average-pooled to the affinity grid
                when their size differs from it (the embedding's ``(h, w)``; with a dense
                affinity the maps must already be on its grid).
            embedding: ``(D, h, w)`` AffinityNet embedding, or
            affinity: ``(N, N)`` dense affinity of the grid positions (row-major).
            out_hw: Return ``(K, H0, W0)`` numpy at this size (else a ``(K, h, w)`` tensor).

        Returns:
            Refined maps in ``[0, 1]``.
        """
        c = torch.as_tensor(np.asarray(cams) if not isinstance(cams, Tensor) else cams).float()
        if c.dim() != 3:
            raise ValueError(f'cams must be (K, H, W), got {tuple(c.shape)}')
        t = self.transition(embedding=embedding, affinity=affinity)
        if embedding is not None:
            grid = tuple(embedding.shape[1:])
            if tuple(c.shape[1:]) != grid:
                c = F.adaptive_avg_pool2d(c[None], grid)[0]
        elif c.shape[1] * c.shape[2] != t.shape[0]:
            raise ValueError(f'cams grid {tuple(c.shape[1:])} does not match the {t.shape[0]} '
                             'positions of the affinity')
        out = refine_with_random_walk(c.to(t.device), t, steps=self.steps,
                                      bg_threshold=self.bg_threshold, bg_power=self.bg_power,
                                      out_hw=out_hw)
        if out_hw is not None:
            return out.detach().cpu().numpy().astype(np.float32)
        return out


@MODELS.register_module()
class RandomWalkGenerator(PseudoLabelGenerator):
    """Any generator's maps refined by a random walk on a trained AffinityNet's embedding.

    Config example::

        generator = dict(
            type='RandomWalkGenerator',
            base=dict(type='ClassifierCAMGenerator', ...),   # or CLIPESGenerator, ...
            affinity_net=dict(config='configs/classic/affinitynet_r50_voc.py',
                              checkpoint='work_dirs/affinitynet_r50_voc/iter_8000.pth'),
            random_walk=dict(type='RandomWalk', beta=10, steps=256, radius=5))

    Args:
        base: Config of the wrapped generator (``generate`` + ``class_names``).
        affinity_net: ``dict(checkpoint=..., config=... | model=...)`` of the AffinityNet.
        random_walk: ``RandomWalk`` config (its ``radius`` must be the AffinityNet's).
        max_side: Down-scale the AffinityNet input so that its longer side is at most this.
        device: torch device or ``'auto'``.
    """

    def __init__(self, base: Mapping, affinity_net: Mapping,
                 random_walk: Optional[Mapping] = None, max_side: Optional[int] = None,
                 device: str = 'auto') -> None:
        from mmengine.registry import DefaultScope
        if not isinstance(base, Mapping) or 'type' not in base:
            raise ValueError(f'base must be a generator config with a type, got {base!r}')
        aff = dict(affinity_net)
        unknown = sorted(set(aff) - {'checkpoint', 'config', 'model'})
        if unknown or 'checkpoint' not in aff:
            raise KeyError(f'affinity_net takes checkpoint and config|model, got {sorted(aff)}')
        self.device = resolve_device(device)
        with DefaultScope.overwrite_default_scope('mmseg'):
            self.base = MODELS.build(dict(base))
        self.net = build_trained_model(aff['checkpoint'], model=aff.get('model'),
                                       config=aff.get('config'), device=self.device,
                                       what='affinity_net')
        if not hasattr(self.net, 'embed'):
            raise TypeError(f'affinity_net must be an AffinityNet, got {type(self.net).__name__}')
        self.random_walk = MODELS.build(dict(random_walk or dict(type='RandomWalk')))
        net_radius = getattr(self.net, 'radius', None)
        if net_radius is not None and radius_offsets(net_radius) != self.random_walk.offsets:
            raise ValueError(f'random_walk radius differs from the AffinityNet radius {net_radius}')
        if max_side is not None and int(max_side) < 1:
            raise ValueError(f'max_side must be >= 1 or None, got {max_side}')
        self.max_side = None if max_side is None else int(max_side)

    @property
    def class_names(self) -> List[str]:
        """The wrapped generator's class names."""
        return list(self.base.class_names)

    def embedding(self, img_rgb_uint8: np.ndarray) -> Tensor:
        """``(D, h, w)`` AffinityNet embedding of one RGB image."""
        from .classic_cam_generator import _model_input
        x = _model_input(self.net, img_rgb_uint8, self.device)
        h, w = x.shape[1:]
        if self.max_side is not None and max(h, w) > self.max_side:
            s = self.max_side / max(h, w)
            size = (max(1, int(round(h * s))), max(1, int(round(w * s))))
            x = F.interpolate(x[None], size=size, mode='bilinear', align_corners=False)[0]
        with torch.no_grad():
            return self.net.embed(x[None])[0]

    def generate_one(self, img_rgb_uint8: np.ndarray, label_ids: Sequence[int]) -> Dict[str, Any]:
        """The base generator's result with ``cam_refined`` = its maps after the random walk.

        Args:
            img_rgb_uint8: ``(H0, W0, 3)`` uint8 RGB image.
            label_ids: Class indices present in the image.

        Returns:
            ``dict(keys, cam, cam_refined)`` (``cam`` is the base generator's).
        """
        # the per-image entry point: generate_image (batch contract of wsss_mmseg.generators)
        # where the base generator has it, else the per-image generate(img, label_ids)
        per_image = getattr(self.base, 'generate_image', None) or self.base.generate
        result = dict(per_image(img_rgb_uint8, label_ids))
        maps = result.get('cam_refined')
        if maps is None:
            maps = result['cam']
        maps = torch.as_tensor(np.asarray(maps, dtype=np.float32))
        h0, w0 = np.asarray(img_rgb_uint8).shape[:2]
        emb = self.embedding(img_rgb_uint8)
        result['cam_refined'] = self.random_walk(maps.to(emb.device), embedding=emb,
                                                 out_hw=(h0, w0))
        return result
