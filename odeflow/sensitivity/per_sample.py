"""Checkpointed and adjoint gradients of a ``per_sample`` solve.

* ``checkpoint``: the forward loop runs without a graph and keeps, per iteration, each
  sample's start time, attempted step, start state and accept mask
  (:class:`~odeflow.integrate_per_sample.IterRecord`), and where outputs and events were
  taken. Backward replays the iterations newest first under autograd, one batched step
  each, so the gradient is that of the same discrete solution ``gradient="direct"``
  differentiates (equal to rounding).
* ``adjoint``: backward solves, for every sample at once and each on its own interval, the
  augmented system ``(y, a)`` backwards with the per-sample loop (``dy/dτ = f``,
  ``da/dτ = -a ∂f/∂y``), starting from the forward outputs and adding ``∂L/∂y`` at each
  output time. The parameter gradient ``-∫ a ∂f/∂θ dτ`` is summed over the samples: it
  never feeds back into ``y`` or ``a``, so it is integrated as a quadrature with the
  accepted steps' own stages (one batched vector–Jacobian product per accepted
  iteration) and left out of the error control (the seminorm of Kidger, Chen & Lyons,
  ICML 2021).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..integrate_per_sample import (
    BatchFunc,
    IterRecord,
    PerSampleConfig,
    PerSampleResult,
    run_per_sample,
)
from ..options import make_controller, max_steps, positive_float
from ..solvers.explicit_rk import ExplicitRK
from ..stats import SolveError, SolveStats, Status

__all__ = ["attach_checkpoint", "attach_adjoint", "check_adjoint_config",
           "shift_initial_states", "attach_output_times"]


# ------------------------------------------------------------------------------ checkpoint
class _Replay(torch.autograd.Function):
    @staticmethod
    def forward(ctx, payload, y0: Tensor, *params: Tensor):  # type: ignore[override]
        f, rk, grid, records, ys, y_last, event_sel, stats, failed = payload
        ctx.payload = (f, rk, grid, records, event_sel, stats, failed)
        ctx.save_for_backward(*params)
        return ys.clone(), y_last.clone()

    @staticmethod
    def backward(ctx, grad_ys: Tensor, grad_last: Tensor):  # type: ignore[override]
        f, rk, grid, records, event_sel, stats, failed = ctx.payload
        params = ctx.saved_tensors
        nfe_before = f.counter.nfe
        # Outputs never reached carry no gradient; samples that failed get none (and are
        # replayed from their start state, with no step, so that no inf or nan of theirs
        # meets the zero gradient torch.where gives them).
        keep = ~failed[:, None]
        grad_ys = torch.where(keep, torch.nan_to_num(grad_ys), 0.0)
        grad_last = torch.where(keep, torch.nan_to_num(grad_last), 0.0)
        y_start = records[0].y if records else None
        # y_last is the state after the last iteration, except at events (injected there).
        adj = grad_last.clone()
        if event_sel is not None:
            adj[event_sel] = 0
        param_grads: list[Tensor | None] = [None] * len(params)
        for rec in reversed(records):
            with torch.enable_grad():
                y = torch.where(keep, rec.y, y_start).detach().requires_grad_(True)
                dt = torch.where(failed, 0.0, rec.dt)
                y_new, f_new, K, t_new = _replay_step(f, rk, rec, y, dt)
                targets = [torch.where(rec.ok[:, None], y_new, y)]
                grads = [adj]
                for sel, j, theta in rec.outputs:
                    targets.append(_value_at(rk, rec, dt, y, y_new, K, f_new, t_new, grid,
                                             sel, j, theta))
                    grads.append(grad_ys[j, sel])
                if rec.events is not None:
                    sel, theta = rec.events
                    th = torch.ones_like(rec.t)
                    th[sel] = theta
                    if rk.steps_to_outputs:  # located by re-stepping (dopri8)
                        y_ev = rk.step_batch(f, rec.t, y, K[0], th * dt)[0]
                    else:
                        y_ev = rk.batch_evaluate(y, y_new, K, f_new, dt, th)
                    y_ev = torch.where((th == 1.0)[:, None], y_new, y_ev)
                    targets.append(y_ev[sel])
                    grads.append(grad_last[sel])
                got = torch.autograd.grad(targets, (y, *params), grads, allow_unused=True)
            adj = got[0] if got[0] is not None else torch.zeros_like(adj)
            for i, g in enumerate(got[1:]):
                if g is not None:
                    param_grads[i] = g if param_grads[i] is None else param_grads[i] + g
        stats.nfe_backward += f.counter.nfe - nfe_before
        stats.n_steps_backward += len(records)
        return (None, adj + grad_ys[0], *param_grads)


def _replay_step(f: BatchFunc, rk: ExplicitRK, rec: IterRecord, y: Tensor, dt: Tensor):
    f0 = f(rec.t, y, rec.f0_side)
    y_new, _, K = rk.step_batch(f, rec.t, y, f0, dt, rec.last_side)
    t_new = rec.t_new
    f_new = None
    if rk.tableau.dense is None and (rec.outputs or rec.events is not None):
        f_new = K[-1] if rk.fsal else f(t_new, y_new)
    return y_new, f_new, K, t_new


def _value_at(rk: ExplicitRK, rec: IterRecord, dt: Tensor, y: Tensor, y_new: Tensor, K: Tensor,
              f_new: Tensor | None, t_new: Tensor, grid: Tensor, sel: Tensor, j: Tensor,
              theta: Tensor) -> Tensor:
    value = rk.batch_evaluate(y[sel], y_new[sel], K[:, sel], None if f_new is None else f_new[sel],
                        dt[sel], theta)
    exact = grid[sel, j] == t_new[sel]  # the loop took y_new itself there
    return torch.where(exact[:, None], y_new[sel], value)


def attach_checkpoint(f: BatchFunc, rk: ExplicitRK, grid: Tensor, result: PerSampleResult,
                      y_last: Tensor, stats: SolveStats, y0: Tensor,
                      params: tuple[Tensor, ...], failed: Tensor) -> tuple[Tensor, Tensor]:
    """``(ys, y_last)`` of a recorded forward, differentiable by replay (``failed`` samples
    get no gradient)."""
    assert result.records is not None
    hits = result.event
    event_sel = None if hits is None else hits.found.nonzero()[:, 0]
    payload = (f, rk, grid, result.records, result.ys, y_last, event_sel, stats, failed)
    return _Replay.apply(payload, y0, *params)


# --------------------------------------------------------------------------------- adjoint
def check_adjoint_config(config: Any) -> None:
    """Reject what the per-sample adjoint cannot honour (at ``solve``, not in backward)."""
    if not config.spec.adaptive:
        raise ValueError("gradient='adjoint' with options['per_sample'] needs an adaptive "
                         f"adjoint_method, got {config.spec.name!r}")
    norm = config.options.get("norm")
    if norm is not None and norm != "seminorm":
        raise ValueError("with options['per_sample'], the adjoint always uses the seminorm "
                         "(parameter gradients are a quadrature outside error control); "
                         "adjoint_options['norm'] may only be 'seminorm'")
    for name, value in (("adjoint_rtol", config.rtol), ("adjoint_atol", config.atol)):
        if isinstance(value, Tensor):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and value >= 0):
            raise ValueError(f"with options['per_sample'], {name} must be a non-negative "
                             f"scalar (the per-sample adjoint takes no per-component "
                             f"tolerances; pass {name}=<number>), got {value!r}")


class _Augmented:
    """``(y, a)`` backwards in time for the per-sample loop, plus the parameter quadrature.

    The backward loop's time is ``s = -τ`` (``τ`` the forward's canonical time), so
    ``dy/ds = -f`` and ``da/ds = a ∂f/∂y``; ``dg/ds = a ∂f/∂θ`` is accumulated by
    :meth:`quadrature` from each accepted iteration's stages.
    """

    def __init__(self, f: BatchFunc, params: tuple[Tensor, ...], b: Tensor, n: int):
        self.f, self.params, self.b, self.n = f, params, b, n
        self.counter = f.counter
        self.stash: list[tuple[Tensor, Tensor]] = []
        self.grads: list[Tensor | None] = [None] * len(params)

    def __call__(self, s: Tensor, x: Tensor, side: Tensor | None = None) -> Tensor:
        n = self.n
        a = x[:, n:]
        with torch.enable_grad():
            y = x[:, :n].detach().requires_grad_(True)
            dy = self.f(-s, y, None if side is None else -side)
            if dy.requires_grad:
                (da,) = torch.autograd.grad(dy, y, a, retain_graph=bool(self.params),
                                            allow_unused=True)
            else:
                da = None
        if self.params and dy.requires_grad:
            self.stash.append((dy, a))
        da = torch.zeros_like(a) if da is None else da
        return torch.cat([-dy.detach(), da], 1)

    def quadrature(self, ok: Tensor, dt: Tensor) -> None:
        stash, self.stash = self.stash, []
        if not self.params or len(stash) < len(self.b) or not bool(ok.any()):
            return
        stash = stash[-len(self.b):]  # this iteration's stages, in order
        w = (dt * ok).to(self.b.dtype)[:, None]
        use = ok[:, None]  # where, not a zero weight: other samples' values may be nan
        with torch.enable_grad():
            total = sum(torch.where(use, dy * torch.where(use, self.b[i] * w * a, 0.0),
                                    0.0).sum()
                        for i, (dy, a) in enumerate(stash) if self.b[i] != 0)
            got = torch.autograd.grad(total, self.params, allow_unused=True)
        for i, g in enumerate(got):
            if g is not None:
                self.grads[i] = g if self.grads[i] is None else self.grads[i] + g


class _Adjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, payload, y0: Tensor, *params: Tensor):  # type: ignore[override]
        f, grid, ys, config, jumps, step_t, stats, failed = payload
        ctx.payload = (f, grid, config, jumps, step_t, stats, failed)
        ctx.save_for_backward(ys, *params)
        return ys.clone()

    @staticmethod
    def backward(ctx, grad_ys: Tensor):  # type: ignore[override]
        f, grid, config, jumps, step_t, stats, failed = ctx.payload
        ys, *params = ctx.saved_tensors
        params = tuple(params)
        # Samples that failed forward are left out (their start state stands in for their
        # nan outputs, so that nothing non-finite meets a zero weight).
        keep = ~failed[None, :, None]
        grad_ys = torch.where(keep, torch.nan_to_num(grad_ys), 0.0)
        ys = torch.where(keep, ys, ys[:1])
        n = ys.shape[2]
        rk = config.spec.build(config.options)
        opts = config.options
        cfg = PerSampleConfig(
            rk=rk, controller=make_controller(opts), rtol=float(config.rtol),
            atol=float(config.atol), norm=lambda x: torch.maximum(_rms(x[:, :n]),
                                                                  _rms(x[:, n:])),
            max_num_steps=max_steps(opts), first_step=positive_float(opts, "first_step", None),
            min_step=positive_float(opts, "min_step", None, allow_zero=True) or 0.0,
            max_step=positive_float(opts, "max_step", None) or math.inf)
        aug = _Augmented(f, params, rk.coefficients(ys.dtype, ys.device)[1], n)
        nfe_before = f.counter.nfe
        a = grad_ys[-1].clone()
        n_steps = 0
        for i in range(grid.shape[1] - 1, 0, -1):
            seg = torch.stack([-grid[:, i], -grid[:, i - 1]], 1)
            x0 = torch.cat([ys[i], a], 1)
            with torch.no_grad():
                result = run_per_sample(_LoopFunc(aug, f), x0, seg, cfg,
                                        jumps=None if jumps is None else -jumps,
                                        step_t=None if step_t is None else -step_t,
                                        fsal=False, stage_hook=aug.quadrature, skip=failed)
            n_steps += result.stats.n_steps
            bad = [b for b, c in enumerate(result.sample.status.tolist())
                   if Status(c) != Status.SUCCESS]
            if bad:
                st = Status(int(result.sample.status[bad[0]]))
                raise SolveError(st, float(-result.t_last[bad[0]]), (
                    f"This was the adjoint's backward solve for samples {bad[:10]}; set "
                    "adjoint_rtol/adjoint_atol/adjoint_options or use gradient='checkpoint'."),
                    result.stats)
            a = result.y_last[:, n:] + grad_ys[i - 1]
        stats.nfe_backward += f.counter.nfe - nfe_before
        stats.n_steps_backward += n_steps
        grads = [g if g is None else g.to(p.dtype) for g, p in zip(aug.grads, params)]
        grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]
        return (None, a, *grads)


class _LoopFunc:
    """Adapts :class:`_Augmented` to the loop's ``f(t, x, side)`` with the NFE counter."""

    def __init__(self, aug: _Augmented, f: BatchFunc):
        self.aug = aug
        self.counter = f.counter

    def __call__(self, t: Tensor, x: Tensor, side: Tensor | None = None) -> Tensor:
        return self.aug(t, x, side)


def _rms(x: Tensor) -> Tensor:
    return torch.linalg.vector_norm(x, dim=-1) / math.sqrt(max(x.shape[-1], 1))


def attach_adjoint(f: BatchFunc, grid: Tensor, ys: Tensor, config: Any, options: dict,
                   stats: SolveStats, y0: Tensor, params: tuple[Tensor, ...],
                   jumps: Tensor | None, step_t: Tensor | None, failed: Tensor) -> Tensor:
    """Forward outputs ``ys`` ``(T, B, n)`` at canonical ``grid`` ``(B, T)``, differentiable
    by the per-sample adjoint (``failed`` samples get no gradient)."""
    payload = (f, grid, ys.detach(), config, jumps, step_t, stats, failed)
    return _Adjoint.apply(payload, y0, *params)


# ---------------------------------------------------------------------- output-time gradients
def _user_derivative(f: BatchFunc, t_user: Tensor, y: Tensor) -> Tensor:
    """``dy/dt`` in user time at per-sample user times ``t_user`` ``(B,)``: ``(B, n)``."""
    f.counter.nfe += 1
    return f.layout.flatten(f.user(t_user.to(y), f.layout.unflatten(y)))


def shift_initial_states(f: BatchFunc, t0: Tensor, y0: Tensor) -> Tensor:
    """``y0`` with each sample's ``t0`` dependence attached (``time_grad.py``'s rule, per
    sample): ``y0 - (t0 - stop_grad(t0)) f(t0, y0)``, the same values."""
    with torch.no_grad():
        f0 = _user_derivative(f, t0.detach(), y0.detach())
    return y0 - (t0 - t0.detach()).to(y0)[:, None] * f0


class _OutputTimes(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t: Tensor, ys: Tensor, f: BatchFunc, stats: SolveStats):  # type: ignore[override]
        ctx.f, ctx.stats = f, stats
        ctx.save_for_backward(t, ys.detach())
        return ys.view_as(ys)

    @staticmethod
    def backward(ctx, grad_ys: Tensor):  # type: ignore[override]
        t, ys = ctx.saved_tensors
        f: BatchFunc = ctx.f
        grad_t = None
        if ctx.needs_input_grad[0]:
            n_t = ys.shape[0]
            grid = t if t.ndim == 2 else t.expand(f.batch, -1)
            rows = []
            with torch.no_grad():
                for j in range(n_t):
                    dy = _user_derivative(f, grid[:, j].detach(), ys[j])
                    rows.append((torch.nan_to_num(grad_ys[j]) * dy).sum(-1))
            ctx.stats.nfe_backward += n_t
            g = torch.stack(rows, 1).to(t)  # (B, T)
            grad_t = g if t.ndim == 2 else g.sum(0)
        return grad_t, grad_ys, None, None


def attach_output_times(f: BatchFunc, t: Tensor, ys: Tensor, stats: SolveStats) -> Tensor:
    """``ys`` ``(T, B, n)`` whose backward also gives ``∂L/∂t[b, j] = <∂L/∂ys[j, b],
    f_b(t[b, j], ys[j, b])>`` (summed over samples for a shared 1-D ``t``)."""
    return _OutputTimes.apply(t, ys, f, stats)
