"""The ESDIRK step per sample: one Newton iteration per lane, vectorised over the lanes.

A per-sample solve (``y`` ``(B, n)``, ``t`` and ``dt`` ``(B,)``) takes, for every lane, the
decisions :mod:`odeflow.solvers.esdirk` takes for a solve of that sample alone (the module
docstring there gives the rules): its own Newton iterations, convergence-rate and
failure tests, retries with a fresh ``J`` or an exact factor, ``ok=False`` on a final
failure, and its own ``J``/LU reuse. The lanes share only the calls of ``func`` (every
call evaluates all ``B`` samples, as a per-sample ``func`` expects) and the kernels:
``J`` is ``(B, n, n)`` and ``M = I − hγ J`` is factorised as a batch of LUs, only for the
lanes that need a new one.

What the joint stepper decides by object identity (``J`` computed at this ``y``; the step
ended at this ``y`` with this ``f0``), a lane decides by its time: a lane's ``t`` changes
exactly when it accepts a step, and the loop hands the state back after every attempt,
accepted or not, so the lane state keeps the time each cached quantity belongs to.
``f0`` is the last stage of the step that ended here unless it was re-evaluated at a
jump (compared by value).

Counters count lanes: ``n_newton_iters`` adds one per iterating lane, ``n_jacobians`` and
``n_lu`` one per lane that takes a new ``J`` or factor, so that a batch reports the sum of
its samples' own solves (``ImplicitCounts.lanes``, summed into the statistics at the end).

Host synchronisation: one small read per Newton iteration (as the joint stepper's norm),
one per stage round and one when ``J`` or factors are renewed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..interp import HermiteInterpolant, TableauInterpolant
from ..linalg import ImplicitCounts, autodiff_jacobian
from .base import StepResult

__all__ = ["LaneNewtonState", "step_lanes"]


@dataclass
class LaneNewtonState:
    """The per-lane cache of a per-sample ESDIRK solve (every field ``(B, ...)``)."""

    jac: Tensor  # (B, n, n) J of each lane
    jac_t: Tensor  # (B,) the time J was computed at (nan: none yet)
    lu: Tensor  # (B, n, n) LU factors of M = I − hγ J
    piv: Tensor  # (B, n)
    fac_hg: Tensor  # (B,) float64 the hγ of the factor (nan: none)
    refresh: Tensor  # (B,) bool: recompute J at the next step's start (slow convergence)
    # The predictor's memory: the last completed attempt per lane and the step that ends at
    # each lane's current point, as [y, dt, y_new, k_1..k_s] and the start time (nan: none).
    pend: list[Tensor]
    pend_t: Tensor
    prev: list[Tensor]
    prev_t: Tensor  # the time the previous step *ended* at

    @classmethod
    def empty(cls, y: Tensor, stages: int) -> LaneNewtonState:
        B, n = y.shape
        nan = torch.full((B,), math.nan, dtype=torch.float64, device=y.device)
        eye = torch.eye(n, dtype=y.dtype, device=y.device).expand(B, n, n).clone()
        piv = torch.arange(1, n + 1, dtype=torch.int32, device=y.device).expand(B, n).clone()
        memory = [y.new_zeros(y.shape) for _ in range(stages + 3)]
        memory[1] = torch.ones(B, dtype=torch.float64, device=y.device)
        return cls(y.new_zeros(B, n, n), nan.clone(), eye, piv, nan.clone(),
                   torch.zeros(B, dtype=torch.bool, device=y.device), memory, nan.clone(),
                   [m.clone() for m in memory], nan.clone())


def _count(counts: ImplicitCounts, name: str, lanes: Tensor) -> None:
    """Add one per lane of ``lanes`` (a mask) to ``counts.lanes[name]`` (no host sync)."""
    have = counts.lanes.get(name)
    add = lanes.long()
    counts.lanes[name] = add if have is None else have + add


def _flags(*masks: Tensor) -> list[bool]:
    # host sync: one small transfer for several decisions
    return [bool(x) for x in torch.stack([m.any() for m in masks]).tolist()]


def _combine(y: Tensor | None, ks: list[Tensor], nz: Any, h: Tensor) -> Tensor:
    """``y + h Σ_j w_j k_j`` with ``h`` ``(B, 1)``, out of place (autograd-safe)."""
    acc = None
    for j, w in nz:
        term = ks[j] * (w * h)
        acc = term if acc is None else acc + term
    if acc is None:
        return y if y is not None else torch.zeros_like(ks[0])
    return acc if y is None else y + acc


def step_lanes(m: Any, f: Any, t: Tensor, y: Tensor, f0: Tensor, dt: Tensor, state: Any,
               graph: bool, with_error: bool, f_last: Any) -> StepResult:
    """One attempt per lane of ``m`` (an :class:`~odeflow.solvers.esdirk.ESDIRK`) from
    ``(t, y)`` with steps ``dt`` ``(B,)``; ``result.ok`` is a ``(B,)`` mask (``False``: the
    lane's Newton iteration failed with a current ``J`` and an exact factor)."""
    counts = state.counts
    if state.lanes is None:
        state.lanes = LaneNewtonState.empty(y.detach(), m._s)
    ls: LaneNewtonState = state.lanes
    y_d = y.detach()
    active = dt > 0
    hg = dt * m.gamma  # (B,) float64, as the joint stepper's Python float
    with torch.no_grad():
        scale = m._scale(y_d)
        eps = torch.finfo(y.dtype).eps
        floor = (10.0 * eps) * (y_d.abs() / scale).amax(-1).double()
        kappa = floor.clamp(min=m.newton_kappa)
        _prepare(m, f, t, y_d, hg, active, ls, counts)
        previous = _previous_step(t, f0, ls)
        todo = active
        out_z: list[Tensor] | None = None
        out_k: list[Tensor] = []
        theta_out = torch.zeros_like(hg)
        ok = torch.ones_like(active)
        while True:
            zs, ks, theta, failed = _stages(m, f, t, y_d, f0, dt, hg, ls, scale, kappa,
                                            floor, f_last, previous, todo, counts)
            done = todo & ~failed
            if out_z is None:
                out_z, out_k = zs, ks
            else:
                col = done[:, None]
                out_z = [torch.where(col, z, zo) for z, zo in zip(zs, out_z)]
                out_k = [torch.where(col, k, ko) for k, ko in zip(ks, out_k)]
            theta_out = torch.where(done, theta, theta_out)
            if not _flags(failed)[0]:
                break
            current = ls.jac_t == t
            exact = ls.fac_hg == hg
            give_up = failed & current & exact
            retry = failed & ~give_up
            _count(counts, "n_newton_failures", give_up)
            _count(counts, "newton_retries", retry)
            ok = ok & ~give_up
            if not _flags(retry)[0]:
                break
            _renew(m, f, t, y_d, hg, retry & ~current, retry, ls, counts)
            todo = retry
        completed = active & ok
        ls.refresh = torch.where(completed, theta_out > m.slow_rate, ls.refresh)
    still = (~active | ~ok)[:, None]  # lanes that stay at y
    h_col = dt.to(y.dtype)[:, None]
    if graph and (y.requires_grad or f0.requires_grad):
        # The stages again with their graph, each z attached by the implicit-function
        # theorem (the values are those of the Newton pass).
        hg_col = hg.to(y.dtype)[:, None]
        safe_hg = torch.where(still, 1.0, hg_col)
        with torch.enable_grad():
            ks = [f0]
            for i in range(1, m._s):
                r = _combine(y, ks, m._a_nz[i], h_col)
                z = torch.where(still, r.detach(), out_z[i - 1])
                fi = f_last if (f_last is not None and m._c[i] == 1.0) else f
                # hγ = 0 on the lanes that stay: there z is r, in value and derivative
                z = _attach(m, f, fi, t + m._c[i] * dt, z, r,
                            torch.where(still[:, 0], 0.0, hg))
                ks.append(torch.where(still, 0.0, (z - r) / safe_hg))
            y_new = torch.where(still, y, z)
    else:
        ks = [f0, *(torch.where(still, 0.0, k) for k in out_k)]
        y_new = torch.where(still, y, out_z[-1])
    with torch.no_grad():
        kd = [k.detach() for k in ks]
        new = [y_d, dt, y_new.detach(), *kd]
        ls.pend = [torch.where(_col(completed, a), a, b) for a, b in zip(new, ls.pend)]
        ls.pend_t = torch.where(completed, t, ls.pend_t)
        err = None
        if with_error:
            err = _combine(None, kd, m._e_nz, h_col)
            if m.filter_error:
                err = torch.linalg.lu_solve(ls.lu, ls.piv, err.unsqueeze(-1)).squeeze(-1)
            err = torch.where(still, 0.0, err)
    return StepResult(y_new, err, ks, state, ok)


def _col(mask: Tensor, like: Tensor) -> Tensor:
    return mask.reshape(-1, *([1] * (like.ndim - 1)))


def _prepare(m: Any, f: Any, t: Tensor, y_d: Tensor, hg: Tensor, active: Tensor,
             ls: LaneNewtonState, counts: ImplicitCounts) -> None:
    """Rules 1 and 2 of :mod:`odeflow.solvers.esdirk`, per lane: a new ``J`` on the first
    step or after slow convergence (not at the point it was computed at), a new factor when
    ``J`` changed or ``hγ`` moved by more than ``refactor_ratio``."""
    need_j = active & (torch.isnan(ls.jac_t) | (ls.refresh & (ls.jac_t != t)))
    stale = (hg / ls.fac_hg - 1.0).abs() > m.refactor_ratio
    need_lu = active & (need_j | torch.isnan(ls.fac_hg) | stale)
    _renew(m, f, t, y_d, hg, need_j, need_lu, ls, counts)


def _renew(m: Any, f: Any, t: Tensor, y_d: Tensor, hg: Tensor, need_j: Tensor,
           need_lu: Tensor, ls: LaneNewtonState, counts: ImplicitCounts) -> None:
    """A new ``J`` at ``(t, y)`` for the lanes ``need_j`` and a new LU at ``hγ`` for the
    lanes ``need_lu``."""
    any_j, any_lu = _flags(need_j, need_lu)
    if any_j:
        # func is evaluated on every lane (a per-sample func takes the whole batch); the
        # lanes that keep their J keep it. Counted per lane below, not per call.
        jac, _ = autodiff_jacobian(f, t, y_d, ImplicitCounts(), with_time=False)
        ls.jac = torch.where(need_j[:, None, None], jac, ls.jac)
        ls.jac_t = torch.where(need_j, t, ls.jac_t)
        ls.refresh = ls.refresh & ~need_j
        _count(counts, "n_jacobians", need_j)
    if any_lu:
        idx = need_lu.nonzero().squeeze(1)
        n = y_d.shape[1]
        eye = torch.eye(n, dtype=y_d.dtype, device=y_d.device)
        mat = eye - hg[idx].to(y_d.dtype)[:, None, None] * ls.jac[idx]
        lu, piv, _ = torch.linalg.lu_factor_ex(mat)
        ls.lu[idx] = lu
        ls.piv[idx] = piv
        ls.fac_hg = torch.where(need_lu, hg, ls.fac_hg)
        _count(counts, "n_lu", need_lu)


def _previous_step(t: Tensor, f0: Tensor, ls: LaneNewtonState) -> Tensor:
    """Promote the pending attempt of the lanes that accepted it (their ``t`` moved) and
    return the mask of lanes whose solution continues from their previous step (``f0`` its
    last stage, not re-evaluated at a jump)."""
    moved = ~torch.isnan(ls.pend_t) & (ls.pend_t != t)
    ls.prev = [torch.where(_col(moved, a), a, b) for a, b in zip(ls.pend, ls.prev)]
    ls.prev_t = torch.where(moved, t, ls.prev_t)
    ls.pend_t = torch.where(moved, math.nan, ls.pend_t)
    return (ls.prev_t == t) & (f0.detach() == ls.prev[-1]).all(-1)


def _stages(m: Any, f: Any, t: Tensor, y_d: Tensor, f0: Tensor, dt: Tensor, hg: Tensor,
            ls: LaneNewtonState, scale: Tensor, kappa: Tensor, floor: Tensor, f_last: Any,
            previous: Tensor, todo: Tensor, counts: ImplicitCounts
            ) -> tuple[list[Tensor], list[Tensor], Tensor, Tensor]:
    """All stage values of one round for the lanes ``todo`` (no graph); returns
    ``(z_2..z_s, k_2..k_s, worst rate, failed)``."""
    c = m._c
    h_col = dt.to(y_d.dtype)[:, None]
    hg_col = hg.to(y_d.dtype)[:, None]
    refreshable = (ls.jac_t != t) | (ls.fac_hg != hg)
    ks: list[Tensor] = [f0.detach()]
    zs: list[Tensor] = []
    theta_max = torch.zeros_like(hg)
    alive = todo
    for i in range(1, m._s):
        fi = f_last if (f_last is not None and c[i] == 1.0) else f
        ti = t + c[i] * dt
        r = _combine(y_d, ks, m._a_nz[i], h_col)
        kind, weights = m._predict[i]
        if kind == "same":
            z0 = zs[weights - 1]
        else:
            z0 = r + _combine(None, ks, weights, hg_col)
            if kind == "previous":
                z0 = torch.where(previous[:, None], _from_previous(m, ls, c[i] * dt), z0)
        hint = theta_max if m.rate_hint else torch.zeros_like(theta_max)
        z, theta, failed, left = _newton(m, fi, ti, r, z0, hg_col, ls, scale, kappa, floor,
                                         alive, refreshable, hint, counts)
        theta_max = torch.where(alive, torch.maximum(theta_max, theta), theta_max)
        alive = alive & ~failed
        z = torch.where(alive[:, None], z, r)  # failed and idle lanes: a finite value
        zs.append(z)
        ks.append(torch.where(alive[:, None], (z - r) / torch.where(alive[:, None], hg_col,
                                                                     1.0), 0.0))
        if not left and i < m._s - 1:  # every lane failed: the rest is never read
            zs.extend(r for _ in range(i + 1, m._s))
            ks.extend(torch.zeros_like(r) for _ in range(i + 1, m._s))
            break
    return zs, ks[1:], theta_max, todo & ~alive


def _from_previous(m: Any, ls: LaneNewtonState, offset: Tensor) -> Tensor:
    """The previous step's dense output at ``offset`` past its end (lanes with none get a
    finite value, replaced by the caller)."""
    y_p, dt_p, y_new_p, *ks_p = ls.prev
    safe = torch.where(dt_p > 0, dt_p, 1.0)
    theta = 1.0 + offset / safe
    if m.tableau.dense:
        return TableauInterpolant(0.0, safe, y_p, ks_p, m.tableau).evaluate(theta)
    return HermiteInterpolant(0.0, safe, y_p, y_new_p, ks_p[0], ks_p[-1]).evaluate(theta)


def _newton(m: Any, fi: Any, ti: Tensor, r: Tensor, z: Tensor, hg_col: Tensor,
            ls: LaneNewtonState, scale: Tensor, kappa: Tensor, floor: Tensor, run: Tensor,
            refreshable: Tensor, hint: Tensor, counts: ImplicitCounts
            ) -> tuple[Tensor, Tensor, Tensor, bool]:
    """Simplified Newton for ``z = r + hγ fi(ti, z)`` on the lanes ``run``, each with the
    joint stepper's tests; returns ``(z, worst rate, failed, any lane still alive)``."""
    eta = torch.where(hint > 0, hint / (1.0 - hint), math.inf)
    inv_sqrt_n = 1.0 / math.sqrt(max(z.shape[1], 1))
    m_max = m.max_newton_iters
    prev = None
    theta_max = torch.zeros_like(kappa)
    iterating = run
    failed = torch.zeros_like(run)
    for it in range(m_max):
        residual = r + hg_col * fi(ti, z) - z  # −G(z)
        dz = torch.linalg.lu_solve(ls.lu, ls.piv, residual.unsqueeze(-1)).squeeze(-1)
        _count(counts, "n_newton_iters", iterating)
        norm = torch.linalg.vector_norm(dz / scale, dim=-1).double() * inv_sqrt_n
        finite = torch.isfinite(norm)
        at_floor = finite & (norm <= floor)
        fail = ~finite
        if prev is not None:
            theta = norm / prev
            measured = iterating & finite & ~at_floor
            theta_max = torch.where(measured, torch.maximum(theta_max, theta), theta_max)
            diverging = measured & (theta >= 1.0)
            eta = torch.where(measured, theta / (1.0 - theta), eta)
            slow = (measured & ~diverging & refreshable
                    & (theta ** (m_max - 1 - it) / (1.0 - theta) * norm > kappa))
            fail = fail | diverging | slow
        fail = iterating & fail
        step = iterating & ~fail
        z = torch.where(step[:, None], z + dz, z)
        converged = step & (at_floor | (eta * norm <= kappa))
        failed = failed | fail
        iterating = iterating & ~fail & ~converged
        prev = norm
        more, alive = _flags(iterating, run & ~failed)
        if not more:
            return z, theta_max, failed, alive
    failed = failed | iterating
    return z, theta_max, failed, _flags(run & ~failed)[0]


def _attach(m: Any, f: Any, fi: Any, ti: Tensor, z_star: Tensor, r: Tensor,
            hg: Tensor) -> Tensor:
    """``z*`` with the implicit-function-theorem derivative per lane (the joint stepper's
    ``_attach`` with ``(B, n, n)`` Jacobians)."""
    hg_col = hg.to(z_star.dtype)[:, None]
    g = z_star - r - hg_col * fi(ti, z_star)
    if not g.requires_grad:
        return z_star
    z_out = z_star - (g - g.detach())

    def hook(v: Tensor) -> Tensor:
        with torch.no_grad():
            jac, _ = autodiff_jacobian(f, ti, z_star, ImplicitCounts(), with_time=False)
            n = z_star.shape[1]
            eye = torch.eye(n, dtype=jac.dtype, device=jac.device)
            lu, piv, _ = torch.linalg.lu_factor_ex(eye - hg_col[:, :, None] * jac)
            return torch.linalg.lu_solve(lu, piv, v.unsqueeze(-1), adjoint=True).squeeze(-1)

    z_out.register_hook(hook)
    return z_out
