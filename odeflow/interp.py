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
The stage sums and the stage buffer (:class:`Workspace`) that steppers and interpolants
share live here too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = ["Workspace", "workspace", "combine", "addmv_sum", "add_mv_sum", "graph_sum",
           "GRAPH_SUM_MIN", "nonzero", "hermite", "linear", "Interpolant", "TableauInterpolant",
           "HermiteInterpolant", "LinearInterpolant"]


def hermite(y0: Tensor, y1: Tensor, f0: Tensor, f1: Tensor, dt: float, theta: float) -> Tensor:
    """Cubic Hermite interpolant on a step from its end values and derivatives.

    Third order: the error is O(dt^4) on each step. Built with ops that save nothing for
    backward, so it is cheap under autograd too.
    """
    t2 = theta * theta
    t3 = t2 * theta
    out = torch.add(y0, y1 - y0, alpha=-2 * t3 + 3 * t2)  # the basis h01, h10, h11
    out.add_(f0, alpha=dt * (t3 - 2 * t2 + theta))
    out.add_(f1, alpha=dt * (t3 - t2))
    return out


def nonzero(values: Sequence[float]) -> tuple[tuple[int, float], ...]:
    """``(j, w_j)`` for the nonzero weights ``w_j``: the terms :func:`combine` sums."""
    return tuple((j, v) for j, v in enumerate(values) if v != 0)


def combine(y: Tensor | None, ks: Sequence[Tensor], nz: Sequence[tuple[int, float]],
            dt: float) -> Tensor:
    """``y + dt Σ_j w_j k_j`` (``y`` may be ``None``) with ops that save nothing for backward.

    In float64 each term goes into ``y`` in turn; in lower precisions the stage sum is
    formed first so that ``y`` is rounded once (the choice ``explicit_rk`` makes too).
    """
    if not nz:
        return y if y is not None else torch.zeros_like(ks[0])
    j0, w0 = nz[0]
    if y is not None and y.dtype == torch.float64:
        out = torch.add(y, ks[j0], alpha=w0 * dt)
        for j, w in nz[1:]:
            out.add_(ks[j], alpha=w * dt)
        return out
    acc = ks[j0] * w0
    for j, w in nz[1:]:
        acc.add_(ks[j], alpha=w)
    return acc * dt if y is None else torch.add(y, acc, alpha=dt)


class Workspace(NamedTuple):
    """A solve's stage buffer (a stepper's fused path): the stages are the ``rows`` of one
    ``(s, N)`` matrix, each viewed in the state's shape, and ``prefix[i]`` is its first
    ``i`` rows as the columns of an ``(N, i)`` view, over which a stage sum is one ``addmv``."""

    rows: tuple[Tensor, ...]
    prefix: tuple[Tensor, ...]


def workspace(y0: Tensor, stages: int) -> Workspace:
    """A :class:`Workspace` of ``stages`` rows for states shaped like ``y0`` (any shape)."""
    buffer = y0.new_empty((stages, y0.numel()))
    rows = tuple(r.view(y0.shape) for r in buffer.unbind(0))
    return Workspace(rows, tuple(buffer.T[:, :i] for i in range(stages + 1)))


def addmv_sum(y: Tensor, k_t: Tensor, w: Tensor, dt: Any) -> Tensor:
    """``y + dt K^T w`` in one kernel. BLAS accumulates each stage's term straight into
    ``y``, one rounding at ``|y|``'s scale per stage: negligible in float64 only.

    Per sample ``y`` is ``(B, n)`` (``K`` its ``(B n, i)`` buffer) and ``dt`` a float or
    the lanes' scales, a ``(B, n)`` tensor (then the sum is formed first and scaled lane by
    lane: an ``addcmul`` that broadcasts a ``(B, 1)`` column over few state columns is
    several times slower than one copy to ``(B, n)`` per step and same-shaped operands)."""
    if y.dim() == 1:
        return torch.addmv(y, k_t, w, alpha=dt)
    if isinstance(dt, Tensor):
        return torch.addcmul(y, dt, torch.mv(k_t, w).view_as(y))
    return torch.addmv(y.view(-1), k_t, w, alpha=dt).view_as(y)


def add_mv_sum(y: Tensor, k_t: Tensor, w: Tensor, dt: float) -> Tensor:
    """``y + dt K^T w`` with the stage sum formed first, so that ``y`` is rounded once per
    step (in float32 the fused form drifts several times faster over many steps)."""
    return torch.add(y, torch.mv(k_t, w), alpha=dt)


class _GraphSum(torch.autograd.Function):
    """``fuse``'s value with the graph of ``base + Σ_j coefs[j] stages[j]``."""

    @staticmethod
    def forward(ctx: Any, fuse: Callable, base: Tensor, columns: Tensor, w: Tensor,
                scale: float, coefs: Sequence[float], *stages: Tensor) -> Tensor:
        ctx.coefs, ctx.stage_shape = coefs, stages[0].shape
        return fuse(base, columns, w, scale)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple:
        stage_grad = grad.reshape(ctx.stage_shape)  # (a kernel may return the sum flat)
        stage_grads = (None if c == 0 else stage_grad * c for c in ctx.coefs)
        base_grad = grad if ctx.needs_input_grad[1] else None
        return (None, base_grad, None, None, None, None, *stage_grads)


#: From this many state elements on, a stage sum under autograd reads a per-step buffer of
#: detached stage copies (:func:`graph_sum`); below it the stages are stacked for each sum,
#: whose copies cost less than the Python-level autograd node (~10 µs a call).
GRAPH_SUM_MIN = 1 << 16


def graph_sum(fuse: Callable[[Any, Tensor, Tensor, float], Tensor], base: Tensor | None,
              columns: Tensor | None, w: Tensor, scale: float, weights: Sequence[float],
              stages: Sequence[Tensor]) -> Tensor:
    """A stage sum under autograd with the value of the no-graph kernel
    ``fuse(base, columns, w, scale)``, bit for bit, and the gradient of
    ``base + scale Σ_j weights[j] stages[j]``.

    ``columns`` holds detached copies of ``stages`` (a buffer the stepper fills once per
    step); ``None`` stacks the stages here, and the kernel's own autograd applies (it saves
    only ``w``). With a buffer nothing is saved for backward, and the ``O(s²)`` state
    copies of stacking anew for each sum (and as many in the backward pass) are avoided.
    """
    if columns is None:
        return fuse(base, torch.stack(tuple(stages[:len(weights)])).view(len(weights), -1).T,
                    w, scale)
    coefs = tuple(scale * wj for wj in weights)
    return _GraphSum.apply(fuse, base, columns, w, scale, coefs, *stages[:len(coefs)])


def linear(y0: Tensor, y1: Tensor, theta: float) -> Tensor:
    """Linear interpolation ``y0 + theta (y1 - y0)``."""
    return torch.lerp(y0, y1, theta)


class Interpolant:
    """The dense output of one step from canonical time ``t`` to ``t + dt``.

    Implementer rules: ``evaluate(0)`` is the step's start state and ``evaluate(1)`` its end
    state; ``derivative(theta)`` is ``d/dt evaluate`` (per unit of time, not of theta);
    neither mutates the tensors it was built from, and both work under autograd. Per sample
    (state ``(B, n)``) ``evaluate`` takes ``theta`` ``(B,)`` or ``(P, B)`` (``P`` output
    times of each lane at once) and returns ``(B, n)`` or ``(P, B, n)``.
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
    """``y(t + θ dt) = y + dt Σ_i b_i(θ) k_i``: a Runge–Kutta method's own dense output.

    Batched use (per-sample mode): ``y`` and each stage ``(B, n)``, ``dt`` and ``theta``
    tensors ``(B,)``.
    """

    __slots__ = ("t", "dt", "y", "stages", "tableau")

    def __init__(self, t: Any, dt: Any, y: Tensor, stages: Sequence[Tensor], tableau: Any):
        self.t, self.dt, self.y, self.stages, self.tableau = t, dt, y, tuple(stages), tableau

    def _combine(self, weights: Any, base: Tensor | None, scale: Any) -> Tensor:
        if isinstance(weights, Tensor) or isinstance(scale, Tensor):
            # per sample: (s, B) weights (at a float θ: s floats) times (B,) step sizes
            dtype = self.y.dtype
            coefs = ((scale * weights).to(dtype) if isinstance(weights, Tensor)
                     else [(scale * w).to(dtype) for w in weights])
            out = torch.zeros_like(self.y) if base is None else base
            for k_i, c in zip(self.stages, coefs):
                out = out + c[..., None] * k_i
            return out
        out = combine(base, self.stages, nonzero(weights), scale)
        return out.clone() if out is base else out  # (all weights zero: never y itself)

    def evaluate(self, theta: Any) -> Tensor:
        return self._combine(self.tableau.dense_weights(theta), self.y, self.dt)

    def derivative(self, theta: Any) -> Tensor:
        return self._combine(self.tableau.dense_derivative_weights(theta), None, 1.0)

    def detached(self) -> TableauInterpolant:
        return TableauInterpolant(self.t, self.dt, self.y.detach().clone(),
                                  [k.detach().clone() for k in self.stages], self.tableau)


class HermiteInterpolant(Interpolant):
    """Cubic Hermite from ``(y0, f0)`` at the start and ``(y1, f1)`` at the end."""

    __slots__ = ("t", "dt", "y0", "y1", "f0", "f1", "precise")

    def __init__(self, t: float, dt: float, y0: Tensor, y1: Tensor, f0: Tensor, f1: Tensor,
                 precise: Interpolant | None = None):
        self.t, self.dt, self.y0, self.y1, self.f0, self.f1 = t, dt, y0, y1, f0, f1
        self.precise = precise

    def evaluate(self, theta: Any) -> Tensor:
        if isinstance(theta, Tensor) or isinstance(self.dt, Tensor):  # per lane (B,)
            th = theta[..., None].to(self.y0.dtype) if isinstance(theta, Tensor) else theta
            h = self.dt[:, None].to(self.y0.dtype) if isinstance(self.dt, Tensor) else self.dt
            return (self.y0 + (-2 * th**3 + 3 * th**2) * (self.y1 - self.y0)
                    + (th**3 - 2 * th**2 + th) * h * self.f0 + (th**3 - th**2) * h * self.f1)
        return hermite(self.y0, self.y1, self.f0, self.f1, self.dt, theta)

    def derivative(self, theta: Any) -> Tensor:
        th = theta[:, None].to(self.y0.dtype) if isinstance(theta, Tensor) else theta
        h = self.dt[:, None].to(self.y0.dtype) if isinstance(self.dt, Tensor) else self.dt
        return ((6 * th - 6 * th * th) / h * (self.y1 - self.y0)
                + (3 * th * th - 4 * th + 1) * self.f0 + (3 * th * th - 2 * th) * self.f1)

    def detached(self) -> HermiteInterpolant:
        precise = self.precise.detached() if self.precise is not None else None
        ends = (x.detach().clone() for x in (self.y0, self.y1, self.f0, self.f1))
        return HermiteInterpolant(self.t, self.dt, *ends, precise)


class LinearInterpolant(Interpolant):
    """``y0 + θ (y1 - y0)``: the fixed-grid methods' ``interp="linear"``."""

    __slots__ = ("t", "dt", "y0", "y1")

    def __init__(self, t: float, dt: float, y0: Tensor, y1: Tensor):
        self.t, self.dt, self.y0, self.y1 = t, dt, y0, y1

    def evaluate(self, theta: Any) -> Tensor:
        weight = theta.to(self.y0.dtype)[..., None] if isinstance(theta, Tensor) else theta
        return torch.lerp(self.y0, self.y1, weight)  # (per lane: theta (B,))

    def derivative(self, theta: Any) -> Tensor:
        h = self.dt.to(self.y0.dtype)[:, None] if isinstance(self.dt, Tensor) else self.dt
        return (self.y1 - self.y0) / h

    def detached(self) -> LinearInterpolant:
        return LinearInterpolant(self.t, self.dt, self.y0.detach().clone(),
                                 self.y1.detach().clone())
