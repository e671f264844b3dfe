"""Adaptive loop for a batch of independent problems, each with its own step size.

``options={"per_sample": True}`` treats the leading dimension of ``y0`` as independent
initial value problems sharing ``func`` and the output times. Every sample has its own
time, step size and accept/reject decision, so a stiff or fast sample does not force
small steps on the others. One iteration advances every unfinished sample by one attempt;
decisions are ``torch.where`` masks, and the loop synchronises with the host once per
iteration (to learn which output times were passed and whether all are done).

``func(t, y)`` then receives ``t`` of shape ``(batch,)`` (each sample's time, the state's
real dtype) and ``y`` of shape ``(batch, *rest)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .controllers import PIDController, starting_step
from .problem import Problem
from .stats import SolveError, SolveStats, Status

__all__ = ["integrate_per_sample"]


def integrate_per_sample(problem: Problem, stepper: Any, controller: PIDController,
                         max_num_steps: int, first_step: float | None) -> tuple[Tensor, SolveStats]:
    """Solve each sample of the batch with its own steps; returns outputs ``(T, n)`` flat."""
    layout = problem.layout
    if layout.is_tuple or layout.is_complex or len(layout.shapes[0]) < 1:
        raise ValueError("options['per_sample'] needs y0 to be a real tensor with a batch "
                         "dimension first")
    if not isinstance(problem.rtol, float) or not isinstance(problem.atol, float):
        raise ValueError("options['per_sample'] supports scalar rtol/atol only")
    tab = stepper.tableau
    shape = layout.shapes[0]
    batch = shape[0]
    y = problem.y0.view(batch, -1)
    dtype, device = y.dtype, y.device
    t_out = problem.t_out
    n_out = len(t_out)
    t0, t_end = t_out[0], t_out[-1]
    stats = SolveStats()
    out = [y]
    if n_out == 1:
        return torch.stack([o.reshape(-1) for o in out]), stats

    user = problem.user_func
    sign = problem.sign
    counter = problem.func

    def f(t: Tensor, x: Tensor) -> Tensor:
        counter.nfe += 1
        res = user((sign * t).to(dtype), x.view(shape))
        if res.shape != shape:
            raise ValueError(f"func(t, y) must return shape {tuple(shape)}, got {tuple(res.shape)}")
        res = res.reshape(batch, -1)
        return res if sign > 0 else -res

    rtol, atol = problem.rtol, problem.atol
    s = tab.stages
    c = torch.tensor(tab.c, dtype=torch.float64, device=device)
    a_rows = [torch.tensor(row, dtype=dtype, device=device) if row else None for row in tab.a]
    b = torch.tensor(tab.b, dtype=dtype, device=device)
    b_err = torch.tensor(tab.b_err, dtype=dtype, device=device)
    k = tab.error_order + 1
    t = torch.full((batch,), t0, dtype=torch.float64, device=device)
    f0 = f(t, y)
    if first_step is None:
        # The Hairer–Nørsett–Wanner starting step, one per sample (one batched evaluation).
        dt = starting_step(lambda h0: f(t + h0, y + h0.to(dtype)[:, None] * f0), y, f0,
                           tab.error_order, rtol, atol, _rms)
    else:
        dt = torch.full((batch,), first_step, dtype=torch.float64, device=device)
    ys = [y.new_full((batch, y.shape[1]), math.nan) for _ in range(n_out - 1)]
    t_end_t = torch.full_like(t, t_end)
    active = torch.ones(batch, dtype=torch.bool, device=device)
    safety, ifactor, dfactor = controller.safety, controller.ifactor, controller.dfactor
    grad = torch.is_grad_enabled()
    K = y.new_empty((s, batch, y.shape[1]))
    while True:
        if stats.n_steps >= max_num_steps:
            stats.status = Status.MAX_STEPS_REACHED
            raise SolveError(Status.MAX_STEPS_REACHED, float("nan"),
                             f"Raise options['max_num_steps'] (now {max_num_steps}).", stats)
        dt_try = torch.minimum(dt, t_end_t - t)
        land = (t + 1.01 * dt_try >= t_end_t)
        dt_try = torch.where(land, t_end_t - t, dt_try)
        dt_try = torch.where(active, dt_try, torch.zeros_like(dt_try))
        h = dt_try.to(dtype)[:, None]
        if grad:
            # Under autograd the stages must not be written into a reused buffer.
            ks = [f0]
            for i in range(1, s):
                y_i = y + h * torch.einsum("j,jbn->bn", a_rows[i], torch.stack(ks))
                ks.append(f(t + c[i] * dt_try, y_i))
            K = torch.stack(ks)
        else:
            K[0] = f0
            for i in range(1, s):
                y_i = y + h * torch.einsum("j,jbn->bn", a_rows[i], K[:i])
                K[i] = f(t + c[i] * dt_try, y_i)
        y_new = y_i if tab.fsal else y + h * torch.einsum("j,jbn->bn", b, K)
        with torch.no_grad():
            err = h * torch.einsum("j,jbn->bn", b_err, K)
            scale = torch.maximum(y.abs(), y_new.abs()) * rtol + atol
            ratio = _rms(err / scale)
        ok = (ratio <= 1.0) & active
        stats.n_steps += 1
        t_new = torch.where(land, t_end_t, t + dt_try)
        still_active = active & ~(ok & land)
        # host sync: one small transfer per iteration decides outputs and termination
        info = torch.stack([
            torch.where(ok, t_new, torch.full_like(t_new, -math.inf)).max(),
            torch.where(active, t, torch.full_like(t, math.inf)).min(),
            still_active.any().double(),
            (active & ~ok & ~torch.isfinite(ratio)).any().double(),
            (active & (dt_try <= 4 * torch.finfo(torch.float64).eps * t.abs())).any().double(),
            ok.sum().double(),
            (active & ~ok).sum().double(),
        ]).tolist()
        max_t_new, min_t, any_left, nonfinite, underflow, n_ok, n_bad = info
        stats.n_accepted += int(n_ok)
        stats.n_rejected += int(n_bad)
        if underflow:
            status = Status.NONFINITE if nonfinite else Status.STEP_SIZE_UNDERFLOW
            stats.status = status
            raise SolveError(status, min_t, "at least one sample could not take a step "
                             "(non-finite values from func, or a step below time resolution).",
                             stats)
        f_new = K[s - 1] if tab.fsal else f(t_new, y_new)
        j = 1
        while j < n_out and t_out[j] <= min_t:
            j += 1
        while j < n_out and t_out[j] <= max_t_new:
            tj = t_out[j]
            hit = ok & (t < tj) & (tj <= t_new)
            theta = (tj - t) / torch.where(dt_try > 0, dt_try, torch.ones_like(dt_try))
            value = _dense(tab, y, y_new, K, f0, f_new, h, theta.to(dtype))
            value = torch.where((t_new == tj)[:, None], y_new, value)
            ys[j - 1] = torch.where(hit[:, None], value, ys[j - 1])
            j += 1
        y = torch.where(ok[:, None], y_new, y)
        t = torch.where(ok, t_new, t)
        f0 = torch.where(ok[:, None], f_new, f0)
        active = still_active
        if not any_left:
            break
        # Per-sample integral controller, as PIDController with beta = (1, 0, 0).
        safe_ratio = torch.where(torch.isfinite(ratio), ratio, torch.full_like(ratio, math.inf))
        factor = safety * safe_ratio.clamp(min=1e-10) ** (-1.0 / k)
        factor = torch.where(ok, factor.clamp(min=1.0, max=ifactor),
                             factor.clamp(min=dfactor, max=1.0))
        dt = torch.where(active, dt_try * factor.double(), dt)
    full = torch.stack([problem.y0.view(batch, -1)] + ys)
    return full.reshape(n_out, -1), stats


def _rms(x: Tensor) -> Tensor:
    return torch.linalg.vector_norm(x, dim=-1) / math.sqrt(max(x.shape[-1], 1))


def _dense(tab, y: Tensor, y_new: Tensor, K: Tensor, f0: Tensor, f_new: Tensor, h: Tensor,
           theta: Tensor) -> Tensor:
    """Dense output per sample at fraction ``theta`` (shape ``(batch,)``) of each step."""
    if tab.dense is not None:
        powers = torch.stack([theta ** (p + 1) for p in range(len(tab.dense[0]))], dim=-1)
        coeffs = torch.tensor(tab.dense, dtype=y.dtype, device=y.device)  # (s, deg)
        w = (powers.unsqueeze(1) * coeffs).sum(-1)  # (batch, s); tiny, so no BLAS call
        return y + h * torch.einsum("bs,sbn->bn", w, K)
    th = theta[:, None]
    h00 = 2 * th ** 3 - 3 * th ** 2 + 1
    h10 = th ** 3 - 2 * th ** 2 + th
    h01 = -2 * th ** 3 + 3 * th ** 2
    h11 = th ** 3 - th ** 2
    return h00 * y + h10 * h * f0 + h01 * y_new + h11 * h * f_new
