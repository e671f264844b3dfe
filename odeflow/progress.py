"""``solve(..., progress=True)``: a progress bar of ``t`` across the span.

tqdm draws it when installed; otherwise a single line on stderr is rewritten in place. It is
refreshed at most :data:`REFRESH_PER_S` times a second, so a fast solve pays a time check
per step and little else; when ``progress`` is off the loops skip it entirely.
"""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["Progress", "REFRESH_PER_S"]

REFRESH_PER_S = 10


class Progress:
    """Progress of one solve from canonical ``t0`` to ``t1`` (shown in the user's time).

    Args:
        t0, t1: the canonical span.
        sign: ``+1``, or ``-1`` when the user's time decreases (shown as the user's time).
        desc: the bar's label.
        label: the name of the quantity shown (``t``; a per-sample solve shows the mean
            fraction of the samples' spans).
    """

    def __init__(self, t0: float, t1: float, sign: float = 1.0, desc: str = "solve",
                 label: str = "t"):
        self.t0, self.t1, self.sign, self.label = t0, t1, sign, label
        self.span = max(t1 - t0, 1e-300)
        self._next = 0.0
        self._bar: Any = None
        try:
            from tqdm.auto import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            self._bar = tqdm(total=1000, desc=desc, leave=False,
                             bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}")
        self._desc = desc

    def update(self, t: float, steps: int) -> None:
        """Called by the loop after each accepted step (canonical ``t``)."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + 1.0 / REFRESH_PER_S
        self._draw(t, steps)

    def _draw(self, t: float, steps: int) -> None:
        frac = min(max((t - self.t0) / self.span, 0.0), 1.0)
        shown = f"{self._desc} {self.label}={self.sign * t:.6g} steps={steps}"
        if self._bar is not None:
            self._bar.n = int(1000 * frac)
            self._bar.set_description_str(shown, refresh=False)
            self._bar.refresh()
        else:
            sys.stderr.write(f"\r{shown}: {100 * frac:5.1f}%   ")
            sys.stderr.flush()

    def close(self, t: float, steps: int) -> None:
        """Draw the final state and release the bar."""
        self._draw(t, steps)
        if self._bar is not None:
            self._bar.close()
        else:
            sys.stderr.write("\n")
            sys.stderr.flush()
