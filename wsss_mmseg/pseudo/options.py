"""Typed checks of config options: every error names the option and the value (pure)."""
from __future__ import annotations

import numbers
from typing import Any, Optional

__all__ = ['PseudoConfigError', 'check_int', 'check_number', 'check_bool', 'check_fraction']


class PseudoConfigError(ValueError):
    """A bad option or config section, found before the first image (exit status 3)."""


def check_int(name: str, value: Any, *, lo: Optional[int] = None, hi: Optional[int] = None) -> int:
    """An integer option (bools and non-integral floats refused).

    Args:
        name: Option name for the message (e.g. ``'pseudo_job.log_interval'``).
        value: The value.
        lo: Smallest allowed value.
        hi: Largest allowed value.

    Returns:
        ``int(value)``.

    Raises:
        PseudoConfigError: Wrong type or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or int(value) != value:
        raise PseudoConfigError(f'{name} must be an integer, got {value!r} ({type(value).__name__})')
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f'>= {lo}' if hi is None else (f'<= {hi}' if lo is None else f'in {lo}..{hi}')
        raise PseudoConfigError(f'{name} must be {rng}, got {value}')
    return value


def check_number(name: str, value: Any, *, lo: Optional[float] = None, hi: Optional[float] = None,
                 lo_open: bool = False, hi_open: bool = False) -> float:
    """A finite real option within ``[lo, hi]`` (``(`` / ``)`` with ``lo_open`` / ``hi_open``).

    Raises:
        PseudoConfigError: Wrong type, NaN/inf, or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise PseudoConfigError(f'{name} must be a number, got {value!r} ({type(value).__name__})')
    value = float(value)
    if value != value or value in (float('inf'), float('-inf')):
        raise PseudoConfigError(f'{name} must be finite, got {value}')
    bad_lo = lo is not None and (value <= lo if lo_open else value < lo)
    bad_hi = hi is not None and (value >= hi if hi_open else value > hi)
    if bad_lo or bad_hi:
        left = '' if lo is None else ('(' if lo_open else '[') + f'{lo}'
        right = '' if hi is None else f'{hi}' + (')' if hi_open else ']')
        rng = f'in {left}, {right}' if lo is not None and hi is not None else \
            (f'{">" if lo_open else ">="} {lo}' if lo is not None else f'{"<" if hi_open else "<="} {hi}')
        raise PseudoConfigError(f'{name} must be {rng}, got {value}')
    return value


def check_fraction(name: str, value: Any) -> float:
    """A number in ``[0, 1]`` (a confidence threshold)."""
    return check_number(name, value, lo=0.0, hi=1.0)


def check_bool(name: str, value: Any) -> bool:
    """A boolean option (``True``/``False`` only, not 0/1 or strings)."""
    if not isinstance(value, bool):
        raise PseudoConfigError(f'{name} must be True or False, got {value!r} ({type(value).__name__})')
    return value
