"""``solve(..., progress=True)``: a progress bar of ``t`` across the span.

Refreshed at most :data:`REFRESH_PER_S` times a second, so a fast solve pays a time check
per step and little else; when ``progress`` is off the loops skip it entirely.
"""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["Progress", "REFRESH_PER_S", "LOG_EVERY_S"]

REFRESH_PER_S = 10
#: Seconds between two plain lines when stderr is not a terminal.
LOG_EVERY_S = 10.0


class Progress:
    """Progress of one solve across its span (shown in the user's time).

    One lane shows ``t``; a per-sample solve shows ``done``, the mean fraction of the
    samples' spans covered. The step count is the solve's ``stats.n_steps``. On a terminal
    tqdm draws a bar when installed (else a line rewritten in place); when stderr is not a
    terminal (a log file) plain lines are written instead, at most one every
    :data:`LOG_EVERY_S` seconds, and the final one.

    Args:
        clock: the solve's clock (:mod:`odeflow.lanes`).
        desc: the bar's label.
    """

    def __init__(self, clock: Any, desc: str = "solve"):
        self.lanes = clock.per_sample
        self.t0, self.sign = clock.t0, clock.sign
        span = clock.t_end - self.t0
        self.span = span.clamp(min=1e-300) if self.lanes else max(span, 1e-300)
        self._next = 0.0
        self._desc = desc
        self._bar: Any = None
        try:
            self._tty = sys.stderr.isatty()
        except (AttributeError, ValueError):
            self._tty = False
        self._every = 1.0 / REFRESH_PER_S if self._tty else LOG_EVERY_S
        if self._tty:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                pass
            else:
                self._bar = tqdm(total=1000, desc=desc, leave=False,
                                 bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}")

    def update(self, t: Any, steps: int) -> None:
        """Called by the loop after each step with an accepted lane (canonical ``t``)."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._every
        self._draw(t, steps)

    def _draw(self, t: Any, steps: int) -> None:
        if self.lanes:  # host sync: only when drawing
            frac = shown_t = float(((t - self.t0) / self.span).clamp(0, 1).mean())
        else:
            frac, shown_t = min(max((t - self.t0) / self.span, 0.0), 1.0), self.sign * t
        shown = f"{self._desc} {'done' if self.lanes else 't'}={shown_t:.6g} steps={steps}"
        if self._bar is not None:
            self._bar.n = int(1000 * frac)
            self._bar.set_description_str(shown, refresh=False)
            self._bar.refresh()
        else:
            line = f"{shown}: {100 * frac:5.1f}%"
            sys.stderr.write(f"\r{line}   " if self._tty else f"{line}\n")
            sys.stderr.flush()

    def close(self, t: Any, steps: int) -> None:
        """Draw the final state and release the bar."""
        self._draw(t, steps)
        if self._bar is not None:
            self._bar.close()
        elif self._tty:
            sys.stderr.write("\n")
            sys.stderr.flush()

