"""The MaskCLIP+ phase switch (spec maskclip_pacl.md §2.3, §6 item 6) as a training hook."""
from __future__ import annotations

import math
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

from ..models.maskclip_plus import phase_at

__all__ = ['MaskCLIPPlusPhaseHook', 'describe_switch', 'resolve_switch_iter']


def resolve_switch_iter(*, switch_iter: Optional[int], switch_ratio: Optional[float], max_iters: int) -> Optional[int]:
    """First 0-based iteration of self-training: ``switch_iter``, or ``ceil(switch_ratio * max_iters)``.

    Args:
        switch_iter: Explicit iteration (``None`` to use the ratio).
        switch_ratio: Fraction of ``max_iters`` (0.1 zero-shot; 1.0: never, annotation-free,
            since the returned ``max_iters`` is past the last iteration).
        max_iters: The training length.

    Returns:
        The iteration (``>= max_iters``: never within the run), or ``None`` (never self-train).
    """
    if switch_iter is not None:
        return int(switch_iter)
    if switch_ratio is None:
        return None
    return int(math.ceil(float(switch_ratio) * int(max_iters)))


def describe_switch(switch: Optional[int], max_iters: int) -> str:
    """Log text of when self-training starts, ``'never'`` when no iteration of the run reaches it.

    Args:
        switch: First 0-based iteration of self-training (:func:`resolve_switch_iter`), or None.
        max_iters: The training length (iterations ``0 .. max_iters - 1``).

    Returns:
        ``'self-training from iteration N'`` (1-based, as the log counts) or ``'self-training:
        never ...'``.
    """
    if switch is None:
        return 'self-training: never (teacher labels only)'
    if switch >= int(max_iters):
        return (f'self-training: never (it would start at iteration {switch + 1}, the run has '
                f'{int(max_iters)}; teacher labels only)')
    return f'self-training from iteration {switch + 1}'


@HOOKS.register_module()
class MaskCLIPPlusPhaseHook(Hook):
    """Sets ``model.phase`` of a ``MaskCLIPPlusSegmentor`` before every training iteration.

    The phase is a function of ``runner.iter`` only (``'teacher'`` for ``runner.iter <
    switch_iter``, then ``'self'``), so validation passes change nothing and ``--resume``
    continues in the right phase (the official code counted forwards and restarted the teacher
    phase on resume). The first ``switch_iter`` iterations (logged 1..switch_iter) use the teacher.
    Every change of phase, and the phase at the first iteration of a run, is logged.

    Args:
        switch_iter: First 0-based iteration of self-training.
        switch_ratio: Or a fraction of ``max_iters`` (0.1 = the paper's "first 1/10"). Exactly
            one of the two; ``switch_ratio >= 1`` never self-trains.
    """

    priority = 'NORMAL'

    def __init__(self, switch_iter: Optional[int] = None, switch_ratio: Optional[float] = None) -> None:
        if (switch_iter is None) == (switch_ratio is None):
            raise ValueError('MaskCLIPPlusPhaseHook needs exactly one of switch_iter=... or switch_ratio=...')
        if switch_iter is not None and int(switch_iter) < 0:
            raise ValueError(f'switch_iter must be >= 0, got {switch_iter}')
        if switch_ratio is not None and not 0.0 <= float(switch_ratio):
            raise ValueError(f'switch_ratio must be >= 0, got {switch_ratio}')
        self.switch_iter = switch_iter
        self.switch_ratio = switch_ratio
        self._last: Optional[str] = None

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        """Set the phase of ``runner.iter``."""
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, 'set_phase'):
            raise TypeError(f'MaskCLIPPlusPhaseHook needs a MaskCLIPPlusSegmentor, got {type(model).__name__}')
        switch = resolve_switch_iter(switch_iter=self.switch_iter, switch_ratio=self.switch_ratio,
                                     max_iters=runner.max_iters)
        phase = phase_at(runner.iter, switch_iter=switch)
        model.set_phase(phase)
        if phase != self._last:
            runner.logger.info(f'MaskCLIPPlusPhaseHook: phase {phase!r} from iteration {runner.iter + 1} '
                               f'({describe_switch(switch, runner.max_iters)})')
            self._last = phase
