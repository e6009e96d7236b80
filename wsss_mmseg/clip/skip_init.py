"""Build a model without its random initialisation when a strict load fills it entirely.

Constructing an open_clip ViT-B/16 CLIP draws ~150 M random numbers for weights that the
checkpoint then overwrites: 2.4 s of a 3 s warm start on a 2-core CPU (issue #12 item 4).
:func:`skip_random_fills` turns the in-place random fills that ``torch.nn.init`` and module
``reset_parameters`` use (``Tensor.uniform_``, ``Tensor.normal_``, ...) into no-ops while a
model is constructed, leaving the ``torch.empty`` memory as it is. Everything else runs as
usual, so non-persistent buffers (e.g. the text causal mask) are computed normally.

It is only correct when every persistent tensor is loaded afterwards -- the factory uses it
exclusively in front of :func:`wsss_mmseg.clip.factory.load_state_dict_strict`, which refuses
a checkpoint that misses any key. Pure torch.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Sequence

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ['skip_random_fills', 'RANDOM_FILLS']

_INIT_FILLS = ('uniform_', 'normal_', 'xavier_uniform_', 'xavier_normal_', 'kaiming_uniform_', 'kaiming_normal_')

#: Random fills whose result a strict load overwrites: the ``torch.nn.init`` functions (they
#: dispatch to a mode themselves, and what they call inside is then not seen by the mode) and
#: the in-place tensor methods modules call directly. ``trunc_normal_`` / ``orthogonal_`` do not
#: dispatch as a whole: their inner fills are skipped and their arithmetic runs on the
#: uninitialised memory -- harmless, as the load overwrites it.
RANDOM_FILLS = frozenset([getattr(nn.init, n) for n in _INIT_FILLS if hasattr(nn.init, n)] + [
    torch.Tensor.uniform_, torch.Tensor.normal_, torch.Tensor.random_, torch.Tensor.exponential_,
    torch.Tensor.cauchy_, torch.Tensor.log_normal_, torch.Tensor.geometric_, torch.Tensor.bernoulli_,
])


class _SkipFills(TorchFunctionMode):
    """Return the target tensor of a random in-place fill unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped = 0

    def __torch_function__(self, func: Callable, types: Sequence[type], args: Sequence[Any] = (),
                           kwargs: Optional[Mapping[str, Any]] = None) -> Any:
        if func in RANDOM_FILLS:
            self.skipped += 1
            return args[0] if args else (kwargs or {})['tensor']  # nn.init passes its tensor by keyword
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def skip_random_fills() -> Iterator[Dict[str, int]]:
    """Skip random in-place fills inside the block (model construction before a strict load).

    Yields:
        A dict whose ``'skipped'`` entry counts the skipped fills once the block ends.
    """
    stats = {'skipped': 0}
    mode = _SkipFills()
    with mode:
        yield stats
    stats['skipped'] = mode.skipped
