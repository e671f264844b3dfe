"""One stepper for the ESDIRK methods (``kvaerno3``, ``kvaerno5``, ``trbdf2``).

An ESDIRK step from ``(t, y)`` with step ``h`` takes ``k_1 = f0`` (explicit first stage),
then for each implicit stage ``i = 2..s`` solves

    z_i = r_i + hγ f(t + c_i h, z_i),      r_i = y + h Σ_{j<i} a_ij k_j,

and sets ``k_i = (z_i − r_i) / (hγ)`` (the "z form": at the solution this is
``f(t + c_i h, z_i)``, but it needs no further evaluation of ``f`` and does not amplify the
Newton error by the stiffness). The methods are stiffly accurate, so ``y_new = z_s``
and ``k_s`` is the derivative at the step's end (the next step's ``f0``).

**Newton.** Each stage equation is solved by simplified Newton with one factorisation of
``M = I − hγ J`` (the linear solver's :class:`~odeflow.linalg.Factor`). Convergence is
monitored as in Hairer & Wanner, *Solving ODEs II*, §IV.8: with the rate
``θ = ‖Δ_m‖ / ‖Δ_{m−1}‖`` and ``η = θ / (1 − θ)``, the stage has converged when
``η ‖Δ_m‖ ≤ κ`` — only with a rate *measured* with this step's factor: from the second
iteration on, or at the first with the worst rate measured in the earlier stages of the same
step (``rate_hint``; same ``J``, same ``M``, and the rate of simplified Newton is mostly their
mismatch with ``f``, the largest measured one an upper estimate; a rate measured on updates at
the rounding floor is not counted). A rate guessed from an earlier *step* (RADAU5's
``η_old^0.8``) is never used: a stage then inherited a tiny guess and was accepted after a
single update of hundreds of tolerance units (van der Pol μ = 1000 ended 1640 tolerances
off). ``‖·‖`` is the RMS norm of the update scaled by
``atol + rtol |y|`` (so ``1`` is the solve's tolerance) and ``κ = newton_kappa``
(default ``1e-3``: the Newton error of the last stage is part of ``y_new``, has a sign that
persists from step to step and so adds up like local truncation error, and the measured
rate underestimates it; with ``1e-2`` van der Pol μ = 1000 ended 11 tolerances off against
0.1; raised to ``10 ε max |y| / scale`` when that is larger, so float32 and very tight
tolerances do not chase rounding noise). The iteration fails when ``θ ≥ 1``
(divergence), when a non-finite value appears, when the remaining iterations cannot reach
``κ`` at the current rate (``θ^(m_max − m) / (1 − θ) ‖Δ_m‖ > κ``), or after
``max_newton_iters`` iterations.

**Jacobian and factor reuse** (the state carries both; Hairer & Wanner's RADAU5 and
SciPy's ``Radau`` follow the same principle — ``J`` is expensive, ``M``'s LU cheaper,
Newton iterations cheapest):

1. ``J`` is reused across steps; it is recomputed (at the step's start) only
   (a) on the first step, (b) when a stage's Newton iteration failed while ``J`` was from
   an earlier point — then ``J`` is recomputed, ``M`` refactorised and the step retried
   once, and (c) at the start of the step after one whose worst contraction rate was above
   ``slow_rate`` (0.1: at 0.3 a stage needed 5–7 iterations; RADAU5 and SciPy refresh far
   more eagerly still, at rates above 1e-3).
2. ``M`` is refactorised when ``J`` changed or when ``hγ`` differs from the factorised one
   by more than ``refactor_ratio`` (10 %, not above ``slow_rate``, so that a stale ``hγ``
   alone never triggers a new ``J``): simplified Newton with a slightly wrong ``hγ``
   still converges (its rate on the stiffest components is about ``|1 − hγ / hγ_old|``),
   while a factorisation costs ``O(n³)``.
3. When Newton fails with a current ``J`` but a reused factor of another ``hγ``, ``M`` is
   refactorised exactly and the step retried. When it fails with a current ``J`` and an
   exact factor, the step returns ``ok=False`` (the loop rejects it and shrinks ``h``) and
   ``n_newton_failures`` is counted. Nothing raises.

The state is a mutable cache, updated in place *and* returned: a Jacobian computed during
an attempt that is rejected is still the best one at the same point, and the loop passes
the previous state back after a rejection.

**Predictors** (the Newton iteration's starting value ``z_i^0``; with ``r_i + hγ k_{i−1}``
the first update was 300–700 tolerances and a stage took 4.3 iterations): a stage at the node
of an earlier one starts from that stage's value; a stage whose node lies within one node
span of the earlier nodes extrapolates its derivative from the earlier stages of the step,
``k_i ≈ Σ_j w_j k_j`` with the smallest-norm weights exact for polynomials in ``c`` of degree
``n − 1`` (``n ≤ 3`` distinct nodes) or ``n − 2`` (more: the extra node damps the stages'
own ``O(h³)`` deviations); the others (stage 2; kvaerno5's stage 3 at ``c = 1.23``) evaluate
the previous step's dense output at ``t + c_i h`` (Hairer & Wanner §IV.8 extrapolate the
collocation polynomial the same way for Radau; Kennedy & Carpenter, NASA/TM-2016-219173,
discuss both kinds of stage-value predictor), when the solution continues from that step
(``y`` is its ``y_new`` and ``f0`` its last stage: not after a jump), else the in-step
polynomial. Measured first updates: 1–10 tolerances; kvaerno5 2.4–3 iterations per stage.

**Error estimate.** ``err = h Σ (b_j − b̂_j) k_j``, the difference to the embedded
solution, in the units of ``y`` (the loop scales it by ``atol + rtol max(|y|, |y_new|)``).
It is filtered through the factor, ``M⁻¹ err`` (Shampine's filter, Hairer & Wanner §IV.8
eq. (8.20); Hosea & Shampine's TR-BDF2), only where the embedded method is unbounded at
``z → ∞`` (``trbdf2``, ``|R̂(z)| ≈ 0.47|z|``): there the raw difference on a very stiff,
decayed component would be huge. ``kvaerno3`` and ``kvaerno5`` have stiffly bounded
embeddings (``|R̂(∞)|`` 0.96 and 0), as Kennedy & Carpenter (NASA/TM-2016-219173) require
of ESDIRK pairs; for them the filter only did harm: it divides the stiff components'
error by ``|1 − hγλ|`` — exactly the order-reduced error (stage order 2) that dominates on
stiff problems — and HIRES ended 6.8 tolerances off. The filter uses ``M`` at this step's
``hγ`` within ``refactor_ratio`` (the reused factor; refactorising exactly for the filter
was measured: 5× the LUs on ``trbdf2``, no change in its error).

``kvaerno5`` estimates with an L-stable *order-3* embedding (odeflow's, see
``esdirk_tableaus.py``; chosen so that ``|R(z) − R̂(z)| ≥ |R(z) − e^z|`` for all ``z ≤ 0``:
the estimate dominates the solution's own error on every decaying linear mode), so the
controller's exponent is ``1/4``: Kværnø's own order-4
embedding (``z_6``) tracks the order-5 solution's error too closely to be a safe bound —
measured on the accepted steps of the stiff benchmark, the true local error of ``y_new``
was 0.5–1.7 times the estimate (Robertson, Oregonator), so the global error grew to 3–30
tolerances. Radau IIA 5 (RADAU5) likewise pairs order 5 with an order-3 estimate
(Hairer & Wanner §IV.8).

**Dense output.** ``kvaerno5``: its continuous extension ``y + h Σ b_j(θ) k_j`` of order
4 (local error ``O(h⁵)``, ``b(1) = b``; derived in ``esdirk_tableaus.py``), at no extra
evaluation. ``kvaerno3`` and ``trbdf2``: cubic Hermite on ``(y, y_new, f0, k_s)``, third
order (local error ``O(h⁴)``), which is their own order or above. No method steps to the
output times.

**Gradients.** Under autograd (``ws is None`` and grad enabled) the Newton iteration runs
under ``torch.no_grad()`` and is *not* unrolled. The converged stage ``z*`` is attached by
the implicit-function theorem: with ``G(z, θ) = z − r_i(θ) − hγ f(t_i, z; θ)``,
``z_out = z* − (G(z*) − G(z*).detach())`` has the value ``z*`` and derivative
``−∂G/∂θ``; a hook on ``z_out`` maps its incoming gradient ``v`` to
``(I − hγ J(z*))^{−T} v`` (``J`` at ``z*`` computed afresh in the hook), so autograd
returns exactly ``−vᵀ (∂G/∂z)⁻¹ ∂G/∂θ``. This costs one extra evaluation of ``f`` per stage
in the forward pass and one Jacobian and factorisation per stage in the backward pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..interp import HermiteInterpolant, Interpolant, TableauInterpolant, hermite
from ..linalg import DenseSolver, ImplicitCounts, check_solver_dtype
from .base import StepResult
from .esdirk_lanes import step_lanes
from .esdirk_tableaus import ESDIRKTableau, stage_predictor
from .explicit_rk import _combine, _nonzero

__all__ = ["ESDIRK", "ESDIRKState"]

Func = Callable[[float, Tensor], Tensor]


@dataclass
class ESDIRKState:
    """What an ESDIRK solve carries from step to step (a mutable cache, see the module
    docstring)."""

    counts: ImplicitCounts
    jac: Any = None  # J = ∂f/∂y (dense tensor or the linear solver's operator)
    jac_at: Tensor | None = None  # the state object J was computed at (identity test)
    factor: Any = None  # the factorised M = I − hγ J (factor.h_gamma: its hγ)
    refresh_jac: bool = False  # recompute J at the next step's start (slow convergence)
    eta: float = 1.0  # Newton's η of the last converged stage (first-iteration test)
    # The stage predictor's memory (module docstring, "Predictors"): the last completed
    # attempt and the step that ends at the current point, each as
    # (y, dt, detached stages, y_new); ``y_new`` is the loop's own tensor (identity test).
    pending: tuple | None = None
    previous: tuple | None = None
    lanes: Any = None  # per sample: the esdirk_lanes.LaneNewtonState


class _Workspace:
    """The no-autograd marker of the loops (``ws is None`` means autograd); no buffers: the
    stages are fresh tensors either way."""

    __slots__ = ()


class _NewtonFailed(Exception):
    """Internal: a stage's Newton iteration did not converge (never leaves ``step``)."""


class ESDIRK:
    """ESDIRK stepper for an :class:`~odeflow.solvers.esdirk_tableaus.ESDIRKTableau`.

    Follows :class:`~odeflow.solvers.base.Stepper` (see the module docstring for the
    Newton iteration, the Jacobian/LU reuse rules, the error filter and the gradients).

    Args:
        tableau: the method.
        linear_solver: a :class:`~odeflow.linalg.LinearSolver` (``DenseSolver()``,
            ``KrylovSolver(...)``, or the registry's ``make_linear_solver(options)``).
        rtol, atol: the solve's tolerances (floats or tensors broadcastable to the flat
            state); they scale Newton's convergence test.
        max_newton_iters: iterations per stage before the attempt fails (default 8).
        newton_kappa: ``κ``, the convergence threshold in units of the tolerance
            (default 1e-3).
        refactor_ratio: refactorise ``M`` when ``hγ`` changed by more than this fraction
            (default 0.2).
        slow_rate: a contraction rate above this recomputes ``J`` at the next step
            (default 0.3).
        filter_error: filter the error estimate through ``M⁻¹``; default (``None``): only
            when the embedded method is unbounded at ``z → ∞`` (``trbdf2``).
    """

    #: takes one step size per lane (a per-sample batch: ``esdirk_lanes.py``)
    per_sample = True

    needs_f_end_for_dense = True

    def __init__(self, tableau: ESDIRKTableau, linear_solver: Any = None, *,
                 rtol: float | Tensor = 1e-7, atol: float | Tensor = 1e-9,
                 max_newton_iters: int = 8, newton_kappa: float = 1e-3,
                 refactor_ratio: float = 0.1, slow_rate: float = 0.1,
                 filter_error: bool | None = None, rate_hint: bool = True):
        if isinstance(max_newton_iters, bool) or not isinstance(max_newton_iters, int) or (
                max_newton_iters < 1):
            raise ValueError(f"max_newton_iters must be a positive int, got {max_newton_iters!r}")
        for name, value, hi in (("newton_kappa", newton_kappa, 1.0),
                                ("refactor_ratio", refactor_ratio, 1.0),
                                ("slow_rate", slow_rate, 1.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    0 <= value < hi) or (name == "newton_kappa" and value == 0):
                raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
        self.tableau = tableau
        self.linear_solver = linear_solver if linear_solver is not None else DenseSolver()
        self.rtol, self.atol = rtol, atol
        self.max_newton_iters = max_newton_iters
        self.newton_kappa = float(newton_kappa)
        self.refactor_ratio = float(refactor_ratio)
        self.slow_rate = float(slow_rate)
        self.rate_hint = bool(rate_hint)
        self.filter_error = (not tableau.embedded_bounded) if filter_error is None else bool(
            filter_error)
        self.order = tableau.order
        self.error_order = tableau.error_order
        self.gamma = tableau.gamma
        self._s = tableau.stages
        self._c = tableau.c
        self._a_nz = tuple(_nonzero(row) for row in tableau.a)
        self._e_nz = _nonzero(tableau.b_err)
        if not tableau.stiffly_accurate:
            raise ValueError(f"{tableau.name}: the ESDIRK stepper needs a stiffly accurate "
                             "tableau (y_new is the last stage value)")
        # The predictor of each stage (module docstring, "Predictors").
        self._same_node = tuple(
            max((j for j in range(1, i) if self._c[j] == self._c[i]), default=None)
            for i in range(self._s))
        self._predict = tuple(stage_predictor(self._c, i, self._same_node[i])
                              for i in range(self._s))

    # ----------------------------------------------------------------------------- setup
    #: Outputs are interpolated (kvaerno5: its order-4 continuous extension).
    steps_to_outputs = False

    def workspace(self, y0: Tensor) -> _Workspace:
        return _Workspace()

    def init(self, y0: Tensor) -> ESDIRKState:
        """A fresh state with its own :class:`~odeflow.linalg.ImplicitCounts`; ``J`` is
        computed on the first step."""
        check_solver_dtype(self.tableau.name, y0.dtype)
        return ESDIRKState(counts=ImplicitCounts())

    # ------------------------------------------------------------------------------ step
    def step(
        self,
        f: Func,
        t: float,
        y: Tensor,
        f0: Tensor,
        dt: float,
        state: ESDIRKState | None,
        ws: Any,
        *,
        with_error: bool = True,
        f_last: Func | None = None,
        fsal_stage: bool = True,
    ) -> StepResult:
        """One attempt from ``(t, y)`` with step ``dt`` (the contract of
        :class:`~odeflow.solvers.base.Stepper`).

        ``state=None`` (the checkpointed replay) computes a fresh ``J`` and factor and
        counts into a throwaway :class:`~odeflow.linalg.ImplicitCounts`. ``fsal_stage`` is
        accepted for the contract and ignored: ``y_new`` is the last stage value.
        """
        if state is None:
            state = self.init(y)
        graph = ws is None and torch.is_grad_enabled()
        if isinstance(dt, Tensor):  # per sample: one step size per lane
            return step_lanes(self, f, t, y, f0, dt, state, graph, with_error, f_last)
        counts = state.counts
        hg = dt * self.gamma
        y_d = y.detach()
        with torch.no_grad():
            scale = self._scale(y_d)
            kappa, floor = self._newton_threshold(y_d, scale)
            self._prepare(f, t, y, y_d, hg, state)
            previous = self._previous_step(y, f0, state)
            while True:
                try:
                    ks, zs, theta_max = self._stages(f, t, y, f0, dt, hg, state, scale,
                                                     (kappa, floor), graph, f_last, previous)
                    break
                except _NewtonFailed:
                    jac_current = state.jac_at is y
                    exact = state.factor is not None and state.factor.h_gamma == hg
                    if jac_current and exact:
                        counts.n_newton_failures += 1
                        state.eta = 1.0
                        return StepResult(y, None, [f0], state, ok=False)
                    counts.extra["newton_retries"] = counts.extra.get("newton_retries", 0) + 1
                    if not jac_current:
                        self._new_jacobian(f, t, y, y_d, state)
                    state.factor = self.linear_solver.factor(state.jac, hg, counts)
        state.refresh_jac = theta_max > self.slow_rate
        y_new = zs[-1]
        state.pending = (y_d, dt, [k.detach() for k in ks], y_new, ks[-1])
        err = None
        if with_error:
            with torch.no_grad():
                err = _combine(None, [k.detach() for k in ks], self._e_nz, dt)
                if self.filter_error:
                    err = state.factor.solve(err)
        return StepResult(y_new, err, ks, state)

    # --------------------------------------------------------------------- linear algebra
    def _new_jacobian(self, f: Any, t: float, y: Tensor, y_d: Tensor,
                      state: ESDIRKState) -> None:
        with torch.no_grad():
            state.jac, _ = self.linear_solver.jacobian(f, t, y_d, state.counts,
                                                       with_time=False)
        state.jac_at = y
        state.refresh_jac = False
        state.factor = None

    def _prepare(self, f: Any, t: float, y: Tensor, y_d: Tensor, hg: float,
                 state: ESDIRKState) -> None:
        """Rules 1 and 2 of the module docstring, at the start of an attempt."""
        if state.jac is None or (state.refresh_jac and state.jac_at is not y):
            self._new_jacobian(f, t, y, y_d, state)
        fac = state.factor
        if fac is None or abs(hg / fac.h_gamma - 1.0) > self.refactor_ratio:
            state.factor = self.linear_solver.factor(state.jac, hg, state.counts)

    def _scale(self, y_d: Tensor) -> Tensor:
        rtol, atol = self.rtol, self.atol
        if isinstance(rtol, Tensor):
            rtol = rtol.to(dtype=y_d.dtype, device=y_d.device)
        if isinstance(atol, Tensor):
            atol = atol.to(dtype=y_d.dtype, device=y_d.device)
        scale = y_d.abs() * rtol + atol
        # A zero scale (rtol = atol = 0 somewhere) would divide by zero: use the tiniest.
        return scale.clamp_min(torch.finfo(y_d.dtype).tiny)

    def _newton_threshold(self, y_d: Tensor, scale: Tensor) -> tuple[float, float]:
        """``(κ, floor)``: ``floor`` is ten times the rounding noise of ``y`` in units of
        the scale (an update that small has converged whatever the rate says); ``κ`` is
        raised to it where the tolerance is tighter than the precision."""
        eps = torch.finfo(y_d.dtype).eps
        floor = 10.0 * eps * float((y_d.abs() / scale).max()) if y_d.numel() else 0.0
        return max(self.newton_kappa, floor), floor

    # ---------------------------------------------------------------------------- stages
    @staticmethod
    def _previous_step(y: Tensor, f0: Tensor, state: ESDIRKState) -> tuple | None:
        """The step that ended at ``(y, f0)``, if the solution continues from it: ``y`` is
        that step's own ``y_new`` and ``f0`` its last stage (not re-evaluated at a jump)."""
        pending = state.pending
        if pending is not None and pending[3] is y:
            state.previous, state.pending = pending, None
        prev = state.previous
        if prev is not None and prev[3] is y and prev[4] is f0:
            return prev
        return None

    def _stages(self, f, t, y, f0, dt, hg, state, scale, thresholds, graph, f_last,
                previous=None):
        """All stages of one attempt; raises :class:`_NewtonFailed`."""
        c = self._c
        factor = state.factor
        # Predicting failure early only pays when a fresher J or exact factor can follow.
        refreshable = state.jac_at is not y or factor.h_gamma != hg
        ks: list[Tensor] = [f0]
        zs: list[Tensor] = []
        theta_max = 0.0
        for i in range(1, self._s):
            fi = f_last if (f_last is not None and c[i] == 1.0) else f
            ti = t + c[i] * dt
            with torch.enable_grad() if graph else torch.no_grad():
                r = _combine(y, ks, self._a_nz[i], dt)  # with its graph under autograd
            r_d = r.detach()
            kind, weights = self._predict[i]
            if kind == "same":
                z0 = zs[weights - 1].detach()
            elif kind == "previous" and previous is not None:
                y_p, dt_p, ks_p, y_new_p, _ = previous
                z0 = self.interpolate(y_p, y_new_p.detach(), dt_p, ks_p, ks_p[-1],
                                      1.0 + c[i] * dt / dt_p, _Workspace())
            else:
                z0 = torch.add(r_d, _combine(None, [k.detach() for k in ks], weights, hg))
            hint = theta_max if (self.rate_hint and theta_max > 0.0) else None
            z, theta = self._newton(fi, ti, r_d, z0, hg, factor, scale, thresholds, state,
                                    refreshable, hint)
            theta_max = max(theta_max, theta)
            if graph:
                with torch.enable_grad():
                    z = self._attach(f, fi, ti, z, r, hg)
                    k = (z - r) / hg
            else:
                k = (z - r_d).div_(hg)
            zs.append(z)
            ks.append(k)
        return ks, zs, theta_max

    def _newton(self, fi, ti, r, z, hg, factor, scale, thresholds, state, refreshable,
                hint=None):
        """Simplified Newton for ``z = r + hγ fi(ti, z)`` (no graph); returns ``(z, worst
        rate)`` or raises :class:`_NewtonFailed`."""
        counts = state.counts
        kappa, floor = thresholds
        eta = math.inf if hint is None else hint / (1.0 - hint)
        inv_sqrt_n = 1.0 / math.sqrt(max(z.numel(), 1))
        m_max = self.max_newton_iters
        prev = None
        theta_max = 0.0
        for m in range(m_max):
            residual = torch.add(r, fi(ti, z), alpha=hg).sub_(z)  # −G(z)
            dz = factor.solve(residual)
            counts.n_newton_iters += 1
            norm = float(torch.linalg.vector_norm(dz / scale)) * inv_sqrt_n  # host sync
            if not math.isfinite(norm):
                raise _NewtonFailed
            theta = norm / prev if prev else None
            if norm <= floor:  # at the rounding noise: converged whatever the rate
                if theta is not None and theta < 1.0:
                    state.eta = theta / (1.0 - theta)
                return z + dz, theta_max
            if theta is not None:
                theta_max = max(theta_max, theta)
                if theta >= 1.0:
                    raise _NewtonFailed  # diverging
                eta = theta / (1.0 - theta)
                if refreshable and theta ** (m_max - 1 - m) / (1.0 - theta) * norm > kappa:
                    raise _NewtonFailed  # too slow for the iterations left: refresh J/M
            z = z + dz
            if eta * norm <= kappa:
                state.eta = eta
                return z, theta_max
            prev = norm
        raise _NewtonFailed

    def _attach(self, f, fi, ti, z_star, r, hg):
        """``z*`` with the implicit-function-theorem derivative (module docstring)."""
        g = z_star - r - hg * fi(ti, z_star)
        if not g.requires_grad:
            return z_star
        z_out = z_star - (g - g.detach())
        solver = self.linear_solver

        def hook(v: Tensor) -> Tensor:
            with torch.no_grad():
                counts = ImplicitCounts()
                jac, _ = solver.jacobian(f, ti, z_star, counts, with_time=False)
                return solver.factor(jac, hg, counts).solve_transpose(v)

        z_out.register_hook(hook)
        return z_out

    # ----------------------------------------------------------------------- dense output
    def f_end(self, f: Func, t_new: float, y_new: Tensor, result: StepResult) -> Tensor:
        """The last stage's derivative (the methods are stiffly accurate): no evaluation."""
        return result.stages[-1]

    def interpolant(self, t: float, dt: float, y: Tensor, y_new: Tensor,
                    stages: Sequence[Tensor], f_new: Tensor | None,
                    f: Func | None = None) -> Interpolant:
        """The tableau's continuous extension (``kvaerno5``: order 4), else cubic Hermite
        (order 3)."""
        if self.tableau.dense:
            return TableauInterpolant(t, dt, y, stages, self.tableau)
        f1 = f_new if f_new is not None else stages[-1]
        return HermiteInterpolant(t, dt, y, y_new, stages[0], f1)

    def interpolate(self, y: Tensor, y_new: Tensor, dt: float, stages: Sequence[Tensor],
                    f_new: Tensor | None, theta: float, ws: Any) -> Tensor:
        if self.tableau.dense:
            return _combine(y, stages, _nonzero(self.tableau.dense_weights(theta)), dt)
        f1 = f_new if f_new is not None else stages[-1]
        return hermite(y, y_new, stages[0], f1, dt, theta)
