"""The one solve pipeline behind ``solve``, ``odeint``, ``odeint_adjoint`` and ``odeint_event``.

validate -> frozen loop configuration -> gradient mode picked once -> one loop (joint or
per sample, with or without events) -> event time -> the mode's gradient attached ->
output-time gradients -> :class:`~odeflow.Solution`. Events, per-sample batches, dense
output and progress are inputs of this pipeline, not other paths. The gradient modes
(``gradient=``) are those of :mod:`odeflow.sensitivity`: only ``direct`` runs the loop
under autograd.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from .dense import DenseOutput
from .event_location import EventLocator
from .integrate import FAILURES, Hooks
from .problem import FAR, make_problem
from .progress import Progress
from .run import failure, run
from .sensitivity import find_params
from .sensitivity.adjoint import AdjointConfig, attach_adjoint, check_lanes_config
from .sensitivity.checkpoint import attach_checkpoint
from .sensitivity.event_time import attach_event_time
from .sensitivity.time_grad import attach_output_times, shift_initial_state
from .solution import EventSolution, SampleStats, Solution
from .solvers import MethodSpec
from .stats import SolveError, Status, record_last_stats

__all__ = ["run_solve"]


def run_solve(func: Callable, y0: Any, t: Tensor, *, rtol: Any, atol: Any, spec: MethodSpec,
              options: dict[str, Any], event_fn: Callable | None, gradient: str,
              adjoint_config: AdjointConfig | None, adjoint_params: Sequence[Tensor] | None,
              event_direction: Any, throw: bool, dense: bool, progress: bool) -> Solution:
    """The pipeline (``solve`` has checked ``gradient``, the method and the options)."""
    events = event_fn is not None
    if events and not callable(event_fn):
        raise TypeError(f"event_fn must be callable as event_fn(t, y), got {type(event_fn)}")
    if not events and event_direction is not None:
        raise ValueError("event_direction is only meaningful together with event_fn")
    if spec.external and (events or dense):
        raise ValueError("method='scipy_solver' supports neither event_fn nor dense=True; use "
                         "an odeflow method (e.g. 'dopri5')")
    problem = make_problem(func, y0, t, rtol, atol, options, search=events)
    grad_on = torch.is_grad_enabled()
    mode = gradient if grad_on else "direct"
    if problem.lanes_api:
        spec.check_per_sample(options, mode)
        if mode == "adjoint":
            check_lanes_config(adjoint_config, problem, spec)
    if mode == "checkpoint" and not spec.replayable:
        raise ValueError(f"gradient='checkpoint' replays single steps and needs a one-step "
                         f"method; method={spec.name!r} is not one (use gradient='adjoint' "
                         "or 'direct')")
    params = find_params(adjoint_params, mode, problem) if mode != "direct" else ()
    C = problem.clock
    # SciPy's steps carry no graph: its solution has gradients by the adjoint alone.
    no_graph = spec.external and mode == "direct"
    if no_graph and (problem.y0.requires_grad or (isinstance(func, torch.nn.Module) and any(
            p.requires_grad for p in func.parameters()))):
        warnings.warn(
            "method='scipy_solver': gradients do not flow through SciPy's steps, so this "
            "solution has no gradient; use odeint_adjoint (gradient='adjoint') to "
            "differentiate a SciPy solve", UserWarning, stacklevel=3)
    time_grad = grad_on and problem.t.requires_grad and not no_graph
    y0_run = shift_initial_state(problem, problem.y0) if time_grad else problem.y0
    direction = event_direction if event_direction is not None else getattr(
        event_fn, "direction", 0)
    locator = EventLocator(replace(problem, y0=problem.y0.detach()), event_fn, direction,
                           field_slope=not spec.adaptive) if events else None
    bar = Progress(C, desc="event search" if events else (
        "per-sample solve" if problem.per_sample else "solve")) if progress else None
    hooks = Hooks(event=locator, dense=[] if dense or (mode == "adjoint" and spec.implicit)
                  else None, progress=bar)
    y0_loop = y0_run if mode == "direct" else y0_run.detach()
    loop_problem = problem if y0_loop is problem.y0 else replace(problem, y0=y0_loop)
    result = None
    try:
        with torch.set_grad_enabled(grad_on and mode == "direct"):
            result, stepper, cfg = run(loop_problem, spec, hooks, record=mode == "checkpoint",
                                       search=events)
    finally:
        if bar is not None:
            bar.close(result.t_last if result is not None else C.t0,
                      result.stats.n_steps if result is not None else 0)
    unbounded = events and not C.per_sample and abs(C.t_end) >= FAR  # (read for one lane)
    hits = locator.hits if events else None
    if C.per_sample and events:  # the loop gave each sample its event or its failure
        result.status = torch.where(result.status == int(Status.SUCCESS), int(Status.NO_EVENT),
                                    result.status)
    err = failure(problem, result, fixed=spec.family == "fixed", unbounded=unbounded,
                  events=events, explicit=spec.adaptive and not spec.implicit)
    stats = result.stats
    failed = (torch.isin(result.status, torch.tensor(FAILURES, device=C.device))
              if C.per_sample else None)  # failed lanes get no gradient
    if events and not C.per_sample and err is None:
        if bool(hits.found[0]):
            stats.status = Status.EVENT
            kind = "rising" if bool(hits.rising[0]) else "falling"
            stats.message = (f"{Status.EVENT.message} Value {int(hits.index[0])} of event_fn "
                             f"crossed ({kind}) at t={C.sign * float(hits.t[0])!r}.")
        else:
            stats.status = Status.NO_EVENT
            end = "the end of an unbounded search" if unbounded else "t[1]"
            t_reached = C.sign * result.t_last
            stats.message = (f"{Status.NO_EVENT.message} No crossing up to t={t_reached!r} "
                             f"({end}).")
            if throw and not problem.lanes_api:  # (per sample, no crossing is an outcome)
                err = SolveError(Status.NO_EVENT, t_reached, "Pass a later t[1] (or inf), or "
                                 "check event_fn.", stats)
        result.status = int(stats.status)
    record_last_stats(stats)
    sample_stats = None
    if problem.lanes_api:  # (one sample on the scalar clock: (1,) counts)
        sample_stats = SampleStats(*((result.status, *result.lane_counts) if C.per_sample else (
            torch.tensor([int(v)], device=result.y_last.device)
            for v in (result.status, stats.n_steps, stats.n_accepted, stats.n_rejected))))
    if err is not None and throw:
        err.sample_stats = sample_stats  # type: ignore[attr-defined]
        raise err
    ys = result.ys
    if not C.per_sample:  # stacked, nan at the output times not reached
        ys = torch.stack(ys)
        if ys.shape[0] < C.n_out:
            ys = torch.cat([ys, ys.new_full((C.n_out - ys.shape[0], ys.shape[1]), math.nan)])
    if err is not None and not C.per_sample:
        # One lane failed and throw=False: the outputs reached, nan after; no gradient.
        return Solution(problem.layout.unflatten(ys.detach()), t, stats,
                        dense=_dense(problem, hooks, result.t_last), sample_stats=sample_stats)
    y_stop = result.y_last
    if events:
        t_stop = torch.where(hits.found, hits.t, torch.as_tensor(
            result.t_last, dtype=torch.float64, device=hits.found.device))
        y_stop = torch.where(hits.found[:, None], hits.y, y_stop.reshape(hits.y.shape))
    if mode == "checkpoint":
        ys, y_stop = attach_checkpoint(problem, stepper, cfg, stats, y0_run, params,
                                       result.records, ys, y_stop, failed,
                                       hits.found if events else None)
    elif mode == "adjoint":
        pieces = hooks.dense if spec.implicit else None
        if not events:
            ys = attach_adjoint(problem, adjoint_config, stats, y0_run, params, ys, pieces, failed)
        else:  # from the event state back to y0
            rows = y_stop.shape if C.per_sample else (-1,)
            ys_b = torch.stack([y0_run.detach().reshape(rows), y_stop.detach().reshape(rows)])
            grid = (torch.stack([C.grid[:, 0], t_stop], 1) if C.per_sample
                    else (C.t0, float(t_stop[0])))
            y_stop = attach_adjoint(problem, adjoint_config, stats, y0_run, params, ys_b, pieces,
                                    failed, grid)[1].reshape(y_stop.shape)
    if not events:
        if time_grad:
            ys = attach_output_times(problem, ys, stats)
        return Solution(problem.layout.unflatten(ys), t, stats,
                        dense=_dense(problem, hooks, result.t_last), sample_stats=sample_stats)
    if grad_on:
        t_event_user, y_stop = attach_event_time(locator, problem, t_stop, y_stop)
    else:
        t_event_user = C.sign * t_stop
    if C.per_sample:  # a failed sample's final state is nan, as a failed solve of it alone
        y_stop = torch.where(failed[:, None], math.nan, y_stop)
    ys_out = problem.layout.unflatten(torch.stack([problem.y0, y_stop.reshape(problem.y0.shape)]))
    dense_out = _dense(problem, hooks, t_stop if C.per_sample else float(t_stop[0]))
    if not problem.lanes_api:
        found = bool(hits.found[0])
        event_t = t_event_user.reshape(()).to(t.dtype)
        return EventSolution(ys_out, torch.stack([t[0], event_t]), stats,
                             event_t if found else None, dense=dense_out,
                             event_index=int(hits.index[0]) if found else None)
    event_t = torch.where(hits.found, t_event_user, math.nan).to(t.dtype)
    t0 = t[:, 0] if t.ndim == 2 else t[:1].expand(event_t.shape[0])
    # ts ends where each sample stopped (one sample on the scalar clock: nan without an event)
    t_end = t_event_user.to(t.dtype) if C.per_sample else event_t
    return EventSolution(ys_out, torch.stack([t0.to(event_t.device), t_end], 1), stats, event_t,
                         dense=dense_out, sample_stats=sample_stats, event_index=hits.index)


def _dense(problem: Any, hooks: Hooks, reached: Any) -> DenseOutput | None:
    """The dense output kept by the loop, up to where the solve stopped (``nan`` beyond)."""
    return DenseOutput(problem, hooks.dense, reached) if hooks.dense else None
