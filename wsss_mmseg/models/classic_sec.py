"""``SECSegmentor`` (MODELS): an ``EncoderDecoder`` trained with SEC's seed/expand/constrain losses.

Math in :mod:`wsss_mmseg.classic.sec`. Any mmseg backbone + decode head with
``num_classes = 1 + K`` (channel 0 background). Training targets come from the pipeline:
``gt_sem_seg`` = SEC cues (``LoadSECCues``: CAMs of any generator saved with
``tools/generate_pseudo.py --save-cams``), and the image-level labels from the
``label_ids`` meta key (``PackSegInputs(meta_keys=(..., 'label_ids'))``). All three losses
are computed at the decode head's output resolution; the CRF of the constrain loss runs on
the CPU, in a process pool when ``crf_workers > 0``. Prediction / ``mim test`` are those of
``EncoderDecoder`` (the decode head's ``loss_decode`` is not used).
"""
from __future__ import annotations

from concurrent.futures import Executor
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from torch import Tensor

from ..classic.sec import Q_BG, Q_FG, constrain_loss, expand_loss, sec_crf_posterior, seed_loss

__all__ = ['SECSegmentor']


def _crf_job(args: tuple) -> np.ndarray:
    probs, image, scale, iters = args
    return sec_crf_posterior(probs, image, scale=scale, iters=iters)


@MODELS.register_module()
class SECSegmentor(EncoderDecoder):
    """Seed, expand and constrain (Kolesnikov & Lampert 2016) on any mmseg segmenter.

    Args:
        q_fg: GWRP decay of the present classes (0.996).
        q_bg: GWRP decay of the background (0.999).
        loss_weights: ``dict(seed=1, expand=1, constrain=1)``.
        crf_iters: Mean-field iterations of the constrain CRF.
        crf_workers: Processes for the CRFs (0 = in the training process).
        **kwargs: ``EncoderDecoder`` arguments (``backbone``, ``decode_head``, ...).
    """

    def __init__(self, *, q_fg: float = Q_FG, q_bg: float = Q_BG,
                 loss_weights: Optional[Dict[str, float]] = None, crf_iters: int = 10,
                 crf_workers: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        weights = dict(seed=1.0, expand=1.0, constrain=1.0)
        unknown = sorted(set(loss_weights or {}) - set(weights))
        if unknown:
            raise KeyError(f'unknown SEC loss weight(s) {unknown}; known: {sorted(weights)}')
        weights.update(loss_weights or {})
        self.loss_weights = {k: float(v) for k, v in weights.items()}
        self.q_fg, self.q_bg = float(q_fg), float(q_bg)
        self.crf_iters = int(crf_iters)
        self.crf_workers = int(crf_workers)
        self._pool: Optional[Executor] = None

    def __getstate__(self) -> Dict[str, Any]:
        # the CRF process pool is not part of the model (pickling / deepcopy, e.g. EMA)
        state = self.__dict__.copy()
        state['_pool'] = None
        return state

    def close_crf_pool(self) -> None:
        """Shut the CRF worker processes down (they are started again when needed)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _images_u8(self, inputs: Tensor, size: Sequence[int]) -> List[np.ndarray]:
        dp = self.data_preprocessor
        x = inputs.detach().float()
        if getattr(dp, '_enable_normalize', False):
            x = x * dp.std.to(x.device) + dp.mean.to(x.device)
        x = F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=False)
        x = x.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [np.ascontiguousarray(i) for i in x]

    def _crf_targets(self, probs: Tensor, inputs: Tensor) -> Tensor:
        images = self._images_u8(inputs, probs.shape[2:])
        scale = float(inputs.shape[2]) / float(probs.shape[2])
        jobs = [(p, img, scale, self.crf_iters)
                for p, img in zip(probs.detach().float().cpu().numpy(), images)]
        if self.crf_workers > 0:
            if self._pool is None:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor
                self._pool = ProcessPoolExecutor(
                    self.crf_workers, mp_context=multiprocessing.get_context('spawn'))
            out = list(self._pool.map(_crf_job, jobs))
        else:
            out = [_crf_job(j) for j in jobs]
        return torch.from_numpy(np.stack(out)).to(probs.device)

    def loss(self, inputs: Tensor, data_samples: Sequence[Any]) -> Dict[str, Tensor]:
        """``loss_seed``, ``loss_expand``, ``loss_constrain`` (weighted)."""
        k = self.decode_head.num_classes - 1
        cues, labels = [], torch.zeros(len(data_samples), k, device=inputs.device)
        for i, s in enumerate(data_samples):
            if 'gt_sem_seg' not in s:
                raise KeyError(f'data sample {i} ({s.metainfo.get("img_path")}) has no '
                               'gt_sem_seg; load SEC cues with LoadSECCues + PackSegInputs')
            if 'label_ids' not in s.metainfo:
                raise KeyError(f'data sample {i} ({s.metainfo.get("img_path")}) has no '
                               "label_ids; use PackSegInputs(meta_keys=(..., 'label_ids'))")
            ids = [int(c) for c in s.metainfo['label_ids']]
            if any(not 0 <= c < k for c in ids):
                raise ValueError(f'label ids {ids} out of range for {k} classes '
                                 f'({s.metainfo.get("img_path")})')
            labels[i, ids] = 1.0
            cues.append(s.gt_sem_seg.data.reshape(s.gt_sem_seg.data.shape[-2:]))
        logits = self.decode_head.forward(self.extract_feat(inputs))
        cue = F.interpolate(torch.stack(cues).float()[:, None], size=logits.shape[2:],
                            mode='nearest')[:, 0].long().to(logits.device)
        log_probs = F.log_softmax(logits.float(), dim=1)
        probs = log_probs.exp()
        w = self.loss_weights
        return dict(
            loss_seed=w['seed'] * seed_loss(log_probs, cue),
            loss_expand=w['expand'] * expand_loss(probs, labels.to(probs.device),
                                                  q_fg=self.q_fg, q_bg=self.q_bg),
            loss_constrain=w['constrain'] * constrain_loss(probs,
                                                           self._crf_targets(probs, inputs)))
