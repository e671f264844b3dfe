"""One stepper for every explicit Runge–Kutta method: a Butcher tableau drives it.

The stepper never loops over steps (``integrate.py`` does) and holds configuration only;
per-solve scratch buffers live in a :class:`Workspace` the loop passes back in.

Two ways to combine stages, chosen once per solve:

* **fused** (no autograd): stages are written into one preallocated ``(s, n)`` buffer and
  each stage input ``y + dt Σ_j a_ij k_j`` is a single ``addmv`` over a precomputed view —
  one kernel per stage, no allocation of intermediate sums.
* **autograd**: the same kernels, over the stages stacked anew for each sum, or for a
  large state over a per-step buffer of detached copies
  (:func:`~odeflow.interp.graph_sum`). Nothing is saved for backward beyond what
  ``func`` itself saves, and both paths give the same values bit for bit (direct and
  adjoint forwards agree).

The error estimate needs no gradient and is computed without building a graph.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..interp import (
    GRAPH_SUM_MIN,
    HermiteInterpolant,
    Interpolant,
    TableauInterpolant,
    add_mv_sum,
    addmv_sum,
    graph_sum,
    hermite,
)
from ..tableaus import ButcherTableau
from .base import Func, StepResult

__all__ = ["ExplicitRK", "Workspace"]


class Workspace(NamedTuple):
    """Per-solve buffers of the fused path."""

    rows: tuple[Tensor, ...]  # the stage derivatives: rows of one (s, n) buffer
    prefix: tuple[Tensor, ...]  # prefix[i] = buffer[:i].T, shape (n, i)
    a_rows: tuple[Tensor | None, ...]  # a[i, :i] as tensors
    b: Tensor
    b_err: Tensor | None


class ExplicitRK:
    """Explicit Runge–Kutta stepper for a :class:`~odeflow.tableaus.ButcherTableau`.

    Follows :class:`~odeflow.solvers.base.Stepper`; in addition, for FSAL tableaus
    ``stages[-1]`` is the derivative at ``(t + dt, y_new)``.
    """

    #: takes one step size per lane (a per-sample batch)
    per_sample = True

    def __init__(self, tableau: ButcherTableau):
        self.tableau = tableau
        self.order = tableau.order
        self.error_order = tableau.error_order
        self.fsal = tableau.fsal
        self.stages = tableau.stages  # the number of stages s
        # Without an interpolant of its own the dense output is cubic Hermite, which needs
        # f(t_new, y_new); it would throw away the accuracy of a method above order 4
        # (dopri8), so such a method steps to each output time instead.
        self.needs_f_end_for_dense = tableau.dense is None
        self.steps_to_outputs = tableau.dense is None and self.order > 4
        self._c = tableau.c
        self._cache: dict[tuple, Any] = {}

    # ----------------------------------------------------------------------------- setup
    def workspace(self, y0: Tensor) -> Workspace:
        """Buffers for the fused (no-autograd) path of one solve (any state shape: a joint
        ``(n,)`` or a per-sample ``(B, n)``; the stages are the rows of one ``(s, N)``)."""
        s, n = self.stages, y0.numel()
        buffer = y0.new_empty((s, n))
        rows = buffer.unbind(0)
        if y0.dim() != 1:
            rows = tuple(r.view(y0.shape) for r in rows)
        columns = buffer.T
        prefix = tuple(columns[:, :i] for i in range(s + 1))
        a_rows, b, b_err, _ = self.coefficients(y0.dtype, y0.device)
        return Workspace(rows, prefix, a_rows, b, b_err)

    def coefficients(self, dtype: torch.dtype, device: torch.device) -> tuple:
        """``(a_rows, b, b_err, c)`` as tensors of ``dtype`` on ``device`` (cached); ``c``
        is a float64 ``(s, 1)`` column (stage times are computed in float64)."""
        key = (dtype, device)
        if key not in self._cache:
            tab = self.tableau
            vec = functools.partial(torch.tensor, dtype=dtype, device=device)
            a_rows = tuple(vec(row) if row else None for row in tab.a)
            b_err = vec(tab.b_err) if tab.b_err is not None else None
            c = torch.tensor(tab.c, dtype=torch.float64, device=device)[:, None]
            self._cache[key] = (a_rows, vec(tab.b), b_err, c)
        return self._cache[key]

    # ------------------------------------------------------------------------------ step
    def init(self, y0: Tensor) -> None:
        """An explicit Runge–Kutta method carries no state beyond ``f0`` (the loop's)."""
        return None

    def step(self, f: Func, t: float, y: Tensor, f0: Tensor, dt: float, state: None,
             ws: Workspace | None, *, with_error: bool = True, f_last: Func | None = None,
             fsal_stage: bool = True) -> StepResult:
        """One attempt from ``(t, y)`` with step ``dt`` (the contract of
        :class:`~odeflow.solvers.base.Stepper`).

        Args:
            f: the counted derivative ``f(t, y)`` in canonical form.
            t, y, f0: start of the step and ``f(t, y)``.
            dt: step size (positive).
            state: unused (``None``).
            ws: the fused path's workspace, or ``None`` for the autograd path.
            with_error: compute the embedded error estimate.
            f_last: evaluates stages with ``c == 1`` instead of ``f`` (fixed grid ``perturb``).
            fsal_stage: evaluate the FSAL stage; without an error estimate or dense output
                it is not needed for ``y_new`` (the checkpointed backward skips it).
        """
        if isinstance(dt, Tensor):  # per sample: one step size per lane
            return self._step_lanes(f, t, y, f0, dt, ws, with_error, f_last)
        if ws is None:
            skip_last = self.fsal and not fsal_stage and not with_error
            return self._step_autograd(f, t, y, f0, dt, with_error, f_last, skip_last)
        return self._step_fused(f, t, y, f0, dt, ws, with_error, f_last)

    def _step_fused(self, f, t, y, f0, dt, ws, with_error, f_last):
        rows, prefix, a_rows, c = ws.rows, ws.prefix, ws.a_rows, self._c
        if f0 is not rows[0]:
            rows[0].copy_(f0)
        combine = addmv_sum if y.dtype == torch.float64 else add_mv_sum
        y_i = y
        for i in range(1, self.stages):
            y_i = combine(y, prefix[i], a_rows[i], dt)
            fi = f_last if (f_last is not None and c[i] == 1.0) else f
            rows[i].copy_(fi(t + c[i] * dt, y_i))
        y_new = y_i if self.fsal else combine(y, prefix[self.stages], ws.b, dt)
        err = None
        if with_error and ws.b_err is not None:
            # beta=0: the input only fixes the shape; out = dt * K^T b_err.
            err = torch.addmv(y, prefix[self.stages], ws.b_err, beta=0.0, alpha=dt)
        return StepResult(y_new, err, rows)

    def _step_autograd(self, f, t, y, f0, dt, with_error, f_last, skip_last):
        a_rows, b, b_err, _ = self.coefficients(y.dtype, y.device)
        combine = addmv_sum if y.dtype == torch.float64 else add_mv_sum
        tab, c = self.tableau, self._c
        # A large state's stages also go, detached, into a buffer (see graph_sum).
        K = y.new_empty((self.stages, y.numel())) if y.numel() >= GRAPH_SUM_MIN else None
        if K is not None:
            K[0] = f0.detach()
        ks = [f0]
        y_i = y
        last = self.stages - 1
        for i in range(1, self.stages):
            y_i = graph_sum(combine, y, None if K is None else K[:i].T, a_rows[i], dt,
                            tab.a[i], ks)
            if skip_last and i == last:
                break  # y_i is y_new; its derivative is not needed
            fi = f_last if (f_last is not None and c[i] == 1.0) else f
            ks.append(fi(t + c[i] * dt, y_i))
            if K is not None:
                K[i] = ks[i].detach()
        y_new = y_i if self.fsal else graph_sum(combine, y, None if K is None else K.T, b,
                                                 dt, tab.b, ks)
        err = None
        if with_error and b_err is not None:
            with torch.no_grad():
                columns = torch.stack(ks).T if K is None else K.T
                err = torch.addmv(y, columns, b_err, beta=0.0, alpha=dt)
        return StepResult(y_new, err, ks)

    def _step_lanes(self, f, t, y, f0, dt, ws, with_error, f_last):
        """One attempt per lane of a ``(B, n)`` state with step sizes ``dt`` ``(B,)``.

        Under autograd a lane that does not step (``dt = 0``) stays exactly at ``y``, also
        where its stages are not finite: no nan enters the graph through ``0 * inf``.
        Without a graph the loop discards such a lane's result anyway, so the masking (one
        ``where`` per stage) is skipped.
        """
        a_rows, b, b_err, c_column = self.coefficients(y.dtype, y.device)
        c = self._c
        # (B, n), not (B, 1): an addcmul that broadcasts a column over few state columns
        # is several times slower than one copy and same-shaped operands
        h = torch.empty_like(y).copy_(dt[:, None])
        # Every stage time at once, t + c_i dt (the same roundings as stage by stage); t
        # added in place to the (s, B) product is several times faster than t + c dt.
        times = (c_column * dt).add_(t).unbind(0)
        still = (h == 0) if torch.is_grad_enabled() else None
        # Under autograd the stages must not go into a reused buffer.
        ks = [f0] if ws is None else ws.rows
        if ws is not None and f0 is not ks[0]:
            ks[0].copy_(f0)

        def stage_sum(i: int, w: Tensor) -> Tensor:
            k_t = torch.stack(ks[:i]).reshape(i, -1).T if ws is None else ws.prefix[i]
            return torch.mv(k_t, w).view_as(y)

        def advance(w: Tensor, i: int) -> Tensor:
            out = torch.addcmul(y, h, stage_sum(i, w))
            return out if still is None else torch.where(still, y, out)

        y_i = y
        for i in range(1, self.stages):
            y_i = advance(a_rows[i], i)
            fi = f_last if (f_last is not None and c[i] == 1.0) else f
            k_i = fi(times[i], y_i)
            if ws is None:
                ks.append(k_i)
            else:
                ks[i].copy_(k_i)
        s = self.stages
        y_new = y_i if self.fsal else advance(b, s)
        err = None
        if with_error and b_err is not None:
            with torch.no_grad():
                err = h * stage_sum(s, b_err)
        return StepResult(y_new, err, ks)

    # ----------------------------------------------------------------------- dense output
    def f_end(self, f: Func, t_new: float, y_new: Tensor, result: StepResult) -> Tensor:
        """``f(t_new, y_new)``: the FSAL stage when there is one, else a new evaluation."""
        if self.fsal:
            return result.stages[-1]
        return f(t_new, y_new)

    def interpolant(self, t: float, dt: float, y: Tensor, y_new: Tensor,
                    stages: Sequence[Tensor], f_new: Tensor | None,
                    f: Func | None = None) -> Interpolant:
        """The step's dense output as an object (events, ``odeint_dense``).

        ``stages`` may be views of the workspace, valid until the next step: call
        ``.detached()`` on the result to keep it longer. With ``f``, a method without an
        interpolant of its own order (dopri8) also offers a re-stepping ``precise`` one.
        """
        tab = self.tableau
        if tab.dense is None:
            if f_new is None:
                raise ValueError("a cubic Hermite interpolant needs f at the step's end")
            precise = ReStepInterpolant(self, f, t, dt, y, stages[0]) if (
                f is not None and self.steps_to_outputs) else None
            return HermiteInterpolant(t, dt, y, y_new, stages[0], f_new, precise)
        return TableauInterpolant(t, dt, y, stages, tab)

    def interpolate(self, y: Tensor, y_new: Tensor, dt: float, stages: Sequence[Tensor],
                    f_new: Tensor | None, theta: float, ws: Workspace | None) -> Tensor:
        """The solution at ``t + theta * dt`` from the method's dense output."""
        if self.tableau.dense is None:
            return hermite(y, y_new, stages[0], f_new, dt, theta)
        if ws is not None:
            stacked = ws.prefix[self.stages]
        else:  # as the fused path has them (the same addmv; unused per lane)
            stacked = None if isinstance(dt, Tensor) else torch.stack(tuple(stages)).T
        return TableauInterpolant(0.0, dt, y, stages, self.tableau, stacked).evaluate(theta)


class ReStepInterpolant(Interpolant):
    """Dense output by re-stepping: ``y(t + θ dt)`` is one step of size ``θ dt`` from the
    step's start, so it has the method's own order (dopri8 has no interpolant of its order).

    Each call costs one step's evaluations; event location uses it only to refine a root
    already bracketed on the cheap Hermite interpolant.
    """

    def __init__(self, stepper: ExplicitRK, f: Func, t: float, dt: float, y: Tensor,
                 f0: Tensor):
        self.stepper, self.f, self.t, self.dt, self.y, self.f0 = stepper, f, t, dt, y, f0

    def evaluate(self, theta: float) -> Tensor:
        if not isinstance(theta, Tensor) and theta == 0.0:
            return self.y
        return self.stepper.step(self.f, self.t, self.y, self.f0, theta * self.dt, None, None,
                                 with_error=False).y_new

    def derivative(self, theta: float) -> Tensor:
        return self.f(self.t + theta * self.dt, self.evaluate(theta))

    def detached(self) -> ReStepInterpolant:
        return ReStepInterpolant(self.stepper, self.f, self.t, self.dt, self.y.detach().clone(),
                                 self.f0.detach().clone())

