"""Log lines of the pseudo-label job (its plan, pipeline and summary modules print them)."""
from __future__ import annotations

from typing import Any

__all__ = ['log_line']


def log_line(msg: str, logger: Any, level: int = 20) -> None:
    """Print one line through mmengine's ``print_log`` (imported on first use).

    Args:
        msg: The line.
        logger: mmengine logger (or ``'current'``, a logger name, None: print).
        level: Logging level (20 info, 30 warning).
    """
    from mmengine.logging import print_log
    print_log(msg, logger=logger, level=level)
