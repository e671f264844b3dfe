"""Dense output of a whole solve: the solution at any time of the span, after the solve.

The adaptive loop keeps each accepted step's interpolant (detached: dense output carries
no gradient) when asked; :class:`DenseOutput` finds the step holding a time and evaluates
it there. Nothing is kept unless dense output is requested.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

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
    Hermite. They carry no autograd graph.

    Example:
        >>> dense = odeflow.odeint_dense(lambda t, y: -y, torch.ones(2), 0.0, 1.0)
        >>> dense(torch.tensor([0.25, 0.5])).shape
        torch.Size([2, 2])
    """

    def __init__(self, problem: Problem, pieces: Sequence[Interpolant]):
        if not pieces:
            raise ValueError("dense output needs at least one step (t0 == t1?)")
        self._layout = problem.layout
        self._sign = problem.sign
        self._pieces = list(pieces)
        self._starts = [p.t for p in pieces]
        self._t0 = problem.t_out[0]
        self._t1 = problem.t_out[-1]

    @property
    def span(self) -> tuple[float, float]:
        """The first and last time (the user's time)."""
        return self._sign * self._t0, self._sign * self._t1

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
        values = torch.as_tensor(t, dtype=torch.float64).detach().cpu()
        if values.ndim > 1:
            raise ValueError(f"t must be a scalar or a 1-D tensor, got shape {tuple(values.shape)}")
        out = [self._one(v, derivative) for v in values.reshape(-1).tolist()]
        flat = torch.stack(out)
        if values.ndim == 0:
            return self._layout.unflatten(flat[0])
        return self._layout.unflatten_stacked(flat)

    def _one(self, t_user: float, derivative: bool) -> Tensor:
        tc = self._sign * t_user
        slack = 1e-12 * max(1.0, abs(self._t0), abs(self._t1))
        if not self._t0 - slack <= tc <= self._t1 + slack:
            lo, hi = sorted(self.span)
            raise ValueError(f"t={t_user!r} is outside the solved span [{lo!r}, {hi!r}]")
        i = max(0, min(bisect.bisect_right(self._starts, tc) - 1, len(self._pieces) - 1))
        piece = self._pieces[i]
        piece = piece.precise or piece  # dopri8: re-step to keep the method's order
        theta = min(max((tc - piece.t) / piece.dt, 0.0), 1.0)
        if derivative:
            return piece.derivative(theta) * self._sign
        return piece.evaluate(theta)
