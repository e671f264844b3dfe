"""The stepping loops: adaptive (accept/reject with a controller) and fixed grid.

Both produce the outputs at the requested times from the method's dense output (never by
extra steps), count steps, and stop with a clear :class:`~odeflow.stats.SolveError` on
too many steps, step-size underflow or non-finite values. Solvers never loop and
controllers never evaluate ``func``; this module owns the loop and nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .controllers import initial_step
from .interp import HermiteInterpolant, LinearInterpolant, hermite, linear
from .norms import rms_norm
from .options import DEFAULT_MAX_NUM_STEPS, make_controller, max_steps, positive_float
from .problem import Problem
from .solvers import MethodSpec
from .solvers.scipy_bridge import integrate_scipy
from .stats import SolveError, SolveStats, Status

__all__ = [
    "LoopResult", "StepRecord", "integrate_adaptive", "integrate_fixed", "make_controller",
    "run_loop", "DEFAULT_MAX_NUM_STEPS",
]



def run_loop(problem: Problem, spec: MethodSpec, *, record_steps: bool = False,
             event: Any = None, callback_suffix: str = "") -> LoopResult:
    """Run the loop of ``spec``'s family on ``problem`` (under whatever grad mode is active).

    ``event`` is an :class:`~odeflow.event_location.EventLocator` (or ``None``).
    ``problem.dense_sink``, when a list, receives each accepted step's detached
    interpolant; ``problem.progress`` is updated after each accepted step and closed at
    the end, whatever the outcome.
    """
    if problem.progress is None:
        return _run_loop(problem, spec, record_steps, event, callback_suffix)
    result = None
    try:
        result = _run_loop(problem, spec, record_steps, event, callback_suffix)
        return result
    finally:
        t_last = result.t_last if result is not None else problem.t_out[0]
        n = result.stats.n_accepted if result is not None else 0
        problem.progress.close(t_last, n)


def _run_loop(problem: Problem, spec: MethodSpec, record_steps: bool, event: Any,
              callback_suffix: str) -> LoopResult:
    dense = problem.dense_sink
    if spec.external:
        if record_steps or event is not None or dense is not None:
            raise ValueError("method='scipy_solver' supports neither gradient='checkpoint', "
                             "event_fn nor dense=True; use an odeflow method")
        ys, stats = integrate_scipy(problem)
        return LoopResult(ys, stats, problem.t_out[-1], ys[-1])
    stepper = spec.build(problem.options, problem.rtol, problem.atol)
    if problem.options.get("per_sample", False):
        # solve() routes per-sample problems to odeflow.per_sample before any joint loop.
        raise ValueError("options['per_sample'] problems are solved by odeflow.per_sample, "
                         "not by the joint loops")
    if spec.adaptive:
        return integrate_adaptive(problem, stepper, record_steps=record_steps, event=event,
                                  callback_suffix=callback_suffix)
    return integrate_fixed(problem, stepper, record_steps=record_steps, event=event,
                           callback_suffix=callback_suffix)


@dataclass(frozen=True)
class StepRecord:
    """An accepted step, kept by the checkpointed gradient to replay it under autograd."""

    t: float
    dt: float  # the step size used (t + dt may differ from t_new by rounding)
    t_new: float
    y: Tensor
    jump_after: bool  # f at the step's end was re-evaluated (a jump_t point)


@dataclass
class LoopResult:
    """Outputs of a loop: flat states at the reached output times, and statistics."""

    ys: list[Tensor]
    stats: SolveStats
    t_last: float
    y_last: Tensor
    steps: list[StepRecord] | None = None
    event: Any = None
    pieces: list | None = None  # the dense output kept for a stiff adjoint (events.py)


def _canonical_times(problem: Problem, name: str) -> list[float]:
    value = problem.options.get(name)
    if value is None:
        return []
    if isinstance(value, Tensor):
        values = value.detach().reshape(-1).to("cpu", torch.float64).tolist()
    else:
        try:
            values = [float(v) for v in value]
        except TypeError:
            raise TypeError(
                f"options['{name}'] must be a 1-D tensor or sequence of times"
            ) from None
    t0, t1 = problem.t_out[0], problem.t_out[-1]
    return sorted(x for x in (problem.sign * v for v in values) if t0 < x < t1)


def _callbacks(problem: Problem, suffix: str = "") -> tuple:
    func = problem.user_func
    names = ("callback_step", "callback_accept_step", "callback_reject_step")
    return tuple(getattr(func, n + suffix, None) for n in names)


def _fail(problem: Problem, status: Status, t: float, detail: str, stats: SolveStats,
          ys: list[Tensor]) -> SolveError:
    """The error of a failed loop, carrying complete statistics and the outputs reached."""
    stats.status = status
    stats.message = f"{status.message} t={problem.user_time(t)!r}. {detail}".strip()
    stats.nfe = problem.func.nfe
    err = SolveError(status, problem.user_time(t), detail, stats)
    err.partial_ys = list(ys)
    return err


def integrate_adaptive(
    problem: Problem,
    solver: Any,
    *,
    record_steps: bool = False,
    event: Any = None,
    callback_suffix: str = "",
) -> LoopResult:
    """Adaptive loop with dense output at ``problem.t_out``.

    Raises:
        SolveError: on too many steps, step-size underflow or non-finite values.
    """
    opts = problem.options
    f = problem.func
    t_out = problem.t_out
    n_out = len(t_out)
    t0, t_end = t_out[0], t_out[-1]
    y = problem.y0
    stats = SolveStats()
    ys = [y]
    steps: list[StepRecord] | None = [] if record_steps else None
    if n_out == 1:
        return LoopResult(ys, stats, t0, y, steps)

    controller = make_controller(opts)
    max_num_steps = max_steps(opts)
    min_step = positive_float(opts, "min_step", None, allow_zero=True) or 0.0
    max_step = positive_float(opts, "max_step", None) or math.inf
    first_step = positive_float(opts, "first_step", None)
    rtol, atol, norm = problem.rtol, problem.atol, problem.norm
    k = solver.error_order + 1
    ws = None if torch.is_grad_enabled() else solver.workspace(y)
    cb_step, cb_accept, cb_reject = _callbacks(problem, callback_suffix)
    dense, progress = problem.dense_sink, problem.progress

    f0 = f.checked(t0, y)
    if not bool(torch.isfinite(f0).all()):  # host sync: once per solve
        raise _fail(problem, Status.NONFINITE, t0, "func(t0, y0) is not finite.", stats, ys)
    if first_step is None:
        dt = initial_step(f, t0, y, f0, solver.error_order, rtol, atol, norm)
    else:
        dt = first_step
    dt = min(max(dt, min_step), max_step)

    jumps = _canonical_times(problem, "jump_t")
    stop_set = set(_canonical_times(problem, "step_t")) | set(jumps) | {t_end}
    if solver.steps_to_outputs:
        stop_set.update(t_out[1:])
    stops = sorted(stop_set)
    jump_set = set(jumps)
    f_left = (lambda tt, x: f.perturbed(tt, x, -1)) if jump_set else None
    stop_i = 0
    next_stop = stops[0]
    out_i = 1
    next_out = t_out[1]
    ctrl = controller.init()
    state = solver.init(y)
    dense_needs_f_end = solver.needs_f_end_for_dense
    t = t0
    abs_y = y.detach().abs()
    # The default RMS norm is computed inline: one kernel and one multiply in Python.
    inv_sqrt_n = 1.0 / math.sqrt(max(y.numel(), 1)) if norm is rms_norm else None

    # Implicit methods count their linear algebra in their state; copied out at the end.
    counts = getattr(state, "counts", None)
    try:
        while True:
            if stats.n_steps >= max_num_steps:
                raise _fail(problem, Status.MAX_STEPS_REACHED, t,
                            f"Raise options['max_num_steps'] (now {max_num_steps}) or loosen "
                            "rtol/atol; a stiff problem may need an implicit method.", stats, ys)
            # Land exactly on the next stop; stretch by at most 1% rather than leave a sliver.
            if t + 1.01 * dt >= next_stop:
                dt_try, t_new, landing = next_stop - t, next_stop, True
            else:
                dt_try, t_new, landing = dt, t + dt, False
            if dt_try <= 4 * math.ulp(max(abs(t), abs(t_new))):
                raise _fail(problem, Status.STEP_SIZE_UNDERFLOW, t,
                            f"Step size {dt_try!r} is too small for t; the problem may be "
                            "stiff or have a singularity here.", stats, ys)
            if cb_step is not None:
                cb_step(_ttensor(t, problem), problem.layout.unflatten(y),
                        _ttensor(dt_try, problem))

            # A step ending on a jump evaluates its last stage on the left of the jump.
            on_jump = landing and jump_set and t_new in jump_set
            result = solver.step(f, t, y, f0, dt_try, state, ws,
                                 f_last=f_left if on_jump else None)
            y_new, stages = result.y_new, result.stages
            stats.n_steps += 1
            if not result.ok:  # the step could not be completed: reject it, shrink dt
                ratio, abs_new = math.inf, abs_y
            elif ws is None:
                with torch.no_grad():
                    ratio, abs_new = _error_ratio(result.error, abs_y, y_new, rtol, atol, norm,
                                                  inv_sqrt_n)
            else:
                ratio, abs_new = _error_ratio(result.error, abs_y, y_new, rtol, atol, norm,
                                              inv_sqrt_n)
            accepted = ratio <= 1.0 or (dt_try <= min_step and math.isfinite(ratio))

            if accepted:
                stats.n_accepted += 1
                is_end = landing and t_new == t_end
                interior_out = next_out < t_new
                f_new = None
                if not is_end or (interior_out and dense_needs_f_end) or event is not None or (
                        dense is not None):
                    f_new = solver.f_end(f, t_new, y_new, result)
                while next_out <= t_new:
                    if next_out == t_new:
                        ys.append(y_new)
                    else:
                        theta = (next_out - t) / dt_try
                        ys.append(solver.interpolate(y, y_new, dt_try, stages, f_new, theta, ws))
                    out_i += 1
                    if out_i == n_out:
                        break
                    next_out = t_out[out_i]
                if cb_accept is not None:
                    cb_accept(_ttensor(t, problem), problem.layout.unflatten(y),
                              _ttensor(dt_try, problem))
                jump_here = landing and t_new in jump_set
                if steps is not None:
                    steps.append(StepRecord(t, dt_try, t_new, y, jump_here))
                if dense is not None:
                    dense.append(solver.interpolant(t, dt_try, y, y_new, stages, f_new,
                                                    f).detached())
                if progress is not None:
                    progress.update(t_new, stats.n_accepted)
                if event is not None:
                    hit = event.check(solver.interpolant(t, dt_try, y, y_new, stages, f_new, f),
                                      y_new)
                    if hit is not None:
                        if steps is not None and hit.step_dt is not None:
                            # Located by re-stepping: the replay ends with that shorter step.
                            steps[-1] = StepRecord(t, hit.step_dt, hit.t, y, False)
                        return LoopResult(ys, stats, t_new, y_new, steps, event=hit)
                y, abs_y, state = y_new, abs_new, result.state
                t = t_new
                if landing:
                    if t_new == t_end:
                        break
                    stop_i += 1
                    next_stop = stops[stop_i]
                if jump_here:
                    # A discontinuity: the FSAL derivative belongs to the left of it.
                    f_new = f.perturbed(t, y, +1)
                f0 = f_new
            else:
                stats.n_rejected += 1
                if not math.isfinite(ratio) and result.ok:
                    if not bool(torch.isfinite(stages[0]).all()):  # host sync: failure path only
                        raise _fail(problem, Status.NONFINITE, t,
                                    "func returned non-finite values at this time.", stats, ys)
                if cb_reject is not None:
                    cb_reject(_ttensor(t, problem), problem.layout.unflatten(y),
                              _ttensor(dt_try, problem))
                f0 = stages[0]
                if not math.isfinite(ratio) and result.ok and (
                        dt_try <= 16 * math.ulp(max(abs(t), 1.0)) * 1e3):
                    raise _fail(problem, Status.NONFINITE, t,
                                "func returned non-finite values for every step size tried.",
                                stats, ys)
            dt, ctrl = controller.propose(dt_try, ratio, accepted, k, ctrl)
            dt = min(max(dt, min_step), max_step)
        return LoopResult(ys, stats, t, y, steps)
    finally:
        if counts is not None:
            counts.add_to(stats)


def _error_ratio(err: Tensor, abs_y: Tensor, y_new: Tensor, rtol: float | Tensor,
                 atol: float | Tensor, norm: Callable[[Tensor], Tensor],
                 inv_sqrt_n: float | None) -> tuple[float, Tensor]:
    """``norm(err / (atol + rtol max(|y|, |y_new|)))`` as a float, and ``|y_new|`` for reuse."""
    abs_new = y_new.detach().abs()
    scaled = err.div_(torch.maximum(abs_y, abs_new).mul_(rtol).add_(atol))
    if inv_sqrt_n is not None:
        # host sync: the accept/reject decision
        return torch.linalg.vector_norm(scaled).item() * inv_sqrt_n, abs_new
    return float(norm(scaled)), abs_new  # host sync: the accept/reject decision


def _ttensor(value: float, problem: Problem) -> Tensor:
    return torch.tensor(problem.sign * value, dtype=problem.layout.real_dtype,
                        device=problem.layout.device)


# -------------------------------------------------------------------------------- fixed grid
def make_grid(problem: Problem, lazy: bool = False) -> Iterator[float]:
    """The canonical time grid of a fixed-grid solve (increasing Python floats).

    ``lazy`` (event searches): a ``step_size`` grid is generated step by step, so that the
    search's far end time needs no list; :func:`integrate_fixed` bounds it by
    ``max_num_steps``.
    """
    opts = problem.options
    t_out = problem.t_out
    t0, t1 = t_out[0], t_out[-1]
    step_size = opts.get("step_size")
    constructor = opts.get("grid_constructor")
    max_num_steps = max_steps(opts)
    if step_size is not None and constructor is not None:
        raise ValueError("options: give step_size or grid_constructor, not both")
    if step_size is not None:
        h = positive_float(opts, "step_size", None)
        assert h is not None
        # A tolerance of 1e-9 steps keeps (t1 - t0) / h = 10.000000000000002 from adding a
        # sliver step.
        n = max(1, math.ceil((t1 - t0) / h - 1e-9))
        if lazy:
            return _lazy_grid(t0, t1, h, n)
        if n > max_num_steps:
            raise ValueError(
                f"options['step_size']={h!r} needs {n} steps over the time span, more than "
                f"max_num_steps={max_num_steps}; raise options['max_num_steps'] to allow it"
            )
        return iter([t0 + i * h for i in range(n)] + [t1])
    if lazy:
        raise ValueError("event_fn with a fixed-grid method needs options['step_size'] (the "
                         "search has no end time to build a grid on)")
    if constructor is not None:
        return iter(_constructed_grid(problem, constructor, max_num_steps))
    return iter(t_out)


def _lazy_grid(t0: float, t1: float, h: float, n: int) -> Iterator[float]:
    for i in range(n):
        yield t0 + i * h
    yield t1


def _constructed_grid(problem: Problem, constructor: Any, max_num_steps: int) -> list[float]:
    """``grid_constructor(func, y0, t)`` called with the user's own ``func``, ``y0`` and ``t``
    (a decreasing ``t`` stays decreasing); its grid is returned in canonical time."""
    if not callable(constructor):
        raise TypeError("options['grid_constructor'] must be callable(func, y0, t)")
    t0, t1 = problem.t_out[0], problem.t_out[-1]
    t_user = torch.tensor([problem.user_time(x) for x in problem.t_out],
                          dtype=problem.t.dtype if problem.t.is_floating_point()
                          else torch.float64)
    grid = constructor(problem.user_func, problem.layout.unflatten(problem.y0), t_user)
    if not isinstance(grid, Tensor) or grid.ndim != 1 or grid.numel() < 2:
        raise ValueError("options['grid_constructor'] must return a 1-D tensor of >= 2 times")
    values = [problem.sign * v for v in grid.detach().to("cpu", torch.float64).tolist()]
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError("options['grid_constructor'] must return times strictly monotone in "
                         "the direction of t")
    scale0, scale1 = 1e-6 * max(1.0, abs(t0)), 1e-6 * max(1.0, abs(t1))
    if abs(values[0] - t0) > scale0 or abs(values[-1] - t1) > scale1:
        raise ValueError(
            f"options['grid_constructor'] must return a grid from t[0]={problem.user_time(t0)} "
            f"to t[-1]={problem.user_time(t1)}, got {grid[0].item()} .. {grid[-1].item()}"
        )
    values[0], values[-1] = t0, t1
    if len(values) - 1 > max_num_steps:
        raise ValueError(f"the grid has {len(values) - 1} steps, more than max_num_steps")
    return values


def integrate_fixed(problem: Problem, solver: Any, *, record_steps: bool = False,
                    event: Any = None, callback_suffix: str = "") -> LoopResult:
    """Fixed-grid loop: one step per grid interval, outputs by linear or cubic interpolation.

    ``callback_step`` runs once per step; with ``event``, the root is located on each
    step's interpolant (linear or cubic, as ``options["interp"]``).
    """
    opts = problem.options
    interp = opts.get("interp", "linear")
    if interp not in ("linear", "cubic"):
        raise ValueError(f"options['interp'] must be 'linear' or 'cubic', got {interp!r}")
    perturb = bool(opts.get("perturb", False))
    f = problem.func
    t_out = problem.t_out
    n_out = len(t_out)
    y = problem.y0
    stats = SolveStats()
    ys = [y]
    steps: list[StepRecord] | None = [] if record_steps else None
    if n_out == 1:
        return LoopResult(ys, stats, t_out[0], y, steps)
    max_num_steps = max_steps(opts)
    grid = make_grid(problem, lazy=event is not None)
    cb_step = _callbacks(problem, callback_suffix)[0]
    dense, progress = problem.dense_sink, problem.progress
    ws = None if torch.is_grad_enabled() else solver.workspace(y)
    state = solver.init(y)
    f_last: Callable | None = (lambda t, x: f.perturbed(t, x, -1)) if perturb else None
    out_i, next_out = 1, t_out[1]
    t = next(grid)
    f0 = f.perturbed(t, y, +1) if perturb else f.checked(t, y)
    for t_new in grid:
        if stats.n_steps >= max_num_steps:
            raise _fail(problem, Status.MAX_STEPS_REACHED, t,
                        f"Raise options['max_num_steps'] (now {max_num_steps}) or check "
                        "event_fn.", stats, ys)
        dt = t_new - t
        if f0 is None:
            f0 = f.perturbed(t, y, +1) if perturb else f(t, y)
        if cb_step is not None:
            cb_step(_ttensor(t, problem), problem.layout.unflatten(y), _ttensor(dt, problem))
        result = solver.step(f, t, y, f0, dt, state, ws, with_error=False, f_last=f_last)
        y_new, state = result.y_new, result.state
        stats.n_steps += 1
        stats.n_accepted += 1
        f_new = None
        if ((next_out < t_new or event is not None) and interp == "cubic") or dense is not None:
            f_new = f.perturbed(t_new, y_new, +1) if perturb else f(t_new, y_new)
        while next_out <= t_new:
            if next_out == t_new:
                ys.append(y_new)
            else:
                theta = (next_out - t) / dt
                if interp == "linear":
                    ys.append(linear(y, y_new, theta))
                else:
                    ys.append(hermite(y, y_new, f0, f_new, dt, theta))
            out_i += 1
            if out_i == n_out:
                break
            next_out = t_out[out_i]
        if steps is not None:
            steps.append(StepRecord(t, dt, t_new, y, False))
        if dense is not None:
            dense.append(HermiteInterpolant(t, dt, y, y_new, f0, f_new).detached())
        if progress is not None:
            progress.update(t_new, stats.n_accepted)
        if event is not None:
            step_interp = (LinearInterpolant(t, dt, y, y_new) if interp == "linear"
                           else HermiteInterpolant(t, dt, y, y_new, f0, f_new))
            hit = event.check(step_interp, y_new)
            if hit is not None:
                return LoopResult(ys, stats, t_new, y_new, steps, event=hit)
        y, t = y_new, t_new
        f0 = f_new
    # Fixed-grid methods do not sync per step; check finiteness once, at the end.
    if not bool(torch.isfinite(y).all()):  # host sync: once per solve
        bad = next((i for i, v in enumerate(ys) if not bool(torch.isfinite(v).all())), len(ys))
        t_bad = t_out[min(bad, n_out - 1)]
        raise _fail(problem, Status.NONFINITE, t_bad,
                    "The fixed-grid solution became non-finite by this output time; use a "
                    "smaller step_size or an adaptive method.", stats, ys[:bad])
    return LoopResult(ys, stats, t, y, steps)
