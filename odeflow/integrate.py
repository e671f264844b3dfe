"""The one stepping loop: adaptive and fixed-grid, joint and per-sample.

A solve advances one lane (joint) or ``B`` lanes (per sample); the clock
(:mod:`odeflow.lanes`) holds the time arithmetic, so this loop is written once. Each
iteration makes one attempt per unfinished lane, accepts or rejects it (a fixed grid
accepts every step), writes the output times it passed from the method's dense output
(never by extra steps), and stops a lane with a status on too many steps, step-size
underflow or non-finite values. Solvers never loop and controllers never evaluate
``func``; this module owns the loop and nothing else.

A fixed grid is the same loop with every grid point a stop, an infinite step size (each
attempt lands on the next stop) and no error test; ``perturb`` makes every grid point a
jump (``f`` evaluated one ulp to each side). Host synchronisation: a joint solve reads its
error norm once per attempt; a per-sample solve reads one small vector of decisions per
iteration (:meth:`~odeflow.lanes.LaneClock.decide`); a fixed grid has none per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor

from .controllers import PIDController, initial_step
from .norms import rms_norm
from .problem import Problem
from .solvers.base import NO_CONTEXT, StepResult
from .stats import SolveStats, Status
from .stiffness import PROBE_AFTER, warn_if_stiff

__all__ = ["LoopConfig", "LoopResult", "StepRecord", "integrate", "FAILURES", "Hooks", "f_at_end"]

#: The statuses that make a lane a failure (``NO_EVENT`` is an outcome, not a failure).
FAILURES = (Status.MAX_STEPS_REACHED, Status.STEP_SIZE_UNDERFLOW, Status.NONFINITE)


@dataclass(frozen=True)
class LoopConfig:
    """What the loop reads besides the problem, validated once by ``solve``.

    ``stops``/``stop_jump``: canonical stop times of each lane, ending with its end time
    (a list of floats and of flags for one lane, ``(B, K)`` tensors per sample, ``inf``
    padded); the loop lands exactly on each. ``adaptive=False`` is a fixed grid: ``stops``
    is the grid.
    """

    adaptive: bool
    controller: PIDController | None
    max_num_steps: int
    min_step: float
    max_step: float
    first_step: float | None
    stops: Any
    stop_jump: Any
    perturb: bool = False  # fixed grid: f one-sided at every grid point
    callbacks: tuple = (None, None, None)
    record: bool = False  # keep a StepRecord per iteration (checkpointed gradient)
    fsal: bool = True  # reuse the last stage as the next first one
    compile: bool = False  # per sample: torch.compile the no-grad stage loop


@dataclass
class Hooks:
    """Optional observers of the loop (``None`` costs nothing)."""

    event: Any = None  # event_location.EventLocator
    dense: Any = None  # .append((detached interpolant, accepted mask)) per step
    progress: Any = None  # progress.Progress
    stage_hook: Callable | None = None  # stage_hook(accepted, dt) after each decision
    skip: Tensor | None = None  # (B,) lanes not to solve (they keep y0)
    # land(t, y, landed) -> y: the state after lanes landed on a stop (the adjoint's jumps at
    # output times); one lane: None where nothing jumps. Per sample FSAL is then off.
    land: Callable | None = None


@dataclass
class StepRecord:
    """One iteration, kept by the checkpointed gradient to replay it under autograd.

    ``dt`` is 0 for lanes that did not accept (one lane: only accepted steps are kept).
    ``outputs`` lists ``(lanes, output index, theta)`` written from this step, ``event``
    ``(lanes, theta, restep)`` of an event located in it.
    """

    t: Any
    dt: Any
    t_new: Any
    y: Tensor
    ok: Any
    f0_side: Any  # f0 evaluated right of a jump (+1), else 0 / None
    last_side: Any  # the c = 1 stages left of a jump (-1), else 0 / None
    outputs: list = field(default_factory=list)
    event: Any = None


@dataclass
class LoopResult:
    """Outputs of the loop: states at the reached output times, and statistics."""

    ys: Any  # list of flat states (one lane) or (T, B, n) with nan where not reached
    stats: SolveStats
    t_last: Any
    y_last: Tensor
    status: Any  # Status code(s) per lane
    dt_last: Any = None  # the last attempted step size(s)
    lane_counts: Any = None  # per sample: (n_steps, n_accepted, n_rejected) tensors
    records: list[StepRecord] | None = None
    state: Any = None  # the stepper's carried state at the end


def integrate(problem: Problem, stepper: Any, cfg: LoopConfig,
              hooks: Hooks | None = None) -> LoopResult:
    """Run the loop on ``problem`` (under whatever grad mode is active).

    Lanes that fail stop with their status (the others go on); the caller decides what a
    failure means (``pipeline.py`` raises or returns the partial solution).
    """
    hooks = hooks or Hooks()
    C = problem.clock
    f = problem.func
    shared = not C.per_sample
    y = problem.y0
    grid = C.grid
    n_out = C.n_out
    stats = SolveStats()
    t = C.t0
    t_end = C.t_end
    status = C.full(int(Status.SUCCESS))
    n_steps, n_acc = C.full(0), C.full(0)  # attempts and accepted steps of each lane
    if shared:
        ys: Any = [y]
    else:
        # One spare row per lane after the outputs: a lane with nothing to write in an
        # output pass writes there, so a pass is one index_put, with no mask and no sync.
        ys = y.new_full((n_out + 1, *y.shape), math.nan)
        ys[0] = y
    records: list[StepRecord] | None = [] if cfg.record else None
    # Per sample with the end as the only output (and no event, no replay): a lane's final
    # state is its output, written once after the loop rather than as lanes finish.
    end_only = not shared and n_out == 2 and hooks.event is None and records is None

    def result(t_last: Any, y_last: Tensor) -> LoopResult:
        n_rej = n_steps - n_acc
        lane_counts = None if shared else (n_steps, n_acc, n_rej)
        stats.n_accepted, stats.n_rejected = (n_acc, n_rej) if shared else (
            int(n_acc.sum()), int(n_rej.sum()))
        if counts is not None:
            counts.add_to(stats)
        if end_only:  # (the lanes that landed on the end; failed and skipped ones keep nan)
            reached = status == int(Status.SUCCESS)
            if hooks.skip is not None:
                reached = reached & ~hooks.skip
            ys[1] = torch.where(C.row_mask(reached, y_last), y_last, math.nan)
        return LoopResult(ys if shared else ys[:n_out], stats, t_last, y_last, status,
                          dt_last, lane_counts, records, state)

    counts = dt_last = state = None
    if n_out == 1:
        return result(t, y)
    stops, stop_jump = cfg.stops, cfg.stop_jump
    stop_idx, out_idx = C.full(0), C.full(1)
    last_stop = (stops.shape[1] if isinstance(stops, Tensor)
                 else getattr(stops, "size", None) or len(stops)) - 1
    multi_stop = last_stop > 0
    next_stop = C.gather(stops, stop_idx)  # changes only when a lane lands on a stop
    n_pass = next_out = None  # (per sample only)
    if not shared:
        # Each lane's next output time (inf once all are written); whether a step can end
        # past one (else outputs land on step ends: no interpolant, at most one per step).
        next_out = C.gather(C.grid_inf, out_idx)
        outputs_are_stops = n_out == 2 or stepper.steps_to_outputs
    any_jumps = stop_jump is not None
    cb_step, cb_accept, cb_reject = cfg.callbacks
    event, dense, progress = hooks.event, hooks.dense, hooks.progress
    adaptive, land_hook = cfg.adaptive, hooks.land
    fsal_loop = cfg.fsal and (shared or land_hook is None)
    min_step, max_step, max_num_steps = cfg.min_step, cfg.max_step, cfg.max_num_steps
    bounded = min_step > 0 or max_step < math.inf
    ws = None if torch.is_grad_enabled() else stepper.workspace(y)
    state = stepper.init(y)
    counts = getattr(state, "counts", None)  # implicit methods count their linear algebra
    fsal = fsal_loop and getattr(stepper, "fsal", False)
    norm = problem.norm
    # rtol and atol as 0-dim CPU tensors of the kernels' type: the same values, without
    # wrapping a Python float in each error scale (about a microsecond each on the CPU).
    tol_dtype = y.dtype if y.dtype == torch.float32 else torch.float64
    tols = tuple(v if isinstance(v, Tensor) else torch.scalar_tensor(
        v, dtype=tol_dtype, device="cpu") for v in (problem.rtol, problem.atol))
    # The default RMS norm of one lane is computed inline: one kernel and a multiply.
    inv_sqrt_n = 1.0 / math.sqrt(max(y.numel(), 1)) if (shared and norm is rms_norm) else None
    k = stepper.error_order + 1

    abs_y = y.detach().abs() if shared else None
    f0_side: Any = C.full(0) if any_jumps and not shared else 0
    f0 = f.perturbed(t, y, +1) if cfg.perturb else f.checked(t, y)
    finite0 = C.rows_finite(f0)  # host sync: once per solve
    active = finite0 if hooks.skip is None else finite0 & ~hooks.skip
    if hooks.skip is not None:  # (a skipped lane keeps its status)
        finite0 = finite0 | hooks.skip
    status = C.where(finite0, status, int(Status.NONFINITE))
    if not adaptive:
        dt = C.full(math.inf)
    elif cfg.first_step is not None:
        dt = C.full(cfg.first_step)
    else:
        dt = initial_step(f, t, y, f0, stepper.error_order, *tols, norm)
    dt = C.clip(dt, min_step, max_step)
    ctrl = cfg.controller.init(C) if adaptive else None
    step = (compiled_step(stepper, f) if cfg.compile and ws is not None and not shared
            else stepper.step)
    # A fixed grid keeps cubic Hermite as its dense output whatever its outputs' interpolant.
    dense_piece = getattr(stepper, "dense_interpolant", None)
    # A long explicit solve asks once whether it looks stiff (a few evaluations, once).
    probe = shared and adaptive and not getattr(stepper, "implicit", False)
    left = C.flags(active)[0]  # host sync: once per solve
    while left:
        if not fsal_loop:
            f0 = f.perturbed(t, y, f0_side) if (f0_side if shared else any_jumps) else f(t, y)
        if stats.n_steps >= max_num_steps:  # (no lane has taken more steps than iterations)
            over = active & (n_steps >= max_num_steps)
            status = C.where(over, int(Status.MAX_STEPS_REACHED), status)
            active = C.drop(active, over)
        land = t + 1.01 * dt >= next_stop  # stretch by at most 1% rather than leave a sliver
        t_new = C.where(land, next_stop, t + dt)
        dt_try = C.where(land, next_stop - t, dt)
        under = active & (dt_try <= 4 * C.ulp(C.abs_max(t, t_new)))
        if shared:  # (per sample, once the iteration's decisions are read)
            status = C.where(under, int(Status.STEP_SIZE_UNDERFLOW), status)
        active = C.drop(active, under)
        if not shared:
            dt_try = C.where(active, dt_try, 0.0)
            if not adaptive:  # a done lane's t + inf: func at inf, 0 * nan in a direct gradient
                t_new = C.where(active, t_new, t)
        elif not active:
            break
        on_jump = (land & active & C.gather(stop_jump, stop_idx)) if any_jumps else False
        last_side = -on_jump.long() if not shared and any_jumps else (-1 if on_jump else 0)
        f_last = None
        if cfg.perturb or (on_jump if shared else any_jumps):  # (a fixed grid has no jumps)
            f_last = partial(f.perturbed, side=-1 if cfg.perturb else last_side)  # ulp left
        if cb_step is not None:
            cb_step(C.user_time(t), problem.layout.unflatten(y), C.user_time(dt_try))
        dt_last = dt_try
        if probe and stats.n_steps == PROBE_AFTER:
            warn_if_stiff(f, t, y, dt_try, C.sign * t)
        res = step(f, t, y, f0, dt_try, state, ws, with_error=adaptive, f_last=f_last)
        y_new, stages = res.y_new, res.stages
        if adaptive:
            if not shared:  # (without autograd, ws, no detach)
                abs_y = (y if ws is not None else y.detach()).abs()
            ratio, abs_new = _error_ratio(C, res, abs_y, y_new, *tols, norm, inv_sqrt_n,
                                          ws is not None)
            finite = ratio < math.inf  # (a norm is >= 0 or nan: one kernel, not isfinite's 4)
            # An active lane's dt_try exceeds 4 ulp > 0: without min_step, ratio <= 1 decides.
            ok = active & ((ratio <= 1.0) | ((dt_try <= min_step) & finite) if min_step > 0
                           else ratio <= 1.0)
        else:
            ratio, finite, ok = C.full(0.0), C.full(True), active
        n_acc, n_steps = n_acc + ok, n_steps + active
        stats.n_steps += 1
        f_new = interp = None
        if shared:
            done = ok and land and t_new == t_end
            hit = ok and out_idx < n_out and grid[out_idx] <= t_new
            # A non-finite error: the lane fails if f0 itself is not finite, or the step is tiny.
            if not finite and res.ok and (
                    not C.rows_finite(stages[0]) or dt_try <= 16e3 * math.ulp(max(abs(t), 1.0))):
                status, active = int(Status.NONFINITE), False
            any_hit, any_left, any_ok = hit, active and not done, ok
            still = any_left
        else:
            # With the end as the only stop, landing on it is being done.
            done = ok & land & (t_new == t_end) if multi_stop else ok & land
            still = active ^ done
            hit = done if n_out == 2 else ok & (next_out <= t_new)  # (n_out 2: the end)
            # active & ~finite (ok implies finite), but not where a step was not completed
            # (rejected, see below)
            nonfinite = active > finite if res.ok is True else (active > finite) & res.ok
            masks, n_more = [hit, still, ok, nonfinite, under], []
            if not outputs_are_stops:  # an output strictly inside; how many each lane passed
                masks.append(hit & (next_out < t_new))
                n_more.append(torch.where(ok, C.n_passed(t_new) - out_idx, 0).max())
            if event is not None:  # the event test joins the decisions (a crossing stops)
                f_new = f_at_end(stepper, f, cfg, fsal, t_new, y_new, res)
                interp = stepper.interpolant(t, dt_try, y, y_new, stages, f_new, f)
                crossed = event.detect(interp, y_new, ok)
                still = still & ~crossed
                masks[1] = still
                masks.append(crossed)
            # host sync: every decision of the iteration, in one transfer (no sync of its
            # own for the output passes)
            flags = C.decide(masks, n_more)
            any_hit, any_left, any_ok, any_nonfinite, any_under = flags[:5]
            any_inside = flags[5] if not outputs_are_stops else False
            if any_under:
                status = torch.where(under, int(Status.STEP_SIZE_UNDERFLOW), status)
            n_pass = flags[len(masks)] if not outputs_are_stops else int(any_hit)
            any_crossed = flags[len(masks) - 1] if event is not None else False
            if any_nonfinite:
                dead = nonfinite & (~torch.isfinite(f0).all(-1)
                                    | (dt_try <= 16e3 * C.ulp(torch.clamp(t.abs(), min=1.0))))
                status = torch.where(dead, int(Status.NONFINITE), status)
                still = still & ~dead
                any_left = C.flags(still)[0]  # host sync: only after a non-finite trial
                if y_new.requires_grad:
                    # A rejected trial overflowed: its infinities would turn the zero gradient
                    # torch.where sends them into nan. Redo the step without those trials.
                    res = step(f, t, y, f0, torch.where(finite, dt_try, 0.0), state, ws,
                               with_error=adaptive, f_last=f_last)
                    y_new, stages = res.y_new, res.stages
                    f_new = interp = None  # (the event's dense output too)
        if hooks.stage_hook is not None:
            hooks.stage_hook(ok, dt_try)
        rec = None
        if records is not None and any_ok:
            rec = StepRecord(t, C.where(ok, dt_try, 0.0), t_new, y, ok, f0_side, last_side)
            records.append(rec)
        interior = any_hit and (C.gather(grid, out_idx) != t_new if shared else any_inside)
        if f_new is None and any_ok and (
                (any_left and fsal_loop) or (interior and stepper.needs_f_end_for_dense)
                or event is not None or dense is not None):
            f_new = f_at_end(stepper, f, cfg, fsal, t_new, y_new, res)
        if any_hit and not end_only:
            out_idx, next_out = C.write_outputs(stepper, ys, n_pass, hit, interior, out_idx,
                                                next_out, ok, t, t_new, dt_try, y, y_new, stages,
                                                f_new, ws, rec)
        # (per sample each callback's dt is 0 for the lanes it is not about)
        if any_ok and cb_accept is not None:
            cb_accept(C.user_time(t), problem.layout.unflatten(y),
                      C.user_time(C.where(ok, dt_try, 0.0)))
        if cb_reject is not None and C.flags(rejected := C.drop(active, ok))[0]:
            cb_reject(C.user_time(t), problem.layout.unflatten(y),
                      C.user_time(C.where(rejected, dt_try, 0.0)))
        if interp is None and any_ok and (dense is not None or event is not None):
            interp = stepper.interpolant(t, dt_try, y, y_new, stages, f_new, f)
        if dense is not None and any_ok:
            piece = interp if dense_piece is None else dense_piece(t, dt_try, y, y_new, stages,
                                                                   f_new)
            dense.append((piece.detached(), ok if shared else ok.clone()))
        if progress is not None and any_ok:
            progress.update(C.where(ok, t_new, t), stats.n_steps)
        if event is not None and shared:
            if any_ok and bool(event.detect(interp, y_new, ok).any()):  # host sync: event test
                event.locate(interp, y_new, rec)
                status = int(Status.EVENT)
                return result(t_new, y_new)
        elif event is not None and any_crossed:  # (those lanes already left `still`)
            status = torch.where(event.locate(interp, y_new, rec), int(Status.EVENT), status)
        if any_jumps and f_new is not None:
            # A discontinuity: the FSAL derivative belongs to the left of it.
            right = ok & on_jump
            if C.flags(right)[0]:  # host sync: per sample, only on a step that ended on a jump
                f_new = C.rows(right, f.perturbed(t_new, y_new, right * 1), f_new)
        if any_jumps or cfg.perturb:
            f0_side = C.where(ok, 1 if cfg.perturb else (ok & on_jump) * 1, f0_side)
        if shared and ok and adaptive:
            abs_y = abs_new
        ok_rows = C.row_mask(ok, y)
        y = C.where(ok_rows, y_new, y)
        t = C.where(ok, t_new, t)
        if not shared or ok:
            state = res.state
        if fsal_loop:
            if f_new is None or shared:  # (None: nothing accepted, or nothing goes on)
                f0 = stages[0] if f_new is None else f_new
            elif stages[0] is getattr(ws, "rows", (None,))[0]:
                # In place into the workspace row the next step reads f0 from (no copy).
                f0 = torch.where(ok_rows, f_new, stages[0], out=stages[0])
            else:
                f0 = C.where(ok_rows, f_new, stages[0])
        if multi_stop:
            stop_idx = C.clip(stop_idx + (ok & land), 0, last_stop)
            next_stop = C.gather(stops, stop_idx)
        active = still
        if not any_left:
            break
        if land_hook is not None:
            if not shared:  # (each lane's f0 is evaluated afresh: FSAL is off)
                y = land_hook(t, y, ok & land)
            elif ok and land and (jumped := land_hook(t, y, True)) is not None:
                # A new state: the stepper's history, |y| and the FSAL derivative start afresh.
                y, state, abs_y = jumped, stepper.init(jumped), jumped.detach().abs()
                if fsal_loop:
                    f0 = f.perturbed(t, y, f0_side) if f0_side else f(t, y)  # (right of a jump)
        if adaptive:
            dt, ctrl = cfg.controller.propose(dt_try, ratio, ok, k, ctrl)
            # (per sample, a stopped lane's dt is never read again: no mask)
            if bounded:
                dt = C.clip(dt, min_step, max_step)
    return result(t, y)


def f_at_end(stepper: Any, f: Any, cfg: LoopConfig, fsal: bool, t_new: Any, y_new: Tensor,
             res: StepResult) -> Tensor:
    """The derivative at an attempt's end (the loop's and the checkpoint replay's): its last
    stage (FSAL), one-sided on a perturbed fixed grid, else the stepper's."""
    if fsal:
        return res.stages[-1]
    if cfg.perturb:
        return f.perturbed(t_new, y_new, +1)
    return stepper.f_end(f, t_new, y_new, res)


def _error_ratio(C: Any, res: Any, abs_y: Tensor, y_new: Tensor, rtol: Any, atol: Any,
                 norm: Callable, inv_sqrt_n: float | None, fused: bool) -> tuple[Any, Any]:
    """``norm(err / (atol + rtol max(|y|, |y_new|)))``: a float for one lane (the accept
    decision's host sync), one value per lane otherwise (no sync); and ``|y_new|``, which
    one lane reuses as the next step's ``|y|``. ``fused``: no autograd (no context, no
    detach; the error is divided in place)."""
    if res.ok is False:  # the step could not be completed: reject it, shrink dt
        return C.full(math.inf), abs_y
    with NO_CONTEXT if fused else torch.no_grad():
        err = res.error
        abs_new = (y_new if fused else y_new.detach()).abs()
        scale = torch.maximum(abs_y, abs_new).mul_(rtol).add_(atol)
        scaled = err.div_(scale) if fused else err / scale
        if C.per_sample:  # a lane whose step was not completed (res.ok False): inf
            ratio = norm(scaled).double()
            return ratio if res.ok is True else torch.where(res.ok, ratio, math.inf), abs_new
        if inv_sqrt_n is not None:
            # host sync: the accept/reject decision
            return torch.linalg.vector_norm(scaled).item() * inv_sqrt_n, abs_new
        return float(norm(scaled)), abs_new  # host sync: the accept/reject decision


_COMPILED: dict[int, Callable] = {}


def compiled_step(stepper: Any, f: Any) -> Callable:
    """``stepper.step`` of a per-sample no-grad solve through ``torch.compile``
    (``options["compile"]``): the stage loop becomes a few fused kernels. ``func`` is
    called uncounted inside the compiled region (a counter in the graph would force a
    recompile at every call) and the evaluations are counted outside."""
    fn = _COMPILED.get(id(type(stepper)))
    if fn is None:
        def pure(stepper: Any, call: Callable, t: Tensor, y: Tensor, f0: Tensor, dt: Tensor,
                 ws: Any, f_last: Callable | None) -> tuple:
            res = type(stepper).step(stepper, call, t, y, f0, dt, None, ws, f_last=f_last)
            return res.y_new, res.error, tuple(res.stages)

        fn = _COMPILED[id(type(stepper))] = torch.compile(pure, dynamic=False)

    def uncounted(tt: Tensor, x: Tensor) -> Tensor:
        return f._call(f.clock.user_time(tt), x)

    def step(fc: Any, t: Tensor, y: Tensor, f0: Tensor, dt: Tensor, state: Any, ws: Any, *,
             with_error: bool = True, f_last: Callable | None = None) -> Any:
        fc.nfe += stepper.stages - 1
        y_new, err, stages = fn(stepper, uncounted, t, y, f0, dt, ws, f_last)
        return StepResult(y_new, err, stages, state)

    return step
