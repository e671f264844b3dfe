"""Rosenbrock (linearly implicit) stepper: one Jacobian and one LU per step, no Newton loop.

Each step solves ``s`` linear systems with the same matrix ``M = I - hγ J``
(:mod:`odeflow.solvers.rosenbrock_tableaus` gives the scheme). What is computed when:

* the Jacobian ``J = ∂f/∂y`` and ``∂f/∂t`` are evaluated once per step *start*: a rejected
  attempt is retried from the same ``(t, y)`` with the same ``J`` (kept in the solver
  state's cache), so a rejection costs one new LU and the stages, as in Hairer & Wanner's
  RODAS;
* ``M`` is factorised once per attempt and its factors serve all ``s`` stages.

The method is exact only with the exact ``J`` (it is not a W-method), so under autograd
``J`` keeps its graph and backpropagation through the linear solves is the exact gradient of
the discrete solution.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..interp import GRAPH_SUM_MIN, Interpolant, Workspace, addmv_sum, graph_sum, workspace
from ..linalg import ImplicitCounts, check_solver_dtype
from .base import Func, StepResult
from .rosenbrock_tableaus import RosenbrockTableau

__all__ = ["Rosenbrock", "RosenbrockState", "RosenbrockInterpolant", "Workspace"]


class Coefficients(NamedTuple):
    """The tableau's vectors as tensors of one dtype and device (``None``: a zero row)."""

    a: tuple[Tensor | None, ...]
    C: tuple[Tensor | None, ...]
    m: Tensor
    H: Tensor  # (r, s) dense output rows
    c: Tensor  # the nodes as a float64 (s, 1) column (stage times are float64)


@dataclass
class RosenbrockState:
    """Per-solve state: the counters, and the Jacobian of the current step start."""

    counts: ImplicitCounts = field(default_factory=ImplicitCounts)
    jac_t: float | None = None  # the time the cached Jacobian belongs to
    jac_y: Tensor | None = None  # ... and the state (identity, not value, is compared)
    jac: Any = None
    f_t: Tensor | None = None
    #: the fused path's buffers when the loop runs with grad enabled but nothing in this
    #: solve requires grad (a plain ``solve`` call): made on first use
    ws: Any = None


class Rosenbrock:
    """Stepper for a :class:`~odeflow.solvers.rosenbrock_tableaus.RosenbrockTableau`.

    Follows :class:`~odeflow.solvers.base.Stepper`. ``stages`` of a step are
    ``(f0, u_1, ..., u_s)``: the start derivative, then the stage increments the dense
    output combines.

    Args:
        tableau: the method's coefficients.
        linear_solver: a :class:`~odeflow.linalg.LinearSolver` (dense LU or Krylov).
        autonomous: ``func`` does not depend on ``t``: skip ``∂f/∂t``.
    """

    #: takes one step size per lane (a per-sample batch)
    per_sample = True

    steps_to_outputs = False
    needs_f_end_for_dense = False
    implicit = True

    def __init__(self, tableau: RosenbrockTableau, linear_solver: Any, *,
                 autonomous: bool = False):
        self.tableau = tableau
        self.linear_solver = linear_solver
        self.autonomous = autonomous
        self.order = tableau.order
        self.error_order = tableau.error_order
        self._s = tableau.stages
        self._coef: dict[tuple, Coefficients] = {}

    def workspace(self, y0: Tensor) -> Workspace:
        """Buffers of the no-autograd path: every stage sum is one ``addmv`` over them."""
        return workspace(y0, self._s)

    def _coefficients(self, y: Tensor) -> Coefficients:
        """The tableau's vectors in ``y``'s dtype and device (made once per pair)."""
        key = (y.dtype, y.device)
        coef = self._coef.get(key)
        if coef is None:
            tab = self.tableau
            vec = functools.partial(torch.tensor, dtype=y.dtype, device=y.device)
            coef = self._coef[key] = Coefficients(
                tuple(vec(r) if r else None for r in tab.a),
                tuple(vec(r) if any(r) else None for r in tab.C), vec(tab.m),
                vec([list(r) for r in tab.H if any(r)]),
                torch.tensor(tab.c, dtype=torch.float64, device=y.device)[:, None])
        return coef

    def init(self, y0: Tensor) -> RosenbrockState:
        check_solver_dtype(self.tableau.name, y0.dtype)
        return RosenbrockState()

    def _jacobian(self, f: Func, t: Any, y: Tensor, f0: Tensor,
                  state: RosenbrockState) -> tuple:
        """``(J, ∂f/∂t)`` at the step start; a joint retry from the same ``(t, y)`` reuses
        them (per sample the batch moves every iteration: always fresh)."""
        lanes = isinstance(t, Tensor)
        if not lanes and state.jac is not None and state.jac_t == t and state.jac_y is y:
            return state.jac, state.f_t
        # J needs a graph exactly when f(t, y) has one (y or parameters require grad).
        graph = torch.is_grad_enabled() and f0.requires_grad
        jac, f_t = self.linear_solver.jacobian(f, t, y, state.counts,
                                               with_time=not self.autonomous, graph=graph)
        state.jac = jac  # per sample read by method="auto" (its switch-back test)
        if not lanes:
            state.jac_t, state.jac_y, state.f_t = t, y, f_t
        return jac, f_t

    def step(self, f: Func, t: Any, y: Tensor, f0: Tensor, dt: Any,
             state: RosenbrockState | None, ws: Workspace | None, *, with_error: bool = True,
             f_last: Func | None = None, fsal_stage: bool = True) -> StepResult:
        """One attempt from ``(t, y)`` with step ``dt`` (see the module docstring): joint
        (``dt`` a float) or per sample (``dt`` ``(B,)``, ``(B, n, n)`` Jacobians and LU
        factors, every lane its own ``hγ``). Stage sums: :meth:`_stages`.
        """
        if state is None:  # a replayed step (checkpointing): a fresh Jacobian
            state = RosenbrockState()
        tab = self.tableau
        lanes = isinstance(dt, Tensor)
        jac, f_t = self._jacobian(f, t, y, f0, state)
        if not isinstance(jac, Tensor) and torch.is_grad_enabled() and f0.requires_grad:
            # GMRES runs outside autograd: backpropagating through it would silently drop
            # every path through the linear solves.
            raise ValueError(
                f"method={tab.name!r} with options['linear_solver']='krylov' cannot be "
                "differentiated step by step (gradient='direct' or 'checkpoint'); use "
                "gradient='adjoint', or the dense linear solver")
        h = dt.to(y.dtype) if lanes else dt
        h_gamma = h * tab.gamma
        factor = self.linear_solver.factor(jac, h_gamma, state.counts)
        if not lanes and ws is None and not (f0.requires_grad or y.requires_grad):
            # Grad mode is on but f(t, y) has no graph: no tensor of this step will need
            # one, so the buffered path is safe.
            if state.ws is None:
                state.ws = self.workspace(y)
            ws = state.ws
        us, y_new = self._stages(f, f_last, t, y, f0, f_t, dt, h, h_gamma, factor, ws)
        error = us[-1].detach().clone() if with_error else None
        return StepResult(y_new, error, (f0, *us), state, True)

    def _stages(self, f, f_last, t, y, f0, f_t, dt, h, h_gamma, factor, ws
                ) -> tuple[list[Tensor], Tensor]:
        """The increments ``u_i`` and ``y_new`` of a step, one lane or per sample.

        Each stage sum is one ``addmv`` over ``ws.prefix`` (per sample, an ``mv`` scaled
        lane by lane where the scale is ``1/h``); under autograd (``ws`` None) the same
        kernel through :func:`~odeflow.interp.graph_sum` (over a per-step buffer of detached
        copies for a large joint state), so that both give the same values bit for bit:
        a checkpointed step replays its forward exactly. Each right-hand side is scaled by
        ``hγ`` before its solve (per sample, its solution after). Under autograd a lane with
        ``dt = 0`` stays at ``y`` (its increments are masked to zero, so no nan enters the
        graph); without one the loop discards such a lane's result.
        """
        tab, coef, s = self.tableau, self._coefficients(y), self._s
        lanes, graph = isinstance(dt, Tensor), ws is None
        us: list[Tensor] = []
        if lanes:
            h, h_gamma = h[:, None], h_gamma[:, None]
            zero = h == 0
            inv_h = torch.where(zero, 0.0, torch.where(zero, 1.0, h).reciprocal())
            inv_h = inv_h.expand_as(y).contiguous()  # (B, n): see addmv_sum
            times = (t + coef.c * dt).unbind(0)
            # Per sample the scale 1/h is a tensor, which graph_sum's own node cannot
            # differentiate: under autograd the stages are stacked for each sum.
            buf = ws
        else:
            inv_h = 1.0 / dt
            times = [t + ci * dt for ci in tab.c]
            buf = ws if not graph else self.workspace(y) if y.numel() >= GRAPH_SUM_MIN else None

        def stage_sum(base: Tensor, i: int, w: Tensor, weights: Sequence[float],
                      scale: Any = 1.0) -> Tensor:
            """``base + scale Σ_j w_j u_j`` over the first ``i`` increments."""
            columns = None if buf is None else buf.prefix[i]
            if graph:
                return graph_sum(addmv_sum, base, columns, w, scale, weights, us)
            return addmv_sum(base, columns, w, scale)

        for i in range(s):
            if i == 0:
                rhs = f0
            else:
                fi = f_last if (f_last is not None and tab.c[i] == 1.0) else f
                rhs = fi(times[i], stage_sum(y, i, coef.a[i], tab.a[i]))
            if coef.C[i] is not None:
                rhs = stage_sum(rhs, i, coef.C[i], tab.C[i], inv_h)
            if f_t is not None and tab.d[i] != 0.0:
                rhs = rhs + (h * tab.d[i]) * f_t if lanes else torch.add(rhs, f_t,
                                                                        alpha=dt * tab.d[i])
            if lanes and graph:
                us.append(torch.where(zero, 0.0, factor.solve(rhs) * h_gamma))
            elif lanes:
                us.append(torch.mul(factor.solve(rhs), h_gamma, out=buf.rows[i]))
            else:
                u = factor.solve(rhs * h_gamma)
                if buf is not None:
                    buf.rows[i].copy_(u.detach())
                us.append(u if graph else buf.rows[i])
        return us, stage_sum(y, s, coef.m, tab.m)

    def f_end(self, f: Func, t_new: float, y_new: Tensor, result: StepResult) -> Tensor:
        return f(t_new, y_new)

    def interpolant(self, t: float, dt: float, y: Tensor, y_new: Tensor,
                    stages: Sequence[Tensor], f_new: Tensor | None,
                    f: Func | None = None) -> Interpolant:
        return RosenbrockInterpolant(t, dt, y, y_new, self._dense_terms(y, stages[1:], None))

    def interpolate(self, y: Tensor, y_new: Tensor, dt: float, stages: Sequence[Tensor],
                    f_new: Tensor | None, theta: float, ws: Any) -> Tensor:
        terms = self._dense_terms(y, stages[1:], ws)
        return RosenbrockInterpolant(0.0, dt, y, y_new, terms).evaluate(theta)

    def _dense_terms(self, y: Tensor, us: Sequence[Tensor], ws: Workspace | None
                     ) -> tuple[Tensor, ...]:
        """The interpolant's ``k_r``: one matrix product, over ``ws``'s buffer (which holds
        the increments ``us`` of a step without autograd) or the increments stacked."""
        U = ws.prefix[-1].T if ws is not None else torch.stack(tuple(us)).view(len(us), -1)
        return tuple(k.view_as(y) for k in (self._coefficients(y).H @ U).unbind(0))


class RosenbrockInterpolant(Interpolant):
    """``y(θ) = (1-θ) y0 + θ y1 + θ(1-θ)(k_1 + θ k_2 + θ² k_3)`` (the methods' own dense
    output; ``terms`` are the ``k_r``)."""

    __slots__ = ("t", "dt", "y0", "y1", "terms")

    def __init__(self, t: float, dt: Any, y0: Tensor, y1: Tensor, terms: Sequence[Tensor]):
        self.t, self.dt, self.y0, self.y1, self.terms = t, dt, y0, y1, tuple(terms)

    def evaluate(self, theta: Any) -> Tensor:
        th = theta.to(self.y0.dtype)[..., None] if isinstance(theta, Tensor) else theta
        poly = self.terms[-1]
        for k in reversed(self.terms[:-1]):  # Horner: k1 + θ(k2 + θ k3)
            poly = k + th * poly
        out = torch.lerp(self.y0, self.y1, th) if not isinstance(th, Tensor) else (
            self.y0 + th * (self.y1 - self.y0))
        return out + (th * (1 - th)) * poly

    def derivative(self, theta: Any) -> Tensor:
        th = theta.to(self.y0.dtype).reshape(-1, 1) if isinstance(theta, Tensor) else theta
        h = self.dt.to(self.y0.dtype).reshape(-1, 1) if isinstance(self.dt, Tensor) else self.dt
        poly, dpoly = self.terms[-1], torch.zeros_like(self.terms[-1])
        for k in reversed(self.terms[:-1]):
            dpoly = poly + th * dpoly
            poly = k + th * poly
        out = self.y1 - self.y0 + (1 - 2 * th) * poly + (th * (1 - th)) * dpoly
        return out / h

    def detached(self) -> RosenbrockInterpolant:
        y0, y1, *terms = (x.detach().clone() for x in (self.y0, self.y1, *self.terms))
        return RosenbrockInterpolant(self.t, self.dt, y0, y1, terms)
