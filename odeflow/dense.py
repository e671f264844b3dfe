"""Dense output of a whole solve: the solution at any time of the span, after the solve.

The loop keeps each accepted step's interpolant (detached: dense output carries no
gradient) when asked; :class:`DenseOutput` finds the step holding a time and evaluates it
there. A per-sample solve keeps one batched interpolant per iteration with the mask of the
lanes that accepted; each lane's step holding its time is found with one search over all
iterations, and the lanes are evaluated together from their own steps. Nothing is kept
unless dense output is requested. Beyond the point where a lane's solve failed
(``throw=False``) its dense output is ``nan``, never a value.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .interp import Interpolant
from .problem import Problem, State

__all__ = ["DenseOutput"]


class DenseOutput:
    """The solution of a finished solve at any time of its span.

    Call it (or :meth:`evaluate`) with a scalar time or a 1-D tensor of times, in either
    order; :meth:`derivative` gives ``dy/dt`` there. Values are those of each step's
    interpolant: the method's own continuous extension (dopri5, tsit5: 4th order) or cubic
    Hermite. They carry no autograd graph. Per sample, ``t`` may also be ``(B, T)``, one
    row per sample (result ``(T, B, ...)``); a shared scalar gives ``(B, ...)``.

    Example:
        >>> dense = odeflow.odeint_dense(lambda t, y: -y, torch.ones(2), 0.0, 1.0)
        >>> dense(torch.tensor([0.25, 0.5])).shape
        torch.Size([2, 2])
    """

    def __init__(self, problem: Problem, pieces: Sequence[tuple[Interpolant, Any]],
                 t_last: Any = None):
        if not pieces:
            raise ValueError("dense output needs at least one step (t0 == t1?)")
        self._clock = C = problem.clock
        self._layout = problem.layout
        # Reached: the end of the span, or where the solve stopped (failure or event).
        end = C.t_end if t_last is None else t_last
        if C.per_sample:
            self._lo, self._hi = C.grid[:, 0], C.grid[:, -1]
            self._reached = torch.as_tensor(end, dtype=torch.float64, device=C.device)
            # one piece whose tensors have a leading iteration axis (I, B, ...): its t, dt (I, B)
            self._stacked = _map_fields([p for p, _ in pieces], torch.stack)
            ok = torch.stack([ok for _, ok in pieces])
            # Each lane's accepted steps by start time (+inf after them): one search finds
            # a lane's step, ``_order`` its iteration (the sort is stable, starts increase).
            starts, self._order = torch.where(ok, self._stacked.t, math.inf).T.sort(stable=True)
            self._lane_starts = starts.contiguous()
            self._slack = 1e-12 * torch.maximum(self._lo.abs(), self._hi.abs()).clamp(min=1.0)
        else:
            self._pieces = [p for p, ok in pieces if ok]
            self._starts = [p.t for p in self._pieces]
            self._lo, self._hi = C.grid[0], C.grid[-1]
            self._reached = float(end)
            self._slack = 1e-12 * max(1.0, abs(self._lo), abs(self._hi))

    @property
    def span(self) -> tuple[float, float]:
        """The first and last time (the user's time; one lane)."""
        C = self._clock
        if C.per_sample:
            raise ValueError("a per-sample dense output has one span per sample")
        return C.sign * self._lo, C.sign * self._hi

    def __call__(self, t: Tensor | float) -> State:
        return self.evaluate(t)

    def evaluate(self, t: Tensor | float) -> State:
        """``y(t)``: shape ``y0.shape`` for a scalar ``t``, ``(len(t), *y0.shape)`` for 1-D."""
        return self._at(t, derivative=False)

    def derivative(self, t: Tensor | float) -> State:
        """``dy/dt`` of the dense output at ``t`` (same shapes as :meth:`evaluate`)."""
        return self._at(t, derivative=True)

    @torch.no_grad()
    def _at(self, t: Tensor | float, derivative: bool) -> State:
        C = self._clock
        times = torch.as_tensor(t, dtype=torch.float64).detach()
        if C.per_sample:
            times = times.to(C.device)
            if times.ndim > 2 or (times.ndim == 2 and times.shape[0] != C.batch):
                raise ValueError(f"t must be a scalar, a 1-D tensor of shared times or a "
                                 f"({C.batch}, T) tensor of per-sample times, got shape "
                                 f"{tuple(times.shape)}")
            # one row of canonical times (one per lane) for each asked time
            rows = C.sign * (times.T if times.ndim == 2 else times.reshape(-1, 1))
            outside = (rows < self._lo - self._slack) | (rows > self._hi + self._slack)
            if bool(outside.any()):  # host sync: once per call
                j, b = outside.nonzero()[0].tolist()
                span = sorted((float(C.sign[b] * self._lo[b]), float(C.sign[b] * self._hi[b])))
                raise ValueError(f"t={float(C.sign[b] * rows[j, b])!r} is outside sample {b}'s "
                                 f"solved span [{span[0]!r}, {span[1]!r}]")
        else:
            if times.ndim == 2 and times.shape[0] == 1 and C.lane_time:
                times = times[0]  # one sample's (1, T) times, in the per-sample form
            if times.ndim > 1:
                raise ValueError(f"t must be a scalar or a 1-D tensor, got shape "
                                 f"{tuple(times.shape)}")
            lo, hi = sorted((C.sign * self._lo, C.sign * self._hi))
            values = times.reshape(-1).tolist()
            for v in values:
                if not lo - self._slack <= v <= hi + self._slack:
                    raise ValueError(f"t={v!r} is outside the solved span [{lo!r}, {hi!r}]")
            rows = [C.sign * v for v in values]
        out = torch.stack([self.canonical(tc, derivative) for tc in rows])
        return self._layout.unflatten(out[0] if times.ndim == 0 else out)

    def canonical(self, tc: Any, derivative: bool = False) -> Tensor:
        """The flat state (or ``dy/dt`` in the user's direction) at canonical time ``tc``,
        read as the interpolating adjoint reads the forward solution: a float for a
        one-lane solve; per sample a ``(B,)`` tensor, one time per lane, giving ``(B, n)``.
        A time outside the span reads its nearest end (no check, no host sync), one beyond
        a failure ``nan``."""
        C = self._clock
        if C.per_sample:
            tc = torch.minimum(torch.maximum(tc, self._lo), self._hi)
            # the last accepted step starting before tc: a time on a boundary belongs to the
            # earlier step, one at the very start of a span to the first
            k = torch.searchsorted(self._lane_starts, tc[:, None]).clamp(min=1) - 1
            idx = self._order.gather(1, k)[:, 0]
            cols = torch.arange(tc.shape[0], device=tc.device)
            # every lane's piece at once: lane cols[j]'s of iteration idx[j]
            piece = _map_fields([self._stacked], lambda v: v[0][idx, cols])
            theta = ((tc - piece.t) / torch.where(piece.dt > 0, piece.dt, 1.0)).clamp(0.0, 1.0)
            piece = piece.precise or piece
            if derivative:
                out = piece.derivative(theta) * C.sign_column(self._layout.real_dtype)
            else:
                out = piece.evaluate(theta)
            beyond = ((self._reached < self._hi) & (tc > self._reached + self._slack))[:, None]
            return torch.where(beyond, math.nan, out)
        i = max(0, min(bisect.bisect_right(self._starts, tc) - 1, len(self._pieces) - 1))
        piece = self._pieces[i]
        piece = piece.precise or piece  # dopri8: re-step to keep the method's order
        theta = min(max((tc - piece.t) / piece.dt, 0.0), 1.0)
        out = piece.derivative(theta) * C.sign if derivative else piece.evaluate(theta)
        # beyond a failure or an event: no value (beyond a whole span: its end, as above)
        if self._reached < self._hi and tc > self._reached + self._slack:
            out = torch.full_like(out, math.nan)
        return out


# ------------------------------------------------------ per-sample dense output (gathering)
def _fields(piece: Any) -> dict[str, Any]:
    out = dict(getattr(piece, "__dict__", {}))
    for cls in type(piece).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if hasattr(piece, name):
                out[name] = getattr(piece, name)
    return out


def _map_fields(pieces: Sequence[Any], combine: Callable[[list[Tensor]], Tensor]) -> Any:
    """``pieces[0]`` rebuilt with each tensor field (also in tuples and nested interpolants)
    replaced by ``combine`` of that field in every piece (other fields are the first's)."""
    fields = [_fields(p) for p in pieces]
    out = object.__new__(type(pieces[0]))
    for name, value in fields[0].items():
        values = [f[name] for f in fields]
        if isinstance(value, Tensor):
            value = combine(values)
        elif isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
            value = tuple(combine([v[i] for v in values]) for i in range(len(value)))
        elif isinstance(value, Interpolant):
            value = _map_fields(values, combine)
        setattr(out, name, value)
    return out
