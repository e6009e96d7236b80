"""Keep the training ``PseudoLabelHook`` runs in as it would be without the hook.

:func:`preserved_process_state` restores torch's thread count and the random states around
the pseudo-label job; :func:`restart_train_iterator` and :func:`replace_train_dataset` renew
the mmengine train loop's dataloader (iterator) once the labels exist or samples are dropped.
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch

__all__ = ['preserved_process_state', 'restart_train_iterator', 'replace_train_dataset']


@contextmanager
def preserved_process_state() -> Iterator[None]:
    """Restore torch threads and the python/numpy/torch/CUDA random states on exit."""
    threads = torch.get_num_threads()
    py_state = random.getstate()
    np_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


def restart_train_iterator(loop: Any) -> None:
    """Recreate a train loop's dataloader iterator if it was started (mmengine <= 0.10.7).

    ``IterBasedTrainLoop`` of mmengine 0.10.7 starts iterating (and worker
    prefetching) in its constructor; the batches prefetched before the labels
    existed are discarded here. An ``InfiniteSampler``'s shared index stream is
    rewound and the global torch random state is kept (a new torch iterator
    draws its worker base seed from it), so that the batches equal those of a
    run without restart -- exactly so for ``num_workers=0`` and for persistent
    workers (our configs), which torch resumes instead of restarting.
    """
    it = getattr(loop, 'dataloader_iterator', None)
    if it is None or getattr(it, '_iterator', None) is None:
        return  # not started yet (onedl-mmengine creates it lazily; epoch loops iterate later)
    sampler = getattr(loop.dataloader, 'sampler', None)
    if hasattr(sampler, 'indices') and hasattr(sampler, '_indices_of_rank'):
        sampler.indices = sampler._indices_of_rank()
    state = torch.get_rng_state()
    try:
        loop.dataloader_iterator = type(it)(loop.dataloader)
    finally:
        torch.set_rng_state(state)


def replace_train_dataset(runner: Any, dataset: Any) -> None:
    """Rebuild the train dataloader around ``dataset`` (same config otherwise)."""
    loop = runner.train_loop
    loader_cfg = runner.cfg.train_dataloader
    loader_cfg = loader_cfg.to_dict() if hasattr(loader_cfg, 'to_dict') else dict(loader_cfg)
    loader_cfg['dataset'] = dataset
    randomness = runner.cfg.get('randomness') or {}
    state = torch.get_rng_state()
    try:
        loop.dataloader = runner.build_dataloader(
            loader_cfg, seed=runner.seed,
            diff_rank_seed=bool(randomness.get('diff_rank_seed', False)))
        it = getattr(loop, 'dataloader_iterator', None)
        if it is not None:
            loop.dataloader_iterator = type(it)(loop.dataloader)
    finally:
        torch.set_rng_state(state)
    if hasattr(loop, '_max_epochs') and type(loop).__name__ == 'EpochBasedTrainLoop':
        loop._max_iters = loop._max_epochs * len(loop.dataloader)
