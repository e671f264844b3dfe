"""Dense output: the per-step interpolants shared by the loops, events and ``odeint_dense``.

A step's interpolant maps ``theta ∈ [0, 1]`` (the fraction of the step) to the solution
``y(t + theta dt)`` (:meth:`evaluate`) and to its time derivative (:meth:`derivative`).
Three kinds exist:

* :class:`TableauInterpolant`: a Runge–Kutta method's own continuous extension
  ``y + dt Σ_i b_i(θ) k_i`` (dopri5, tsit5);
* :class:`HermiteInterpolant`: cubic Hermite from the step's end values and derivatives
  (third order; every other method);
* :class:`LinearInterpolant`: the fixed-grid methods' default ``interp="linear"``.

The loops build one only when something needs it (an event check, ``odeint_dense``), so
plain solves pay nothing; outputs on the hot path use the solver's ``interpolate``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["hermite", "linear", "Interpolant", "TableauInterpolant", "HermiteInterpolant",
           "LinearInterpolant"]


def hermite(y0: Tensor, y1: Tensor, f0: Tensor, f1: Tensor, dt: float, theta: float) -> Tensor:
    """Cubic Hermite interpolant on a step from its end values and derivatives.

    Third order: the error is O(dt^4) on each step. Built with ops that save nothing for
    backward, so it is cheap under autograd too.
    """
    t2 = theta * theta
    t3 = t2 * theta
    h01 = -2 * t3 + 3 * t2
    h10 = t3 - 2 * t2 + theta
    h11 = t3 - t2
    out = torch.add(y0, y1 - y0, alpha=h01)
    out.add_(f0, alpha=dt * h10)
    out.add_(f1, alpha=dt * h11)
    return out


def linear(y0: Tensor, y1: Tensor, theta: float) -> Tensor:
    """Linear interpolation ``y0 + theta (y1 - y0)``."""
    return torch.lerp(y0, y1, theta)


class Interpolant:
    """The dense output of one step from canonical time ``t`` to ``t + dt``.

    Implementer rules: ``evaluate(0)`` is the step's start state and ``evaluate(1)`` its end
    state; ``derivative(theta)`` is ``d/dt evaluate`` (per unit of time, not of theta);
    neither mutates the tensors it was built from, and both work under autograd.
    """

    t: float
    dt: float
    #: A more accurate (and costlier) dense output of the same step, or ``None``: event
    #: location refines its root on it (dopri8 re-steps, see ``ReStepInterpolant``).
    precise: Interpolant | None = None

    def evaluate(self, theta: float) -> Tensor:
        raise NotImplementedError

    def derivative(self, theta: float) -> Tensor:
        raise NotImplementedError

    def detached(self) -> Interpolant:
        """A copy that owns detached clones of its tensors (safe to keep after the step)."""
        raise NotImplementedError


class TableauInterpolant(Interpolant):
    """``y(t + θ dt) = y + dt Σ_i b_i(θ) k_i`` with ``b_i(θ) = Σ_p dense[i][p] θ^(p+1)``."""

    __slots__ = ("t", "dt", "y", "stages", "dense")

    def __init__(self, t: float, dt: float, y: Tensor, stages: Sequence[Tensor],
                 dense: Sequence[Sequence[float]]):
        self.t, self.dt, self.y, self.stages, self.dense = t, dt, y, tuple(stages), dense

    def _combine(self, weights: list[float], base: Tensor | None) -> Tensor:
        out = base.clone() if base is not None else torch.zeros_like(self.y)
        for k_i, w in zip(self.stages, weights):
            if w != 0:
                out = out.add(k_i, alpha=w)
        return out

    def evaluate(self, theta: float) -> Tensor:
        weights = [self.dt * sum(c * theta ** (p + 1) for p, c in enumerate(poly))
                   for poly in self.dense]
        return self._combine(weights, self.y)

    def derivative(self, theta: float) -> Tensor:
        weights = [sum((p + 1) * c * theta**p for p, c in enumerate(poly)) for poly in self.dense]
        return self._combine(weights, None)

    def detached(self) -> TableauInterpolant:
        return TableauInterpolant(self.t, self.dt, self.y.detach().clone(),
                                  [k.detach().clone() for k in self.stages], self.dense)


class HermiteInterpolant(Interpolant):
    """Cubic Hermite from ``(y0, f0)`` at the start and ``(y1, f1)`` at the end."""

    __slots__ = ("t", "dt", "y0", "y1", "f0", "f1", "precise")

    def __init__(self, t: float, dt: float, y0: Tensor, y1: Tensor, f0: Tensor, f1: Tensor,
                 precise: Interpolant | None = None):
        self.t, self.dt, self.y0, self.y1, self.f0, self.f1 = t, dt, y0, y1, f0, f1
        self.precise = precise

    def evaluate(self, theta: float) -> Tensor:
        return hermite(self.y0, self.y1, self.f0, self.f1, self.dt, theta)

    def derivative(self, theta: float) -> Tensor:
        th = theta
        d01 = (6 * th - 6 * th * th) / self.dt
        out = torch.mul(self.y1 - self.y0, d01)
        out = out.add(self.f0, alpha=3 * th * th - 4 * th + 1)
        return out.add(self.f1, alpha=3 * th * th - 2 * th)

    def detached(self) -> HermiteInterpolant:
        precise = self.precise.detached() if self.precise is not None else None
        return HermiteInterpolant(self.t, self.dt, *(x.detach().clone() for x in
                                                     (self.y0, self.y1, self.f0, self.f1)),
                                  precise)


class LinearInterpolant(Interpolant):
    """``y0 + θ (y1 - y0)``: the fixed-grid methods' ``interp="linear"``."""

    __slots__ = ("t", "dt", "y0", "y1")

    def __init__(self, t: float, dt: float, y0: Tensor, y1: Tensor):
        self.t, self.dt, self.y0, self.y1 = t, dt, y0, y1

    def evaluate(self, theta: float) -> Tensor:
        return linear(self.y0, self.y1, theta)

    def derivative(self, theta: float) -> Tensor:
        return (self.y1 - self.y0) / self.dt

    def detached(self) -> LinearInterpolant:
        return LinearInterpolant(self.t, self.dt, self.y0.detach().clone(),
                                 self.y1.detach().clone())
