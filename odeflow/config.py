"""From a checked problem and method to the loop's frozen :class:`~odeflow.integrate.LoopConfig`.

Built once per solve: step limits and the controller from ``options``, and the stop
times every lane lands on exactly (``jump_t``, ``step_t``, the output times of a method
that steps to them, the end), or the grid of a fixed-grid method (``step_size``,
``grid_constructor`` or the output times). For one lane they are Python floats; per
sample they are ``(B, K)`` matrices, one row per lane, ``inf`` padded.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .integrate import LoopConfig
from .options import make_controller, max_steps, positive_float
from .problem import Problem
from .solvers import CALLBACKS

__all__ = ["loop_config"]


def loop_config(problem: Problem, spec: Any, stepper: Any, *, record: bool = False,
                search: bool = False, fsal: bool = True) -> LoopConfig:
    """The loop's configuration for ``problem`` solved by ``stepper`` (of ``spec``).

    ``search``: an event search (a fixed grid is then generated lazily, bounded by
    ``max_num_steps``).
    """
    opts = problem.options
    cbs = tuple(getattr(problem.user_func, name, None) for name in CALLBACKS)
    if not spec.adaptive:  # every fixed-grid step is accepted: no accept/reject callbacks
        return LoopConfig(False, None, max_steps(opts), 0.0, math.inf, None,
                          _fixed_grid(problem, search), None,
                          perturb=bool(opts.get("perturb", False)), callbacks=(cbs[0], None, None),
                          record=record, fsal=fsal)
    stops, jumps = _adaptive_stops(problem, stepper)
    return LoopConfig(
        True, make_controller(opts), max_steps(opts),
        positive_float(opts, "min_step", allow_zero=True) or 0.0,
        positive_float(opts, "max_step") or math.inf,
        positive_float(opts, "first_step"), stops, jumps, callbacks=cbs,
        record=record, fsal=fsal, compile=bool(opts.get("compile", False)))


# ------------------------------------------------------------------------------- adaptive
def _user_times(problem: Problem, name: str) -> Tensor | list[float] | None:
    value = problem.options.get(name)  # checked by validate_options
    if isinstance(value, Tensor):
        return value.detach() if problem.per_sample else value.detach().reshape(-1).tolist()
    return None if value is None else [float(v) for v in value]


def _adaptive_stops(problem: Problem, stepper: Any) -> tuple[Any, Any]:
    C = problem.clock
    jumps = _user_times(problem, "jump_t")
    step_t = _user_times(problem, "step_t")
    if not C.per_sample:
        t0, t1 = C.grid[0], C.grid[-1]
        jump_set, step_set = ({C.sign * v for v in values or () if t0 < C.sign * v < t1}
                              for values in (jumps, step_t))
        stop_set = step_set | jump_set | {t1}
        if stepper.steps_to_outputs:
            stop_set.update(C.grid[1:])
        stops = sorted(stop_set)
        return stops, ([s in jump_set for s in stops] if jump_set else None)
    extra = [(_lane_times(values, C.sign, C.batch, name), name == "jump_t")
             for name, values in (("jump_t", jumps), ("step_t", step_t)) if values is not None]
    if stepper.steps_to_outputs and C.grid.shape[1] > 2:
        extra.append((C.grid[:, 1:-1], False))
    stops, flags = _stop_matrix(C.grid, extra)
    return stops, (flags if jumps is not None else None)


def _lane_times(values: Any, sign: Tensor, batch: int, name: str) -> Tensor:
    """Per-sample stop times as canonical ``(B, K)``: 1-D (shared) or ``(B, K)``."""
    times = torch.as_tensor(values, dtype=torch.float64).to(sign.device)
    if times.ndim == 1:
        times = times.expand(batch, -1)
    elif times.ndim != 2 or times.shape[0] != batch:
        raise ValueError(f"with options['per_sample'], options['{name}'] must be 1-D (times "
                         f"shared by all samples) or of shape (B, K) with B = {batch}, got "
                         f"{tuple(times.shape)}")
    return sign[:, None] * times


def _stop_matrix(grid: Tensor, extra: list[tuple[Tensor, bool]]) -> tuple[Tensor, Tensor]:
    """Sorted per-lane stop times strictly inside each row's span, then its end; and
    whether each is a jump."""
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


# ----------------------------------------------------------------------------- fixed grid
class LazyGrid:
    """``t0 + i h`` for ``i < n``, then ``t1``: a fixed grid generated as the loop reads it
    (an event search without an end time needs no list). ``size`` is its number of stops
    (a Python int, which may exceed what ``len`` can return)."""

    def __init__(self, t0: float, t1: float, h: float, n: int):
        self.t0, self.t1, self.h, self.size = t0, t1, h, n

    def __getitem__(self, i: int) -> float:
        # stop i is grid point i + 1 (the loop starts at t0)
        return self.t0 + (i + 1) * self.h if i + 1 < self.size else self.t1


def _fixed_grid(problem: Problem, search: bool) -> Any:
    """The stop times of a fixed-grid solve, without its start (the loop starts there).

    ``options["step_t"]`` are times the grid lands on and starts again from (the adjoint's
    output times): each segment between them gets its own ``step_size`` grid.
    """
    opts, C = problem.options, problem.clock
    constructor = opts.get("grid_constructor")
    max_num_steps = max_steps(opts)
    h = positive_float(opts, "step_size")
    if search and h is None:
        raise ValueError("event_fn with a fixed-grid method needs options['step_size'] "
                         "(the search has no end time to build a grid on)")
    restarts = _user_times(problem, "step_t")
    if C.per_sample:
        if constructor is not None:
            raise ValueError("options['grid_constructor'] is not supported with "
                             "options['per_sample']; give options['step_size'] (each sample "
                             "then steps from its own t0) or the output times")
        extra = [] if restarts is None else [(_lane_times(restarts, C.sign, C.batch, "step_t"),
                                              False)]
        if h is None:
            return _stop_matrix(C.grid, [(C.grid[:, 1:-1], False), *extra])[0]
        ends = _stop_matrix(C.grid, extra)[0]
        starts = torch.cat([C.grid[:, :1], ends[:, :-1]], 1)
        n = torch.where(torch.isfinite(ends),
                        torch.clamp(torch.ceil((ends - starts) / h - 1e-9), min=1), 0.0)
        n_max = int(n.sum(1).max())  # host sync: setup only
    else:
        t0, t1 = C.grid[0], C.grid[-1]
        inner = sorted({C.sign * v for v in restarts or () if t0 < C.sign * v < t1})
        if h is None:
            grid = (_constructed_grid(problem, constructor, max_num_steps)[1:]
                    if constructor is not None else list(C.grid[1:]))
            return sorted({*grid, *inner}) if inner else grid
        ends = [*inner, t1]
        starts = [t0, *inner]
        # A tolerance of 1e-9 steps keeps (t1 - t0) / h = 10.000000000000002 from adding a
        # sliver step.
        n = [max(1, math.ceil((b - a) / h - 1e-9)) for a, b in zip(starts, ends)]
        n_max = sum(n)
        if search and not inner:
            return LazyGrid(t0, t1, h, n_max)
    if n_max > max_num_steps and not search:
        longest = "longest " if C.per_sample else ""
        raise ValueError(f"options['step_size']={h!r} needs {n_max} steps over the {longest}time "
                         f"span, more than max_num_steps={max_num_steps}; raise "
                         "options['max_num_steps'] to allow it")
    if not C.per_sample:
        return [x for a, b, k in zip(starts, ends, n) for x in (
            *(a + i * h for i in range(1, k)), b)]
    pieces = []
    for a, b, k in zip(starts.T, ends.T, n.T):  # each segment, for every lane at once
        # (a search stops after max_num_steps: an unbounded one's grid is cut there)
        last = min(int(k.max()), max_num_steps + 1)
        i = torch.arange(1, last + 1, dtype=torch.float64, device=a.device)
        pieces.append(torch.where(i < k[:, None], a[:, None] + i * h,
                                  torch.where(i == k[:, None], b[:, None], math.inf)))
    grid = torch.cat(pieces, 1)
    return grid if len(pieces) == 1 else grid.sort(1)[0]


def _constructed_grid(problem: Problem, constructor: Any, max_num_steps: int) -> list[float]:
    """``grid_constructor(func, y0, t)`` called with the user's own ``func``, ``y0`` and ``t``
    (a decreasing ``t`` stays decreasing); its grid is returned in canonical time."""
    C = problem.clock
    t0, t1 = C.grid[0], C.grid[-1]
    t_user = torch.tensor([C.sign * x for x in C.grid], dtype=problem.t.dtype)
    grid = constructor(problem.user_func, problem.layout.unflatten(problem.y0), t_user)
    if not isinstance(grid, Tensor) or grid.ndim != 1 or grid.numel() < 2:
        raise ValueError("options['grid_constructor'] must return a 1-D tensor of >= 2 times")
    values = [C.sign * v for v in grid.detach().to("cpu", torch.float64).tolist()]
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError("options['grid_constructor'] must return times strictly monotone in "
                         "the direction of t")
    scale0, scale1 = 1e-6 * max(1.0, abs(t0)), 1e-6 * max(1.0, abs(t1))
    if abs(values[0] - t0) > scale0 or abs(values[-1] - t1) > scale1:
        raise ValueError(
            f"options['grid_constructor'] must return a grid from t[0]={C.sign * t0} "
            f"to t[-1]={C.sign * t1}, got {grid[0].item()} .. {grid[-1].item()}")
    values[0], values[-1] = t0, t1
    if len(values) - 1 > max_num_steps:
        raise ValueError(f"the grid has {len(values) - 1} steps, more than max_num_steps")
    return values
