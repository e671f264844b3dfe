"""The Newton iteration of the ESDIRK stages and their cache, for a joint solve and per sample.

**Newton.** Each stage equation is solved by simplified Newton with one factorisation of
``M = I − hγ J`` (the linear solver's :class:`~odeflow.linalg.Factor`). Convergence is
monitored as in Hairer & Wanner, *Solving ODEs II*, §IV.8: with the rate
``θ = ‖Δ_m‖ / ‖Δ_{m−1}‖`` and ``η = θ / (1 − θ)``, the stage has converged when
``η ‖Δ_m‖ ≤ κ`` — only with a rate *measured* with this step's factor: from the second
iteration on, or at the first with the worst rate measured in the earlier stages of the same
step (same ``J`` and ``M``: the rate of simplified Newton is mostly their mismatch with
``f``, the largest measured one an upper estimate; rates of updates at the rounding floor
do not count). A rate guessed from an earlier *step* (RADAU5's ``η_old^0.8``) is never used:
a stage then inherited a tiny guess and was accepted after a single update of hundreds of
tolerance units (van der Pol μ = 1000 ended 1640 tolerances off). ``‖·‖`` is the RMS norm
of the update scaled by ``atol + rtol |y|`` (``1`` is the solve's tolerance) and
``κ = newton_kappa`` (default ``1e-3``: the Newton error of the last stage is part of
``y_new``, keeps its sign from step to step and so adds up like local truncation error, and
the measured rate underestimates it; with ``1e-2`` van der Pol μ = 1000 ended 11
tolerances off against 0.1; raised to ``10 ε max |y| / scale`` when that is larger, so
float32 and very tight tolerances do not chase rounding noise). The iteration fails when
``θ ≥ 1``, when a non-finite value appears, when the remaining iterations cannot reach
``κ`` at the current rate (``θ^(m_max − m) / (1 − θ) ‖Δ_m‖ > κ``), or after
``max_newton_iters`` iterations.

**Per sample** (``t`` and ``dt`` ``(B,)``, ``y`` ``(B, n)``) the same code takes, for every
lane, the decisions a solve of that sample alone takes: a joint solve's Python ``bool`` or
``float`` (a convergence test, a rate, "``J`` is current") is a ``(B,)`` tensor, combined
by the same ``&``, ``|`` and ``>`` (``a > b``: ``a`` and not ``b``, for both) and chosen by
:func:`_where`. Only the tests inside one Newton
iteration are written twice, as masks and as Python numbers that return early: the hot path
of a joint solve (one host synchronisation per iteration, no mask kernels; written once
with masks they cost a joint solve 9–14 % of its time, on Python numbers 4 % of a Newton
call). ``J`` is ``(B, n, n)`` and ``M`` a batch of LUs, refactorised only for the lanes that
need it. What a joint solve decides by object identity (``J`` computed at this ``y``; the
step ended at this ``y`` with this ``f0``), a lane decides by its time (it changes exactly
when the lane accepts a step) and ``f0``'s value. Counters count lanes (one adds a mask:
a ``(B,)`` tensor, no host sync), so a batch reports the sum of its samples' solves. Lanes
with ``dt = 0`` and lanes whose Newton iteration failed for good stay at ``y``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..interp import combine
from ..linalg import DenseFactor, ImplicitCounts

__all__ = ["ESDIRKState", "newton", "newton_tests"]


@dataclass
class ESDIRKState:
    """What an ESDIRK solve carries from step to step (a mutable cache, see
    :mod:`odeflow.solvers.esdirk`). Per sample every decision field is ``(B,)``."""

    counts: ImplicitCounts
    jac: Any = None  # J = ∂f/∂y (dense tensor, (B, n, n) per sample; Krylov: its point)
    # where J was computed: the state object (joint, identity test) or each lane's time
    jac_at: Any = None
    factor: Any = None  # the factorised M = I − hγ J (factor.h_gamma: its hγ)
    refresh_jac: Any = True  # compute J at the next step's start (none yet, slow convergence)
    # The stage predictor's memory (esdirk's docstring, "Predictors"): the last completed
    # attempt and the step that ends at the current point, [y, dt, y_new, k_1..k_s]. Joint:
    # ``y_new`` and ``k_s`` the loop's own tensors (identity tests); per sample detached,
    # with the attempt's start and the step's end times.
    pending: Any = None
    previous: Any = None
    pending_t: Tensor | None = None
    previous_t: Tensor | None = None
    # Per sample J is counted per lane (``counts``); this keeps the Jacobian's fallbacks
    # (a func autograd cannot vmap) from one refresh to the next.
    jac_modes: ImplicitCounts = field(default_factory=ImplicitCounts)

    def init_lanes(self, y: Tensor, stages: int) -> None:
        """The per-lane cache before the first step: no ``J``, no factor (``nan`` times and
        ``hγ``), no predictor memory."""
        B, n = y.shape
        nan = torch.full((B,), math.nan, dtype=torch.float64, device=y.device)
        eye = torch.eye(n, dtype=y.dtype, device=y.device).expand(B, n, n).clone()
        piv = torch.arange(1, n + 1, dtype=torch.int32, device=y.device).expand(B, n).clone()
        self.jac, self.jac_at = y.new_zeros(B, n, n), nan.clone()
        self.factor = DenseFactor(eye, piv, nan.clone())
        self.refresh_jac = torch.ones(B, dtype=torch.bool, device=y.device)
        memory = [y.new_zeros(y.shape) for _ in range(stages + 3)]
        memory[1] = torch.ones(B, dtype=torch.float64, device=y.device)
        self.pending, self.previous = memory, [m.clone() for m in memory]
        self.pending_t, self.previous_t = nan.clone(), nan.clone()


def _where(mask: Any, a: Any, b: Any) -> Any:
    """``a`` on the lanes of ``mask``, else ``b`` (a joint solve's ``mask`` is a bool)."""
    if isinstance(mask, Tensor):
        ref = a if isinstance(a, Tensor) else b
        if isinstance(ref, Tensor) and ref.ndim > 1:
            mask = mask.reshape(-1, *([1] * (ref.ndim - 1)))
        return torch.where(mask, a, b)
    return a if mask else b


def _too_slow(theta: Any, left: int, norm: Any, kappa: Any) -> Any:
    """``θ^left / (1 − θ) ‖Δ‖ > κ``: the iterations left cannot reach ``κ`` at this rate (fail
    now and refresh ``J`` or ``M``); read only where ``θ < 1``."""
    return theta ** left / (1.0 - theta) * norm > kappa


def _any(mask: Any) -> bool:
    return bool(mask.any()) if isinstance(mask, Tensor) else mask  # per sample: host sync


def _sum(y: Tensor | None, ks: Sequence[Tensor], nz: Any, h: Any) -> Tensor:
    """``y + h Σ_j w_j k_j`` (``y`` may be ``None``; per sample ``h`` is a ``(B, 1)`` column)."""
    if not isinstance(h, Tensor):
        return combine(y, ks, nz, h)
    terms = [ks[j] * (w * h) for j, w in nz]
    acc = sum(terms[1:], terms[0])  # (summed in order, as combine does)
    return acc if y is None else y + acc


def newton_tests(y_d: Tensor, rtol: Any, atol: Any, kappa: float, lanes: bool) -> tuple:
    """``(scale, κ, floor)`` of Newton's tests at ``y``: ``scale = atol + rtol |y|`` is the
    unit of its norm; ``floor`` is ten times the rounding noise of ``y`` in that unit (an
    update that small has converged whatever the rate says); ``κ`` is raised to it where the
    tolerance is tighter than the precision. Per sample ``κ`` and ``floor`` are ``(B,)``."""
    rtol, atol = (x.to(y_d) if isinstance(x, Tensor) else x for x in (rtol, atol))
    # A zero scale (rtol = atol = 0 somewhere) would divide by zero: use the tiniest.
    scale = (y_d.abs() * rtol + atol).clamp_min(torch.finfo(y_d.dtype).tiny)
    eps = torch.finfo(y_d.dtype).eps
    if lanes:
        floor = (10.0 * eps) * (y_d.abs() / scale).amax(-1).double()
        return scale, floor.clamp(min=kappa), floor
    floor = 10.0 * eps * float((y_d.abs() / scale).max()) if y_d.numel() else 0.0
    return scale, max(kappa, floor), floor


def newton(fi: Any, ti: Any, r: Tensor, z: Tensor, hg: Any, hgc: Any, factor: Any,
           tests: tuple, counts: ImplicitCounts, run: Any, exact: Any, hint: Any,
           m_max: int) -> tuple:
    """Simplified Newton for ``z = r + hγ fi(ti, z)`` (no graph) on the lanes ``run``;
    returns ``(z, the step's worst rate: hint's and this stage's, failed)``."""
    scale, kappa, floor = tests
    lanes = isinstance(run, Tensor)
    eta = _where(hint > 0, hint / (1.0 - hint), math.inf)  # hint < 1: a converged rate
    inv_sqrt_n = 1.0 / math.sqrt(max(z.shape[-1], 1))
    prev = None
    theta_max = hint
    iterating, failed = run, run & False
    for m in range(m_max):
        fz = fi(ti, z)
        if not lanes:  # the same tests on Python numbers, returning early (the hot path)
            dz = factor.solve(torch.add(r, fz, alpha=hg).sub_(z))  # −G(z)
            counts.n_newton_iters += 1
            norm = float(torch.linalg.vector_norm(dz / scale)) * inv_sqrt_n  # host sync
            if not math.isfinite(norm):
                return z, theta_max, True
            if norm <= floor:
                return z + dz, theta_max, False
            if prev is not None:
                theta = norm / prev
                theta_max = max(theta_max, theta)
                if theta >= 1.0 or (not exact and _too_slow(theta, m_max - 1 - m, norm,
                                                            kappa)):
                    return z, theta_max, True
                eta = theta / (1.0 - theta)
            z = z + dz
            if eta * norm <= kappa:
                return z, theta_max, False
            prev = norm
            continue
        dz = factor.solve(r + hgc * fz - z)
        counts.n_newton_iters += iterating
        norm = torch.linalg.vector_norm(dz / scale, dim=-1).double() * inv_sqrt_n
        finite = torch.isfinite(norm)
        at_floor = finite & (norm <= floor)  # at the rounding noise: converged
        fail = ~finite
        if prev is not None:
            theta = norm / prev
            measured = iterating & finite & ~at_floor
            theta_max = torch.where(measured, torch.maximum(theta_max, theta), theta_max)
            diverging = measured & (theta >= 1.0)
            rated = measured & ~diverging
            eta = torch.where(rated, theta / (1.0 - theta), eta)
            slow = (rated & _too_slow(theta, m_max - 1 - m, norm, kappa)) > exact
            fail = fail | diverging | slow
        fail = iterating & fail
        stepping = iterating & ~fail
        z = torch.where(stepping[:, None], z + dz, z)
        converged = stepping & (at_floor | (eta * norm <= kappa))
        failed = failed | fail
        iterating = iterating & ~(fail | converged)
        prev = norm
        if not iterating.any():  # host sync
            return z, theta_max, failed
    return z, theta_max, failed | iterating
