"""``solve(..., options={"per_sample": True})``: checks, options, gradients, events, results.

The leading dimension of ``y0`` holds ``B`` independent problems sharing ``func``. Each
sample has its own steps (:mod:`odeflow.integrate_per_sample`), and may have its own output
times: ``t`` of shape ``(B, T)`` gives sample ``b`` the times ``t[b]`` (each row strictly
monotone; starts, ends and directions may differ) and ``ys[j, b] = y_b(t[b, j])``; a 1-D
``t`` is shared by every sample. With ``event_fn`` each sample stops at its own first
crossing (:mod:`odeflow.events_per_sample`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .dense_per_sample import PerSampleDense
from .events_per_sample import EventTracker, ift_reroute
from .integrate_per_sample import (
    FAILURES,
    BatchFunc,
    PerSampleConfig,
    SampleLayout,
    batched_norm,
    raise_failures,
    run_per_sample,
)
from .options import make_controller, max_steps, positive_float
from .problem import make_problem
from .progress import Progress
from .sensitivity import find_params
from .sensitivity.per_sample import (
    attach_adjoint,
    attach_checkpoint,
    attach_output_times,
    check_adjoint_config,
    shift_initial_states,
)
from .solution import EventSolution, Solution
from .solvers.explicit_rk import ExplicitRK
from .stats import Status, record_last_stats

__all__ = ["solve_per_sample"]

#: The end time of an unbounded event search (``t1 = ±inf``), as ``events._FAR``.
_FAR = 1e300
_CALLBACKS = ("callback_step", "callback_accept_step", "callback_reject_step")


def _check_y0(y0: Any) -> int:
    """The batch size of a real ``y0`` (tensor or tuple of tensors, batch first)."""
    parts = tuple(y0) if isinstance(y0, (tuple, list)) else (y0,)
    for i, p in enumerate(parts):
        where = f"y0[{i}]" if isinstance(y0, (tuple, list)) else "y0"
        if not isinstance(p, Tensor) or p.is_complex() or not p.is_floating_point() or (
                p.ndim < 1):
            kind = (f"a tensor of shape {tuple(p.shape)}, dtype {p.dtype}"
                    if isinstance(p, Tensor) else type(p).__name__)
            raise ValueError(f"options['per_sample'] needs {where} to be a real floating tensor "
                             f"with the batch dimension first (a complex state is not "
                             f"supported), got {kind}")
        if p.shape[0] != parts[0].shape[0]:
            raise ValueError(f"options['per_sample'] needs every tensor of y0 to share the batch "
                             f"size: y0[0] has {parts[0].shape[0]}, {where} has {p.shape[0]}")
    return parts[0].shape[0]


def _check_t(t: Any, batch: int, events: bool) -> Tensor:
    """``t`` as a ``(B, T)`` float64 user-time grid (detached), checked row by row."""
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be a torch.Tensor of times, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"t must be floating point, got dtype {t.dtype}")
    if t.ndim not in (1, 2) or t.numel() == 0:
        raise ValueError(f"with options['per_sample'], t must be 1-D (shared times) or of shape "
                         f"(B, T) with B = {batch} (one row per sample), got {tuple(t.shape)}")
    if t.ndim == 2 and t.shape[0] != batch:
        raise ValueError(f"t of shape {tuple(t.shape)} gives {t.shape[0]} rows of times, but y0 "
                         f"has batch size B = {batch}; t must have shape (B, T) or (T,)")
    grid = t.detach().to(torch.float64)
    grid = grid.expand(batch, -1) if grid.ndim == 1 else grid
    if events and grid.shape[1] != 2:
        raise ValueError("with event_fn, t must be [t0, t1] or of shape (B, 2) (one search "
                         f"[t0, t1] per sample; t1 = ±inf for no end time), got {tuple(t.shape)}")
    if events:
        if not bool(torch.isfinite(grid[:, 0]).all()):  # host sync: once per solve
            raise ValueError("t[..., 0] (the initial times) must be finite")
        grid = torch.where(torch.isinf(grid), torch.copysign(torch.full_like(grid, _FAR), grid),
                           grid)
    elif not bool(torch.isfinite(grid).all()):  # host sync: once per solve
        raise ValueError("t must be finite")
    if grid.shape[1] > 1:
        sign = torch.sign(grid[:, 1] - grid[:, 0])
        step = (grid[:, 1:] - grid[:, :-1]) * sign[:, None]
        bad = ~(step > 0).all(1)
        if bool(bad.any()):  # host sync: once per solve
            row = int(bad.nonzero()[0, 0])
            where = f"t[{row}]" if t.ndim == 2 else "t"
            raise ValueError(f"{where} must be strictly increasing or strictly decreasing; got "
                             f"{grid[row].tolist()}")
    return grid


def _stop_times(options: dict, name: str, sign: Tensor, batch: int) -> Tensor | None:
    """``jump_t``/``step_t`` as canonical ``(B, K)``: 1-D (shared) or ``(B, K)`` per sample."""
    value = options.get(name)
    if value is None:
        return None
    times = (value.detach() if isinstance(value, Tensor) else torch.tensor(
        [float(v) for v in value])).to(device=sign.device, dtype=torch.float64)
    if times.ndim == 1:
        times = times.expand(batch, -1)
    elif times.ndim != 2 or times.shape[0] != batch:
        raise ValueError(f"with options['per_sample'], options['{name}'] must be 1-D (times "
                         f"shared by all samples) or of shape (B, K) with B = {batch}, got "
                         f"{tuple(times.shape)}")
    return sign[:, None] * times


def _tolerance(tol: Any, layout: SampleLayout, like: Tensor) -> float | Tensor:
    """A tolerance (already checked by ``make_problem``) as a float, or, given one per tuple
    component, as one value per column of the ``(B, n)`` state."""
    if isinstance(tol, (tuple, list)):
        return torch.cat([torch.full((n,), float(v), dtype=like.dtype, device=like.device)
                          for v, n in zip(tol, layout.sizes)])
    return float(tol)


def _config(rk: ExplicitRK, y0: Tensor, options: dict, rtol: Any, atol: Any,
            norm: Callable) -> PerSampleConfig:
    return PerSampleConfig(
        rk=rk, controller=make_controller(options),
        rtol=rtol, atol=atol, norm=norm, max_num_steps=max_steps(options),
        first_step=positive_float(options, "first_step", None),
        min_step=positive_float(options, "min_step", None, allow_zero=True) or 0.0,
        max_step=positive_float(options, "max_step", None) or math.inf,
        compile=bool(options.get("compile", False)))


def solve_per_sample(
    func: Callable,
    y0: Any,
    t: Any,
    *,
    rtol: Any,
    atol: Any,
    spec: Any,
    options: dict[str, Any],
    event_fn: Callable | None,
    gradient: str,
    adjoint_config: Any,
    adjoint_params: Sequence[Tensor] | None,
    event_direction: Any,
    throw: bool,
    dense: bool = False,
    progress: bool = False,
) -> Any:
    """Run a ``per_sample`` solve; ``solve`` dispatches here (see the module docstring).

    With ``dense``, the :class:`~odeflow.Solution` evaluates each sample's solution at any
    time of its span (:class:`~odeflow.dense_per_sample.PerSampleDense`).

    Returns:
        A :class:`~odeflow.Solution` (an ``EventSolution`` with ``event_fn``) with
        ``ys`` ``(T, B, ...)``, ``ts`` (``t`` as passed; ``(B, 2)`` ``[t0, t_stop]`` with
        events), totals in ``stats``, per-sample counts and outcomes in ``sample_stats``;
        with events ``event_t`` ``(B,)`` (``nan`` for a sample that did not cross) and
        ``event_index`` ``(B,)`` (``-1`` likewise).

    Raises:
        ValueError, TypeError: bad arguments, naming them.
        SolveError: some sample failed (too many steps, step-size underflow, non-finite
            values) and ``throw`` is true; raised after every sample has finished, with
            ``stats`` and ``sample_stats``.
    """
    if not spec.adaptive:
        raise ValueError(f"options['per_sample'] needs an adaptive method, got {spec.name!r}")
    if spec.implicit:
        _check_implicit_per_sample(spec, options, gradient, torch.is_grad_enabled())
    if event_fn is None and event_direction is not None:
        raise ValueError("event_direction is only meaningful together with event_fn")
    if event_fn is not None and not callable(event_fn):
        raise TypeError(f"event_fn must be callable as event_fn(t, y), got {type(event_fn)}")
    B = _check_y0(y0)
    events = event_fn is not None
    grid_user = _check_t(t, B, events)
    grad_on = torch.is_grad_enabled()
    time_grad = grad_on and t.requires_grad
    if any(getattr(func, name, None) is not None for name in _CALLBACKS):
        warnings.warn("options['per_sample'] does not call func's callback_step/"
                      "callback_accept_step/callback_reject_step", UserWarning, stacklevel=4)
    dummy_t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    problem = make_problem(func, y0, dummy_t, rtol, atol, spec.name, options)
    first = y0[0] if isinstance(y0, (tuple, list)) else y0
    if grid_user.device != first.device:
        grid_user = grid_user.to(first.device)
    sign = torch.where(grid_user[:, -1] >= grid_user[:, 0], 1.0, -1.0)
    grid = sign[:, None] * grid_user
    layout = SampleLayout.of(y0)
    cfg = _config(spec.build(options), first, options, _tolerance(rtol, layout, first),
                  _tolerance(atol, layout, first), batched_norm(options.get("norm"), layout))
    jumps = _stop_times(options, "jump_t", sign, B)
    step_t = _stop_times(options, "step_t", sign, B)
    f = BatchFunc(func, layout, first.dtype, sign, problem.func)
    y0_flat = layout.flatten(y0)
    t0_user = t[:, 0] if t.ndim == 2 else t[0].expand(B)
    y0_run = y0_flat
    if time_grad:  # each sample's t0 moves its whole trajectory
        y0_run = shift_initial_states(f, t0_user, y0_flat)
    tracker = None
    if events:
        if event_direction is None:
            event_direction = getattr(event_fn, "direction", 0)
        tracker = EventTracker(f, event_fn, grid[:, 0], y0_flat.detach(), event_direction)

    mode = gradient if grad_on else "direct"
    params = find_params(func, adjoint_params, mode) if mode != "direct" else ()
    if mode == "adjoint":
        check_adjoint_config(adjoint_config)
    if dense and events:
        raise ValueError("dense=True is not supported together with event_fn yet")
    pieces: list | None = [] if dense else None
    bar = Progress(0.0, 1.0, desc="per-sample solve", label="done") if progress else None
    kwargs = dict(jumps=jumps, step_t=step_t, event=tracker, dense=pieces, progress=bar)
    try:
        if mode == "direct":
            result = run_per_sample(f, y0_run, grid, cfg, **kwargs)
        else:
            with torch.no_grad():
                result = run_per_sample(f, y0_run.detach(), grid, cfg,
                                        record=mode == "checkpoint", **kwargs)
    finally:
        if bar is not None:
            done = "result" in locals()
            bar.close(bar.t1 if done else bar.t0, result.stats.n_steps if done else 0)
    stats = result.stats
    sample = result.sample
    if events:
        assert tracker is not None
        hits = tracker.hits
        sample.status = torch.where(hits.found, int(Status.EVENT), torch.where(
            sample.status == int(Status.SUCCESS), int(Status.NO_EVENT), sample.status))
        t_stop = torch.where(hits.found, hits.t, result.t_last)
        y_stop = torch.where(hits.found[:, None], hits.y, result.y_last)
    stats.nfe = problem.func.nfe
    try:
        raise_failures(result, sign, throw, events)
    finally:
        record_last_stats(stats)

    ys = result.ys
    if mode != "direct":
        if events:
            grid_b = torch.stack([grid[:, 0], t_stop], 1)
            ys_fwd = torch.stack([y0_flat.detach(), y_stop.detach()])
        else:
            grid_b, ys_fwd = grid, ys
        failed = torch.isin(sample.status, torch.tensor([int(c) for c in FAILURES],
                                                        device=sample.status.device))
        if mode == "checkpoint":
            ys, y_last = attach_checkpoint(f, cfg.rk, grid, result, y_stop if events else
                                           result.y_last, stats, y0_run, params, failed)
            if events:
                y_stop = y_last
        else:
            out = attach_adjoint(f, grid_b, ys_fwd, adjoint_config, options, stats, y0_run,
                                 params, jumps, step_t, failed)
            if events:
                y_stop = out[1]
            else:
                ys = out
    if not events:
        if time_grad:
            ys = attach_output_times(f, t, ys, stats)
        ys_user = layout.unflatten(ys, (ys.shape[0],))
        dense_out = None
        if pieces:
            dense_out = PerSampleDense(cfg.rk, pieces, sign, grid, layout, f)
        return Solution(ys_user, t, stats, sample_stats=sample, dense=dense_out)
    assert tracker is not None
    if grad_on:
        t_event_user, y_stop = ift_reroute(tracker, t_stop, y_stop)
    else:
        t_event_user = sign * t_stop
    t_dtype = t.dtype
    event_t = torch.where(tracker.hits.found, t_event_user, math.nan).to(t_dtype)
    ts = torch.stack([t0_user.to(t_event_user.device), t_event_user.to(t_dtype)], 1)
    ys_user = layout.unflatten(torch.stack([y0_flat, y_stop]), (2,))
    return EventSolution(ys_user, ts, stats, event_t, sample_stats=sample,
                         event_index=tracker.hits.index)


def _check_implicit_per_sample(spec: Any, options: dict, gradient: str, grad_on: bool) -> None:
    """What per-sample mode supports of the implicit methods: the Rosenbrock methods with
    autodiff Jacobians ``(B, n, n)``, with direct or checkpointed gradients."""
    if spec.name not in ("rodas5p", "rodas4"):
        raise ValueError(f"options['per_sample'] supports the implicit methods 'rodas5p' and "
                         f"'rodas4', got method={spec.name!r}")
    for name in ("jacobian", "linear_solver", "compile"):
        if options.get(name) not in (None, False, "dense"):
            raise ValueError(f"options['{name}'] is not supported with options['per_sample'] "
                             f"and method={spec.name!r} (the per-sample Jacobians are "
                             "computed by autodiff, (B, n, n))")
    if grad_on and gradient == "adjoint":
        raise ValueError(f"gradient='adjoint' with options['per_sample'] and method="
                         f"{spec.name!r} is not supported (a stiff adjoint needs the forward "
                         "dense output); use gradient='checkpoint' or 'direct'")
