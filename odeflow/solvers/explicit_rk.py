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

Per sample (one step size per lane) a stage input is one ``mv`` and an ``addcmul``.

The error estimate needs no gradient and is computed without building a graph.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..interp import (
    GRAPH_SUM_MIN,
    HermiteInterpolant,
    Interpolant,
    TableauInterpolant,
    Workspace,
    add_mv_sum,
    addmv_sum,
    graph_sum,
    hermite,
    workspace,
)
from ..tableaus import ButcherTableau
from .base import NO_CONTEXT, Func, StepResult

__all__ = ["ExplicitRK", "Workspace"]


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
        self._cache: dict[tuple, Any] = {}

    # ----------------------------------------------------------------------------- setup
    def workspace(self, y0: Tensor) -> Workspace:
        """Buffers for the fused (no-autograd) path of one solve."""
        return workspace(y0, self.stages)

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

    def step(self, f: Func, t: Any, y: Tensor, f0: Tensor, dt: Any, state: None,
             ws: Workspace | None, *, with_error: bool = True, f_last: Func | None = None,
             fsal_stage: bool = True) -> StepResult:
        """One attempt from ``(t, y)`` with step ``dt`` (the contract of
        :class:`~odeflow.solvers.base.Stepper`): joint (``dt`` a float) or per sample
        (``y`` ``(B, n)``, ``dt`` ``(B,)``).

        Per sample, under autograd a lane that does not step (``dt = 0``) stays exactly at
        ``y``, also where its stages are not finite: no nan enters the graph through
        ``0 * inf``. Without a graph the loop discards such a lane's result anyway, so the
        masking (one ``where`` per stage) is skipped.

        Args:
            f: the counted derivative ``f(t, y)`` in canonical form.
            t, y, f0: start of the step and ``f(t, y)``.
            dt: step size (positive), or one per lane.
            state: unused (``None``).
            ws: the fused path's workspace, or ``None`` for the autograd path.
            with_error: compute the embedded error estimate.
            f_last: evaluates stages with ``c == 1`` instead of ``f`` (fixed grid ``perturb``).
            fsal_stage: evaluate the FSAL stage; without an error estimate or dense output
                it is not needed for ``y_new`` (the checkpointed backward of a joint solve
                skips it).
        """
        a_rows, b, b_err, c_column = self.coefficients(y.dtype, y.device)
        tab, c, s = self.tableau, self.tableau.c, self.stages
        lanes, graph = isinstance(dt, Tensor), ws is None
        # Under autograd the stages must not go into a reused buffer; a large joint state's
        # stages also go, detached, into a per-step one (see graph_sum).
        buf = ws if not graph else (
            self.workspace(y) if not lanes and y.numel() >= GRAPH_SUM_MIN else None)
        ks = [f0] if graph else ws.rows
        if buf is not None and f0 is not buf.rows[0]:
            buf.rows[0].copy_(f0.detach() if graph else f0)

        def columns(i: int) -> Tensor:  # the first i stages as the columns of an (N, i)
            return buf.prefix[i] if buf is not None else torch.stack(ks[:i]).reshape(i, -1).T

        if lanes:
            h = torch.empty_like(y).copy_(dt[:, None])  # (B, n): see addmv_sum
            # Every stage time at once, t + c_i dt (the same roundings as stage by stage); t
            # added in place to the (s, B) product is several times faster than t + c dt.
            times = (c_column * dt).add_(t).unbind(0)
            still = (h == 0) if torch.is_grad_enabled() else None

            def stage_sum(i: int, w: Tensor, weights: Sequence[float]) -> Tensor:
                out = addmv_sum(y, columns(i), w, h)
                return out if still is None else torch.where(still, y, out)
        else:
            fuse = addmv_sum if y.dtype == torch.float64 else add_mv_sum

            def stage_sum(i: int, w: Tensor, weights: Sequence[float]) -> Tensor:
                if not graph:
                    return fuse(y, buf.prefix[i], w, dt)
                return graph_sum(fuse, y, None if buf is None else buf.prefix[i], w, dt,
                                 weights, ks)

        # (per sample the FSAL stage is always evaluated: the replay's counts stay as they were)
        skip_last = self.fsal and not fsal_stage and not with_error and graph and not lanes
        y_i = y
        for i in range(1, s):
            y_i = stage_sum(i, a_rows[i], tab.a[i])
            if skip_last and i == s - 1:
                break  # y_i is y_new; its derivative is not needed
            fi = f_last if (f_last is not None and c[i] == 1.0) else f
            k_i = fi(times[i] if lanes else t + c[i] * dt, y_i)
            if graph:
                ks.append(k_i)
            if buf is not None:
                buf.rows[i].copy_(k_i.detach() if graph else k_i)
        y_new = y_i if self.fsal else stage_sum(s, b, tab.b)
        err = None
        if with_error and b_err is not None:
            with torch.no_grad() if graph else NO_CONTEXT:
                if lanes:
                    err = h * torch.mv(columns(s), b_err).view_as(y)
                else:  # beta=0: the input only fixes the shape; out = dt * K^T b_err
                    err = torch.addmv(y, columns(s), b_err, beta=0.0, alpha=dt)
        return StepResult(y_new, err, ks)

    # ----------------------------------------------------------------------- dense output
    def f_end(self, f: Func, t_new: float, y_new: Tensor, result: StepResult) -> Tensor:
        """``f(t_new, y_new)``: the FSAL stage when there is one, else a new evaluation."""
        return result.stages[-1] if self.fsal else f(t_new, y_new)

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
        tab = self.tableau
        if tab.dense is None:
            return hermite(y, y_new, stages[0], f_new, dt, theta)
        if y.device.type == "cpu":  # (one lane: theta and dt are floats, see the contract)
            # One addmv over the stages as columns (the fused path's view, or the same values
            # stacked); on a GPU a weight tensor would be a host-to-device copy.
            stacked = ws.prefix[self.stages] if ws is not None else torch.stack(tuple(stages)).T
            w = torch.tensor(tab.dense_weights(theta), dtype=y.dtype, device=y.device)
            return torch.addmv(y, stacked, w, alpha=dt)
        return TableauInterpolant(0.0, dt, y, stages, tab).evaluate(theta)


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

