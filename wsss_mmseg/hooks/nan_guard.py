"""Stop training at the first non-finite loss, before a broken checkpoint is saved.

mmengine keeps training (and saving checkpoints) when the loss turns NaN or
infinite; the weights of that iteration are already corrupted by the optimizer
step. :class:`NaNLossGuardHook` checks the logged losses of every iteration in
``after_train_iter`` with a priority above every built-in hook, so it raises
before ``CheckpointHook`` (priority ``VERY_LOW``) can save that iteration; the
last checkpoint on disk (and ``last_checkpoint``) stays the previous, finite
one and ``--resume`` restarts from it.

Use it with ``custom_hooks = [dict(type='NaNLossGuardHook')]``.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional

from mmengine.hooks import Hook
from mmseg.registry import HOOKS

__all__ = ['NaNLossGuardHook', 'non_finite_losses']


def non_finite_losses(outputs: Optional[Mapping[str, Any]]) -> Dict[str, float]:
    """The entries of a train-step output dict whose (scalar) value is NaN or infinite.

    Args:
        outputs: ``log_vars`` of ``model.train_step`` (floats or tensors);
            non-numeric entries are ignored; multi-element tensors are checked
            element-wise.

    Returns:
        ``name -> offending value`` (empty when everything is finite).
    """
    bad: Dict[str, float] = {}
    for name, value in (outputs or {}).items():
        if hasattr(value, 'detach'):
            t = value.detach()
            if not t.is_floating_point() or t.numel() == 0:
                continue
            finite = t.isfinite()
            if not bool(finite.all()):
                bad[str(name)] = float(t[~finite].reshape(-1)[0])
        elif isinstance(value, float) and not math.isfinite(value):
            bad[str(name)] = value
    return bad


@HOOKS.register_module()
class NaNLossGuardHook(Hook):
    """Raise ``FloatingPointError`` on a non-finite loss (see the module docstring).

    Args:
        check_keys_with: Only entries whose name contains this substring are
            checked (default ``'loss'``: every mmseg loss and the total).
    """

    priority = 'HIGHEST'

    def __init__(self, check_keys_with: str = 'loss') -> None:
        self.check_keys_with = check_keys_with

    def after_train_iter(self, runner: Any, batch_idx: int,
                         data_batch: Any = None, outputs: Optional[Mapping[str, Any]] = None
                         ) -> None:
        """Check this iteration's losses; raise before any checkpoint of it is saved."""
        losses = {k: v for k, v in (outputs or {}).items() if self.check_keys_with in str(k)}
        bad = non_finite_losses(losses)
        if bad:
            last = runner.message_hub.get_info('last_ckpt')
            raise FloatingPointError(
                f'non-finite loss at iteration {runner.iter + 1} (epoch {runner.epoch + 1}): '
                + ', '.join(f'{k}={v}' for k, v in sorted(bad.items()))
                + '. Training stops before this iteration is checkpointed; last complete '
                f'checkpoint: {last or "none yet"} (resume from it with --resume, after '
                'lowering the learning rate or fixing the data).')
