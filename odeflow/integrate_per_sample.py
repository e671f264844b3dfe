"""Adaptive loop for a batch of independent problems, each with its own steps and times.

``options={"per_sample": True}`` treats the leading dimension of ``y0`` as independent
initial value problems sharing ``func``. Every sample has its own time, step size,
accept/reject decision, output times (a ``t`` of shape ``(B, T)``), stop times
(``jump_t``/``step_t``), statistics and outcome, so a stiff or fast sample neither forces
small steps on the others nor fails them. It is the joint loop of ``integrate.py`` with
tensors for ``t``, ``dt``, status and masks: one iteration advances every unfinished
sample by one attempt; decisions are ``torch.where`` masks; the step-size rule is the
controller's own (:meth:`~odeflow.controllers.PIDController.propose_tensor`) and the
starting step the shared :func:`~odeflow.controllers.starting_step`; the state layout,
``func`` wrapper, stepper and norms are in :mod:`odeflow.batch`. The loop
synchronises with the host once per iteration (to learn which output times were passed and
whether anything is left), plus once per output pass.

``func(t, y)`` receives ``t`` of shape ``(B,)`` (each sample's time, the state's real
dtype) and ``y`` of shape ``(B, *rest)`` (or a tuple of such); the solver assumes that
sample ``b``'s derivative depends on ``t[b]`` and ``y[b]`` only.

Time is canonical per sample: sample ``b`` integrates ``s_b * t`` forward, where ``s_b``
is the direction of its own output times.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .batch import (
    BatchFunc,
    SampleLayout,
    batched_norm,
    batched_rms,
    compiled_error_control,
    compiled_step,
    error_control,
)
from .controllers import PIDController, starting_step
from .solvers.explicit_rk import ExplicitRK
from .stats import SolveError, SolveStats, Status

__all__ = ["SampleStats", "SampleLayout", "BatchFunc", "PerSampleConfig",
           "PerSampleResult", "IterRecord", "run_per_sample", "batched_rms", "batched_norm",
           "raise_failures", "FAILURES", "integrate_per_sample"]

#: The statuses that make a sample a failure (``NO_EVENT`` is an outcome, not a failure).
FAILURES = (Status.MAX_STEPS_REACHED, Status.STEP_SIZE_UNDERFLOW, Status.NONFINITE)


@dataclass
class SampleStats:
    """Per-sample statistics of a ``per_sample`` solve (``Solution.sample_stats``).

    Attributes:
        status: ``(B,)`` int64: each sample's :class:`~odeflow.Status` code
            (``Status(int(status[b]))``).
        n_steps: ``(B,)`` step attempts of each sample.
        n_accepted: ``(B,)`` accepted steps.
        n_rejected: ``(B,)`` rejected steps.
    """

    status: Tensor
    n_steps: Tensor
    n_accepted: Tensor
    n_rejected: Tensor

    def statuses(self) -> list[Status]:
        """The statuses as :class:`~odeflow.Status` members."""
        return [Status(v) for v in self.status.tolist()]


@dataclass(frozen=True)
class PerSampleConfig:
    """The adaptive loop's settings (validated by the caller)."""

    rk: ExplicitRK
    controller: PIDController
    rtol: float | Tensor  # a scalar, or one value per column of the (B, n) state
    atol: float | Tensor
    norm: Callable[[Tensor], Tensor]  # (B, n) -> (B,)
    max_num_steps: int
    first_step: float | None = None
    min_step: float = 0.0
    max_step: float = math.inf
    compile: bool = False  # torch.compile the stage loop of no-grad solves


@dataclass
class IterRecord:
    """One iteration of the loop, kept for the checkpointed gradient's replay."""

    t: Tensor  # (B,) canonical start times
    dt: Tensor  # (B,) attempted steps (0 for inactive samples)
    t_new: Tensor  # (B,) the steps' end times (a stop time itself when landing on one)
    y: Tensor  # (B, n) start states
    ok: Tensor  # (B,) accepted
    last_side: Tensor | None  # (B,) -1 where the step ends on a jump, else None
    f0_side: Tensor | None  # (B,) +1 where f0 was evaluated right of a jump
    outputs: list[tuple[Tensor, Tensor, Tensor]] = field(default_factory=list)
    # (sample index, output index, theta) of each output written in this iteration
    events: tuple[Tensor, Tensor] | None = None  # (sample index, theta) of located events


@dataclass
class PerSampleResult:
    ys: Tensor  # (T, B, n); nan where a sample never reached the output
    t_last: Tensor  # (B,) canonical time each sample reached
    y_last: Tensor  # (B, n)
    stats: SolveStats
    sample: SampleStats
    records: list[IterRecord] | None = None
    event: Any = None  # the event tracker's hits (events_per_sample.EventHits)


def _stop_matrix(grid: Tensor, extra: list[tuple[Tensor, bool]]) -> tuple[Tensor, Tensor]:
    """Sorted per-sample stop times strictly inside each row's span, then its end; and
    whether each is a jump. ``extra``: ``(times (B, K), is_jump)`` pairs."""
    t0, t_end = grid[:, :1], grid[:, -1:]
    vals = [t_end]
    flags = [torch.zeros_like(t_end, dtype=torch.bool)]
    for times, is_jump in extra:
        inside = (times > t0) & (times < t_end)
        vals.append(torch.where(inside, times, math.inf))
        flags.append(torch.full_like(times, is_jump, dtype=torch.bool) & inside)
    v = torch.cat(vals, 1)
    fl = torch.cat(flags, 1)
    while True:
        v, order = v.sort(dim=1)
        fl = fl.gather(1, order)
        dup = (v[:, 1:] == v[:, :-1]) & torch.isfinite(v[:, 1:])
        if not bool(dup.any()):  # host sync: setup only
            return v, fl
        fl[:, :-1] |= dup & fl[:, 1:]
        v[:, 1:] = torch.where(dup, math.inf, v[:, 1:])


def _ulp(x: Tensor) -> Tensor:
    return torch.nextafter(x, torch.full_like(x, math.inf)) - x


def run_per_sample(
    f: BatchFunc,
    y0: Tensor,
    grid: Tensor,
    cfg: PerSampleConfig,
    *,
    jumps: Tensor | None = None,
    step_t: Tensor | None = None,
    record: bool = False,
    event: Any = None,
    fsal: bool = True,
    stage_hook: Callable[[Tensor, Tensor], None] | None = None,
    skip: Tensor | None = None,
    dense: list | None = None,
    progress: Any = None,
) -> PerSampleResult:
    """Solve every sample from ``grid[:, 0]`` to ``grid[:, -1]`` with outputs at ``grid``.

    Args:
        f: the batched canonical derivative.
        y0: ``(B, n)`` initial states.
        grid: ``(B, T)`` float64 canonical output times, each row strictly increasing.
        cfg: tolerances, controller, norm and step limits.
        jumps, step_t: ``(B, K)`` canonical stop times (``inf`` pads), or ``None``.
        record: keep an :class:`IterRecord` per iteration (checkpointed gradient).
        event: an ``events_per_sample.EventTracker`` or ``None``.
        fsal: reuse the last stage as the next first stage (``False``: evaluate ``f`` at
            the start of every iteration, so each iteration's stage calls are its own).
        stage_hook: called as ``stage_hook(accepted, dt)`` after each iteration's decision,
            before any other evaluation (the adjoint's parameter quadrature).
        skip: ``(B,)`` samples not to solve (they keep ``y0``; the adjoint's failed ones).
        progress: a :class:`~odeflow.progress.Progress` over ``[0, 1]``, updated with the mean
            fraction of the samples' spans done (one extra host sync per iteration).
        dense: a list that receives, per iteration with an accepted sample, the detached
            ``(t, dt, ok, y, y_new, stages, f_new)`` of the batched interpolant.

    Failures (too many steps, step-size underflow, non-finite values) end the failing
    sample only; its status says why and its later outputs stay ``nan``.
    """
    rk = cfg.rk
    B, n_out = grid.shape
    dtype, device = y0.dtype, y0.device
    stats = SolveStats()
    zeros_l = torch.zeros(B, dtype=torch.long, device=device)
    status = torch.full((B,), int(Status.SUCCESS), dtype=torch.long, device=device)
    n_steps, n_acc, n_rej = zeros_l.clone(), zeros_l.clone(), zeros_l.clone()
    ys = y0.new_full((n_out, B, y0.shape[1]), math.nan)
    ys[0] = y0
    records: list[IterRecord] | None = [] if record else None
    t = grid[:, 0].clone()
    t_end = grid[:, -1]
    y = y0
    if n_out == 1:
        sample = SampleStats(status, n_steps, n_acc, n_rej)
        return PerSampleResult(ys, t, y, stats, sample, records)

    extra = []
    if jumps is not None:
        extra.append((jumps, True))
    if step_t is not None:
        extra.append((step_t, False))
    if rk.steps_to_outputs and n_out > 2:
        extra.append((grid[:, 1:-1], False))
    stops, stop_is_jump = _stop_matrix(grid, extra)
    stop_idx = zeros_l.clone()
    out_idx = torch.ones(B, dtype=torch.long, device=device)
    rtol, atol, norm = cfg.rtol, cfg.atol, cfg.norm
    min_step, max_step = cfg.min_step, cfg.max_step
    any_jumps = jumps is not None

    f0 = f(t, y)
    with torch.no_grad():
        f0_finite = torch.isfinite(f0).all(-1)
    active = torch.ones(B, dtype=torch.bool, device=device)
    if skip is not None:
        active &= ~skip
        f0_finite = f0_finite | skip
    status = torch.where(f0_finite, status, int(Status.NONFINITE))
    active &= f0_finite
    if cfg.first_step is None:
        dt = starting_step(lambda h0: f(t + h0, y + h0.to(dtype)[:, None] * f0), y.detach(),
                           f0.detach(), rk.tableau.error_order, rtol, atol, norm)
        dt = torch.where(torch.isfinite(dt), dt, 1e-6)
    else:
        dt = torch.full((B,), cfg.first_step, dtype=torch.float64, device=device)
    dt = dt.clamp(min=min_step, max=max_step)
    ctrl = cfg.controller.init_tensor(dt)
    buf = None if torch.is_grad_enabled() else y.new_empty((rk.stages, B, y.shape[1]))
    step = compiled_step(rk) if cfg.compile and buf is not None else rk.step_batch
    # An implicit stepper counts its Jacobians and LUs in its state (copied out at the end).
    implicit_state = rk.init(y0) if getattr(rk, "implicit", False) else None
    if implicit_state is not None:
        step = functools.partial(rk.step_batch, state=implicit_state)
    control = compiled_error_control() if cfg.compile else error_control
    f0_side: Tensor | None = None

    while True:
        if not fsal:
            f0 = f(t, y, f0_side)
        over = active & (n_steps >= cfg.max_num_steps)
        status = torch.where(over, int(Status.MAX_STEPS_REACHED), status)
        active = active & ~over
        next_stop = stops.gather(1, stop_idx[:, None])[:, 0]
        land = t + 1.01 * dt >= next_stop
        t_new = torch.where(land, next_stop, t + dt)
        dt_try = torch.where(land, next_stop - t, dt)
        under = active & (dt_try <= 4 * _ulp(torch.maximum(t.abs(), t_new.abs())))
        status = torch.where(under, int(Status.STEP_SIZE_UNDERFLOW), status)
        active = active & ~under
        dt_try = torch.where(active, dt_try, 0.0)
        on_jump = (land & active & stop_is_jump.gather(1, stop_idx[:, None])[:, 0]
                   if any_jumps else None)
        last_side = None if on_jump is None else -on_jump.long()
        y_new, err, K = step(f, t, y, f0, dt_try, last_side, buf)
        with torch.no_grad():
            ratio, finite, ok, new_dt, new_ctrl = control(
                y, y_new, err, rtol, atol, norm, active, dt_try, min_step, cfg.controller,
                rk.error_order + 1, ctrl)
            bad = active & ~ok
            n_steps += active
            n_acc += ok
            n_rej += bad
            # A non-finite error: fail if f0 itself is not finite, or the step is tiny.
            dead = bad & ~finite & (~torch.isfinite(f0).all(-1)
                                    | (dt_try <= 16e3 * _ulp(torch.clamp(t.abs(), min=1.0))))
            status = torch.where(dead, int(Status.NONFINITE), status)
            done = ok & land & (t_new == t_end)
            next_out = grid.gather(1, out_idx.clamp(max=n_out - 1)[:, None])[:, 0]
            hit = ok & (out_idx < n_out) & (next_out <= t_new)
            # host sync: one small transfer per iteration decides outputs and termination
            flags = torch.stack([hit.any(), (active & ~done & ~dead).any(),
                                 (ok & on_jump).any() if on_jump is not None else hit[:0].any(),
                                 (active & ~finite).any(), ok.any()])
            any_hit, any_left, any_jump, any_overflow, any_ok = flags.tolist()
        if any_overflow and y_new.requires_grad:
            # A rejected trial overflowed: its infinities would turn the zero gradient that
            # torch.where sends them into nan. Redo the step without those samples' trials.
            y_new, _, K = step(f, t, y, f0, torch.where(finite, dt_try, 0.0), last_side, buf)
        if stage_hook is not None:
            stage_hook(ok, dt_try)
        stats.n_steps += 1
        rec = None
        if records is not None:
            # Only accepted steps are replayed: rejected trials get dt = 0 (no overflow).
            rec = IterRecord(t, torch.where(ok, dt_try, 0.0), t_new, y, ok, last_side, f0_side)
            records.append(rec)
        f_new = None
        if fsal and rk.fsal:
            f_new = K[-1]
        elif fsal or (rk.tableau.dense is None and (any_hit or (event is not None and any_ok))):
            f_new = f(t_new, y_new)
        if dense is not None and any_ok:
            dense.append((t.clone(), dt_try.clone(), ok.clone(), y.detach().clone(),
                          y_new.detach().clone(), K.detach().clone(),
                          None if f_new is None else f_new.detach().clone()))
        while any_hit:
            sel = hit.nonzero()[:, 0]  # host sync: once per output pass
            # Only the samples that passed an output are interpolated.
            t_s, dt_s, tn_s = t[sel], dt_try[sel], t_new[sel]
            tj = next_out[sel]
            theta = (tj - t_s) / dt_s
            value = rk.batch_evaluate(y[sel], y_new[sel], K[:, sel], None if f_new is None
                                else f_new[sel], dt_s, theta)
            value = torch.where((tj == tn_s)[:, None], y_new[sel], value)
            ys[out_idx[sel], sel] = value
            if rec is not None:
                rec.outputs.append((sel, out_idx[sel], theta))
            out_idx = out_idx + hit
            next_out = grid.gather(1, out_idx.clamp(max=n_out - 1)[:, None])[:, 0]
            hit = ok & (out_idx < n_out) & (next_out <= t_new)
            any_hit = bool(hit.any())  # host sync: once per output pass
        if event is not None and any_ok:
            ended = event.check(f, rk, t, t_new, dt_try, ok, y, y_new, K, f_new, rec)
            if ended is not None:
                status = torch.where(ended, int(Status.EVENT), status)
                done = done | ended
                any_left = bool((active & ~done & ~dead).any())  # host sync: on an event only
        if any_jump and fsal:  # (without fsal the next f0 is evaluated on the right anyway)
            assert on_jump is not None and f_new is not None
            right = (ok & on_jump).long()
            f_right = f(t_new, y_new, right)
            f_new = torch.where(right.bool()[:, None], f_right, f_new)
        if on_jump is not None:  # where each sample's next f0 was evaluated
            f0_side = torch.where(ok, (ok & on_jump).long(),
                                  f0_side if f0_side is not None else zeros_l)
        y = torch.where(ok[:, None], y_new, y)
        t = torch.where(ok, t_new, t)
        if fsal:
            f0 = torch.where(ok[:, None], f_new, f0)
        stop_idx = torch.clamp(stop_idx + (ok & land), max=stops.shape[1] - 1)
        if progress is not None:  # host sync: only with progress=True
            span = (t_end - grid[:, 0]).clamp(min=1e-300)
            progress.update(((t - grid[:, 0]) / span).clamp(0, 1).mean().item(), stats.n_steps)
        active = active & ~done & ~dead
        if not any_left:
            break
        ctrl = new_ctrl
        dt = torch.where(active, new_dt.clamp(min=min_step, max=max_step), dt)
    stats.n_accepted = int(n_acc.sum())
    stats.n_rejected = int(n_rej.sum())
    if implicit_state is not None:
        implicit_state.counts.add_to(stats)
    sample = SampleStats(status, n_steps, n_acc, n_rej)
    hits = event.hits if event is not None else None
    return PerSampleResult(ys, t, y, stats, sample, records, hits)


def _sample_summary(sample: SampleStats, t_last_user: Tensor, stats: SolveStats,
                    events: bool) -> tuple[int | None, float]:
    """Fill the totals' status and message from the samples'; the first failed sample."""
    codes = sample.status.tolist()
    B = len(codes)
    failed = [b for b, c in enumerate(codes) if Status(c) in FAILURES]
    if failed:
        b = failed[0]
        st = Status(codes[b])
        t_b = float(t_last_user[b])
        stats.status = st
        stats.message = (f"{len(failed)} of {B} samples failed (samples {failed[:10]}"
                         f"{'...' if len(failed) > 10 else ''}); sample {b}: {st.message} "
                         f"t={t_b!r}. sol.sample_stats.status has each sample's outcome.")
        return b, t_b
    if events:
        missed = [b for b, c in enumerate(codes) if c == Status.NO_EVENT]
        stats.status = Status.NO_EVENT if missed else Status.EVENT
        stats.message = (f"{B - len(missed)} of {B} samples stopped at an event"
                         + (f"; samples {missed[:10]}{'...' if len(missed) > 10 else ''} did "
                            "not cross before t1." if missed else "."))
    return None, math.nan


def raise_failures(result: PerSampleResult, sign: Tensor, throw: bool,
                   events: bool = False) -> None:
    """Fill the totals' status from the samples'; with ``throw``, raise for a failed sample
    (:class:`~odeflow.SolveError` carrying ``stats`` and ``sample_stats``)."""
    b, t_b = _sample_summary(result.sample, sign * result.t_last, result.stats, events)
    if b is not None and throw:
        err = SolveError(result.stats.status, t_b,
                         f"{result.stats.message} Other samples were not affected; pass "
                         "throw=False to get their results (failed samples keep nan after "
                         "the failure).", result.stats)
        err.sample_stats = result.sample  # type: ignore[attr-defined]
        raise err


def integrate_per_sample(problem: Any, stepper: Any, controller: PIDController,
                         max_num_steps: int, first_step: float | None) -> tuple[Tensor, SolveStats]:
    """``run_loop``'s route for a ``per_sample`` :class:`~odeflow.problem.Problem` with a
    shared 1-D ``t`` (outputs ``(T, n)`` flat; any failed sample raises). ``solve`` itself
    goes through :func:`odeflow.per_sample.solve_per_sample`."""
    layout = problem.layout
    if layout.is_tuple or layout.is_complex or len(layout.shapes[0]) < 1:
        raise ValueError("options['per_sample'] needs y0 to be a real tensor with a batch "
                         "dimension first")
    batch_layout = SampleLayout(layout.shapes, False)
    B = batch_layout.batch
    y0 = problem.y0.view(B, -1)
    grid = torch.tensor(problem.t_out, dtype=torch.float64, device=y0.device).expand(B, -1)
    sign = torch.full((B,), problem.sign, dtype=torch.float64, device=y0.device)
    f = BatchFunc(problem.user_func, batch_layout, y0.dtype, sign, problem.func)
    cfg = PerSampleConfig(stepper, controller,
                          problem.rtol, problem.atol,
                          batched_norm(problem.options.get("norm"), batch_layout),
                          max_num_steps, first_step)
    result = run_per_sample(f, y0, grid, cfg)
    raise_failures(result, sign, throw=True)
    n_t = result.ys.shape[0]
    return result.ys.reshape(n_t, -1), result.stats
