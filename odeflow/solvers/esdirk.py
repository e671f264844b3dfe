"""One stepper for the ESDIRK methods (``kvaerno3``, ``kvaerno5``, ``trbdf2``).

An ESDIRK step from ``(t, y)`` with step ``h`` takes ``k_1 = f0`` (explicit first stage),
then for each implicit stage ``i = 2..s`` solves

    z_i = r_i + hγ f(t + c_i h, z_i),      r_i = y + h Σ_{j<i} a_ij k_j,

and sets ``k_i = (z_i − r_i) / (hγ)`` (the "z form": at the solution this is
``f(t + c_i h, z_i)``, but it needs no further evaluation of ``f`` and does not amplify the
Newton error by the stiffness). The methods are stiffly accurate, so ``y_new = z_s``
and ``k_s`` is the derivative at the step's end (the next step's ``f0``). Newton and the
per-sample form: :mod:`odeflow.solvers.esdirk_newton`.

**Jacobian and factor reuse** (the state carries both; as in Hairer & Wanner's RADAU5 and
SciPy's ``Radau``: ``J`` is expensive, ``M = I − hγ J``'s LU cheaper, Newton iterations
cheapest):

1. ``J`` is reused across steps and recomputed at the step's start only (a) on the first
   step, (b) when a stage's Newton iteration failed with ``J`` from an earlier point (``M``
   is refactorised and the step retried once), and (c) after a step whose worst contraction
   rate was above ``slow_rate`` (0.1: at 0.3 a stage needed 5–7 iterations; RADAU5 and
   SciPy refresh at rates above 1e-3).
2. ``M`` is refactorised when ``J`` changed or ``hγ`` moved by more than ``refactor_ratio``
   (10 %, not above ``slow_rate``: a stale ``hγ`` alone never triggers a new ``J``):
   simplified Newton with a slightly wrong ``hγ`` still converges (rate about
   ``|1 − hγ / hγ_old|`` on the stiffest components); a factorisation costs ``O(n³)``.
3. A failure with a current ``J`` but a factor of another ``hγ`` refactorises exactly and
   retries; with a current ``J`` and an exact factor the step returns ``ok=False`` (the loop
   shrinks ``h``) and counts ``n_newton_failures``. Nothing raises.

The state is a mutable cache, updated in place *and* returned: a Jacobian computed during
a rejected attempt is still the best one at that point, and the loop passes the previous
state back after a rejection.

**Predictors** (:func:`~odeflow.solvers.esdirk_tableaus.stage_predictor`; with
``z_i^0 = r_i + hγ k_{i−1}`` the first update was 300–700 tolerances and a stage took 4.3
iterations, now 1–10 tolerances and 2.4–3 on kvaerno5). A stage predicted from the previous
step evaluates its dense output at ``t + c_i h`` (Hairer & Wanner §IV.8 extrapolate the
collocation polynomial so for Radau; Kennedy & Carpenter, NASA/TM-2016-219173, discuss both
kinds of stage-value predictor) when the solution continues from that step (``y`` is its
``y_new`` and ``f0`` its last stage: not after a jump), else the in-step polynomial.

**Error estimate.** ``err = h Σ (b_j − b̂_j) k_j``, in the units of ``y``, filtered through
the factor (``M⁻¹ err``: Shampine's filter, Hairer & Wanner §IV.8 eq. (8.20); Hosea &
Shampine's TR-BDF2) only where the embedded method is unbounded at ``z → ∞`` (``trbdf2``):
there the raw difference on a very stiff, decayed component would be huge. ``kvaerno3``
and ``kvaerno5`` have stiffly bounded embeddings, as Kennedy & Carpenter
(NASA/TM-2016-219173) require of ESDIRK pairs; for them the filter only did harm: it divides
the stiff components' error by ``|1 − hγλ|`` — exactly the order-reduced error (stage order
2) that dominates on stiff problems — and HIRES ended 6.8 tolerances off. The filter uses
the reused factor (an exact one was measured: 5× the LUs on ``trbdf2``, no change in its
error). ``kvaerno5``'s embedding has order 3 (controller exponent ``1/4``; why:
``esdirk_tableaus.py``, which also derives its order-4 dense output; ``kvaerno3`` and
``trbdf2`` interpolate by cubic Hermite, of their own order or above).

**Gradients.** The Newton iteration runs under ``torch.no_grad()`` and is *not* unrolled.
Under autograd (``ws is None`` and grad enabled) the stages are formed again from the
converged values with their graph, each ``z*`` attached by the implicit-function theorem:
with ``G(z, θ) = z − r_i(θ) − hγ f(t_i, z; θ)``, ``z_out = z* − (G(z*) − G(z*).detach())``
has the value ``z*`` and derivative ``−∂G/∂θ``; a hook on ``z_out`` maps its incoming
gradient ``v`` to ``(I − hγ J(z*))^{−T} v`` (``J`` at ``z*`` afresh), so autograd returns
exactly ``−vᵀ (∂G/∂z)⁻¹ ∂G/∂θ``: one extra evaluation of ``f`` per stage forward, one
Jacobian and factorisation per stage backward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..interp import HermiteInterpolant, Interpolant, TableauInterpolant, combine, hermite, nonzero
from ..linalg import DenseSolver, ImplicitCounts, check_solver_dtype
from .base import Func, StepResult
from .esdirk_newton import ESDIRKState, _any, _sum, _where, newton, newton_tests
from .esdirk_tableaus import ESDIRKTableau, stage_predictor

__all__ = ["ESDIRK", "ESDIRKState"]

class ESDIRK:
    """Stepper for an :class:`~odeflow.solvers.esdirk_tableaus.ESDIRKTableau`.

    Follows :class:`~odeflow.solvers.base.Stepper`; ``stages`` of a step are
    ``(f0, k_2, ..., k_s)``. The module docstring gives the algorithm.

    Args:
        tableau: the method.
        linear_solver: a :class:`~odeflow.linalg.LinearSolver` (``DenseSolver()``,
            ``KrylovSolver(...)``, or the registry's ``make_linear_solver(options)``).
        rtol, atol: the solve's tolerances (floats or tensors broadcastable to the flat
            state); they scale Newton's convergence test.
        max_newton_iters: iterations per stage before the attempt fails (default 8).
    """

    #: takes one step size per lane (a per-sample batch)
    per_sample = True

    #: Outputs are interpolated (kvaerno5: its order-4 continuous extension).
    steps_to_outputs = False
    needs_f_end_for_dense = True
    #: an implicit method: the loop's stiffness probe (for explicit methods) skips it
    implicit = True
    #: ``κ``, Newton's convergence threshold in units of the tolerance (esdirk_newton)
    newton_kappa = 1e-3
    #: refactorise ``M`` when ``hγ`` changed by more than this fraction (rule 2)
    refactor_ratio = 0.1
    #: a contraction rate above this recomputes ``J`` at the next step (rule 1)
    slow_rate = 0.1

    def __init__(self, tableau: ESDIRKTableau, linear_solver: Any = None, *,
                 rtol: float | Tensor = 1e-7, atol: float | Tensor = 1e-9,
                 max_newton_iters: int = 8):  # (checked by options.validate_options)
        self.tableau = tableau
        self.linear_solver = linear_solver if linear_solver is not None else DenseSolver()
        self.rtol, self.atol = rtol, atol
        self.max_newton_iters = max_newton_iters
        # Shampine's filter only where the embedding is unbounded at z → ∞ (module docstring)
        self.filter_error = not tableau.embedded_bounded
        self.order = tableau.order
        self.error_order = tableau.error_order
        self.gamma = tableau.gamma
        self._s = tableau.stages
        self._c = tableau.c
        self._a_nz = tuple(nonzero(row) for row in tableau.a)
        self._e_nz = nonzero(tableau.b_err)
        # The predictor of each stage (module docstring, "Predictors").
        self._predict = (None, *(stage_predictor(self._c, i) for i in range(1, self._s)))

    def workspace(self, y0: Tensor) -> tuple:
        return ()  # no buffers (the stages are fresh tensors); not None: no autograd

    def init(self, y0: Tensor) -> ESDIRKState:
        """A fresh state; ``J`` is computed on the first step."""
        check_solver_dtype(self.tableau.name, y0.dtype)
        return ESDIRKState(counts=ImplicitCounts())

    def step(self, f: Func, t: Any, y: Tensor, f0: Tensor, dt: Any, state: ESDIRKState | None,
             ws: Any, *, with_error: bool = True, f_last: Func | None = None,
             fsal_stage: bool = True) -> StepResult:
        """One attempt from ``(t, y)`` with step ``dt`` (the contract of
        :class:`~odeflow.solvers.base.Stepper`); per sample ``result.ok`` is a ``(B,)``
        mask (``False``: the lane's Newton iteration failed with a current ``J`` and an
        exact factor).

        ``state=None`` (the checkpointed replay) computes a fresh ``J`` and factor and
        counts into a throwaway :class:`~odeflow.linalg.ImplicitCounts`. ``fsal_stage`` is
        accepted for the contract and ignored: ``y_new`` is the last stage value.
        """
        if state is None:
            state = self.init(y)
        lanes = isinstance(dt, Tensor)
        if lanes and state.pending_t is None:
            state.init_lanes(y.detach(), self._s)
        hg = dt * self.gamma  # per sample (B,) float64, as the joint Python float
        y_d = y.detach()
        active = dt > 0 if lanes else True
        with torch.no_grad():
            tests = newton_tests(y_d, self.rtol, self.atol, self.newton_kappa, lanes)
            # Rules 1 and 2 of the module docstring. No factor yet (nan hγ, which compares
            # False) means no J yet: need_j covers it (refresh_jac starts True).
            need_j = (active & state.refresh_jac) > self._jac_current(state, t, y)
            fac_hg = state.factor.h_gamma if state.factor is not None else math.nan
            need_lu = active & (need_j | (abs(hg / fac_hg - 1.0) > self.refactor_ratio))
            self._renew(f, t, y, y_d, hg, need_j, need_lu, state)
            previous = self._previous_step(t, y, f0, state)
            todo, ok, out = active, torch.ones_like(active) if lanes else True, None
            while True:
                current = self._jac_current(state, t, y)
                # Predicting failure early only pays when a fresher J or exact factor can follow.
                exact = current & (state.factor.h_gamma == hg)
                new = self._stages(f, t, y_d, f0, dt, hg, state, tests, f_last, previous, todo,
                                   exact)
                failed = new[-1]
                done = todo > failed
                out = new[:3] if out is None or not lanes else [
                    [_where(done, a, b) for a, b in zip(x, y_)] if isinstance(x, list)
                    else _where(done, x, y_) for x, y_ in zip(new[:3], out)]
                if not _any(failed):
                    break
                give_up = failed & exact
                retry = failed > exact
                state.counts.n_newton_failures += give_up
                ok = ok > give_up
                if not _any(retry):
                    break
                self._renew(f, t, y, y_d, hg, retry > current, retry, state)
                todo = retry
            if not lanes and not ok:
                return StepResult(y, None, [f0], state, ok=False)
            zs, ks, theta_max = out
            completed = active & ok
            state.refresh_jac = _where(completed, theta_max > self.slow_rate,
                                       state.refresh_jac)
        h = dt.to(y.dtype)[:, None] if lanes else dt
        # Under autograd always: a parameter may enter at a later stage only (f0 and y
        # need not require grad), and the Newton pass recorded no graph.
        if ws is None and torch.is_grad_enabled():
            y_new, ks = self._graph_stages(f, t, y, f0, dt, h, hg, zs, completed, f_last)
        else:
            ks = [f0, *(_where(completed, k, 0.0) for k in ks)]
            y_new = _where(completed, zs[-1], y)
        with torch.no_grad():
            kd = [k.detach() for k in ks]
            if lanes:
                new_mem = [y_d, dt, y_new.detach(), *kd]
                state.pending = [_where(completed, a, b) for a, b in zip(new_mem, state.pending)]
                state.pending_t = torch.where(completed, t, state.pending_t)
            else:
                state.pending = [y_d, dt, y_new, *ks]
            err = None
            if with_error:
                err = _sum(None, kd, self._e_nz, h)
                if self.filter_error:
                    err = state.factor.solve(err)
                err = _where(completed, err, 0.0)
        return StepResult(y_new, err, ks, state, ok)

    def _graph_stages(self, f, t, y, f0, dt, h, hg, zs, completed, f_last):
        """The stages again with their graph (module docstring); the lanes not ``completed``
        keep ``y`` (``hγ = 0`` there: ``z`` is ``r``, in value and derivative)."""
        hg_l = _where(completed, hg, 0.0)
        hg_div = _where(completed, hg.to(y.dtype)[:, None], 1.0) if isinstance(dt, Tensor) else hg
        with torch.enable_grad():
            ks = [f0]
            for i in range(1, self._s):
                r = _sum(y, ks, self._a_nz[i], h)
                z = _where(completed, zs[i - 1], r.detach())
                fi = f_last if (f_last is not None and self._c[i] == 1.0) else f
                z = self._attach(f, fi, t + self._c[i] * dt, z, r, hg_l)
                ks.append(_where(completed, (z - r) / hg_div, 0.0))
            return _where(completed, z, y), ks

    @staticmethod
    def _jac_current(state: ESDIRKState, t: Any, y: Tensor) -> Any:
        return state.jac_at == t if isinstance(t, Tensor) else state.jac_at is y

    def _renew(self, f: Any, t: Any, y: Tensor, y_d: Tensor, hg: Any, need_j: Any,
               need_lu: Any, state: ESDIRKState) -> None:
        """A new ``J`` where ``need_j`` and factor where ``need_lu`` (per sample: masks,
        counted per lane)."""
        counts, solver = state.counts, self.linear_solver
        lanes = isinstance(hg, Tensor)
        # per sample a host sync: one small transfer for both decisions
        need_j_any, need_lu_any = (torch.stack([need_j.any(), need_lu.any()]).tolist() if lanes
                                   else (need_j, need_lu))
        if need_j_any:
            # Per sample func is evaluated on every lane (it takes the whole batch); the
            # lanes that keep their J keep it.
            jac, _ = solver.jacobian(f, t, y_d, state.jac_modes if lanes else counts,
                                     with_time=False)
            state.jac = _where(need_j, jac, state.jac)
            state.jac_at = torch.where(need_j, t, state.jac_at) if lanes else y
            state.refresh_jac = state.refresh_jac > need_j
            if lanes:
                counts.n_jacobians += need_j
        if need_lu_any and lanes:
            idx = need_lu.nonzero().squeeze(1)
            new = solver.factor(state.jac[idx], hg[idx], ImplicitCounts())
            fac = state.factor
            fac.lu[idx], fac.pivots[idx] = new.lu, new.pivots
            fac.h_gamma = torch.where(need_lu, hg, fac.h_gamma)
            counts.n_lu += need_lu
        elif need_lu_any:
            state.factor = solver.factor(state.jac, hg, counts)

    @staticmethod
    def _previous_step(t: Any, y: Tensor, f0: Tensor, state: ESDIRKState) -> Any:
        """Whether the solution continues from the step that ended at ``(y, f0)`` (per
        sample a mask, after promoting the pending attempt of the lanes that accepted it:
        their ``t`` moved)."""
        if isinstance(t, Tensor):
            moved = ~torch.isnan(state.pending_t) & (state.pending_t != t)
            state.previous = [_where(moved, a, b) for a, b in zip(state.pending,
                                                                  state.previous)]
            state.previous_t = torch.where(moved, t, state.previous_t)
            state.pending_t = torch.where(moved, math.nan, state.pending_t)
            return (state.previous_t == t) & (f0.detach() == state.previous[-1]).all(-1)
        if state.pending is not None and state.pending[2] is y:
            state.previous, state.pending = state.pending, None
        prev = state.previous
        return prev is not None and prev[2] is y and prev[-1] is f0

    def _from_previous(self, state: ESDIRKState, offset: Any) -> Tensor:
        """The previous step's dense output ``offset`` past its end (per sample lanes
        without one get a finite value, replaced by the caller)."""
        y_p, dt_p, y_new_p, *ks_p = state.previous
        if not isinstance(offset, Tensor):  # (the hot-path form: no interpolant object)
            return self.interpolate(y_p, y_new_p, dt_p, ks_p, None, 1.0 + offset / dt_p, None)
        return self.interpolant(0.0, dt_p, y_p, y_new_p, ks_p, None).evaluate(1.0 + offset / dt_p)

    def _stages(self, f, t, y_d, f0, dt, hg, state, tests, f_last, previous, todo,
                exact):
        """All stage values of one attempt for the lanes ``todo`` (no graph); returns
        ``(z_2..z_s, k_2..k_s, worst rate, failed)``."""
        c = self._c
        lanes = isinstance(dt, Tensor)
        h = dt.to(y_d.dtype)[:, None] if lanes else dt
        hgc = hg.to(y_d.dtype)[:, None] if lanes else hg
        factor = state.factor
        ks: list[Tensor] = [f0.detach()]
        zs: list[Tensor] = []
        theta_max = torch.zeros_like(hg) if lanes else 0.0
        alive = todo
        for i in range(1, self._s):
            fi = f_last if (f_last is not None and c[i] == 1.0) else f
            r = _sum(y_d, ks, self._a_nz[i], h)
            kind, weights = self._predict[i]
            if kind == "same":
                z0 = zs[weights - 1]
            elif kind == "previous" and not lanes and previous:
                z0 = self._from_previous(state, c[i] * dt)
            else:
                z0 = torch.add(r, _sum(None, ks, weights, hgc))
                if kind == "previous" and lanes:
                    z0 = _where(previous, self._from_previous(state, c[i] * dt), z0)
            z, theta_max, failed = newton(fi, t + c[i] * dt, r, z0, hg, hgc, factor, tests,
                                          state.counts, alive, exact, theta_max,
                                          self.max_newton_iters)
            alive = alive > failed
            z = _where(alive, z, r)  # per sample failed and idle lanes: a finite value
            k = _where(alive, (z - r) / _where(alive, hgc, 1.0), 0.0)
            zs.append(z)
            ks.append(k)
            if i < self._s - 1 and not _any(alive):  # every lane failed: the rest is unread
                zs.extend(r for _ in range(i + 1, self._s))
                ks.extend(torch.zeros_like(r) for _ in range(i + 1, self._s))
                break
        return zs, ks[1:], theta_max, todo > alive

    def _attach(self, f, fi, ti, z_star, r, hg):
        """``z*`` with the implicit-function-theorem derivative (module docstring)."""
        hgc = hg.to(z_star.dtype)[:, None] if isinstance(hg, Tensor) else hg
        g = z_star - r - hgc * fi(ti, z_star)
        if not g.requires_grad:
            return z_star
        z_out = z_star - (g - g.detach())

        def hook(v: Tensor) -> Tensor:
            with torch.no_grad():
                counts, solver = ImplicitCounts(), self.linear_solver
                jac, _ = solver.jacobian(f, ti, z_star, counts, with_time=False)
                return solver.factor(jac, hg, counts).solve_transpose(v)

        z_out.register_hook(hook)
        return z_out

    def f_end(self, f: Func, t_new: Any, y_new: Tensor, result: StepResult) -> Tensor:
        """The last stage's derivative (the methods are stiffly accurate): no evaluation."""
        return result.stages[-1]

    def interpolant(self, t: Any, dt: Any, y: Tensor, y_new: Tensor,
                    stages: Sequence[Tensor], f_new: Tensor | None,
                    f: Func | None = None) -> Interpolant:
        """The tableau's continuous extension (``kvaerno5``), else cubic Hermite."""
        if self.tableau.dense:
            return TableauInterpolant(t, dt, y, stages, self.tableau)
        f1 = f_new if f_new is not None else stages[-1]
        return HermiteInterpolant(t, dt, y, y_new, stages[0], f1)

    def interpolate(self, y: Tensor, y_new: Tensor, dt: float, stages: Sequence[Tensor],
                    f_new: Tensor | None, theta: float, ws: Any) -> Tensor:
        if self.tableau.dense:
            return combine(y, stages, nonzero(self.tableau.dense_weights(theta)), dt)
        return hermite(y, y_new, stages[0], stages[-1] if f_new is None else f_new, dt, theta)
