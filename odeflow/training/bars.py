"""Progress bars for training loops, drawn only where someone watches them.

A bar redraws itself with carriage returns; written into a log file (``odeflow train ... >
log 2>&1``, a batch job, CI) that is a wall of ``\\r`` fragments. So a bar is drawn only
when both stdout and stderr are terminals; otherwise the loop prints its plain per-epoch
or per-evaluation lines and nothing else.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

__all__ = ["bars_wanted", "progress_bar"]


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False


def bars_wanted(requested: bool) -> bool:
    """``--progress`` as asked, and only on a terminal (stdout and stderr both)."""
    return requested and _is_tty(sys.stdout) and _is_tty(sys.stderr)


def progress_bar(
    requested: bool, *, total: int, desc: str, iterable: Iterable | None = None, initial: int = 0
) -> Any:
    """A tqdm bar (over ``iterable`` when given), or ``None`` when :func:`bars_wanted` says
    no."""
    if not bars_wanted(requested):
        return None
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, initial=initial, desc=desc, leave=False,
                dynamic_ncols=True)
