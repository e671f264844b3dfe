"""Event location: stop a solve where ``event_fn(t, y)`` crosses zero, with a differentiable time.

How it works:

1. **Detection and location** (:mod:`odeflow.event_location`): after every accepted step
   the loop hands the step's dense output to an :class:`EventLocator`, which samples
   ``event_fn`` along it and locates the first crossing, with no extra solver steps.
2. **Search range.** ``odeint``/``odeint_adjoint``/``odeint_event`` search from ``t[0]``
   without an end time, as torchdiffeq does (every other element of ``t`` only gives the
   direction); ``solve(..., event_fn=...)`` searches ``[t0, t1]`` and ``t1 = ±inf`` lifts
   the bound. Either way ``options["max_num_steps"]`` bounds the search.
3. **Gradient** (implicit function theorem). With ``t*`` defined by ``g(t*, y(t*; θ)) = 0``,
   ``dt*/dθ = -(∂g/∂y · ∂y/∂θ + ∂g/∂θ) / (∂g/∂t + ∂g/∂y · ẏ)``, and the returned state
   ``y(t*)`` gets ``ẏ dt*/dθ`` on top of ``∂y/∂θ``. Both are attached by a zero-valued
   correction (``t* - (g - stop_grad(g)) / stop_grad(D)``), so the gradient flows through
   whichever gradient mode computed ``y(t*)`` and through any parameters ``event_fn`` itself
   holds. For adaptive methods ``ẏ`` is the time derivative of the dense output (not
   ``func``), which makes the derivative exact for the discretised solution under
   ``gradient="direct"`` and ``"checkpoint"``; on fixed grids, whose interpolant's slope is
   only the chord of the step, it is ``func`` at the event, as in torchdiffeq.

References:
    Chen, Amos & Nickel, "Learning Neural Event Functions for Ordinary Differential
    Equations", ICLR 2021.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from .event_location import EventHit, EventLocator
from .integrate import DEFAULT_MAX_NUM_STEPS, run_loop
from .problem import Problem, State, make_problem
from .progress import Progress
from .sensitivity import find_params
from .sensitivity.adjoint import AdjointConfig, attach_adjoint
from .sensitivity.checkpoint import attach_checkpoint
from .sensitivity.time_grad import shift_initial_state
from .solution import EventSolution
from .solvers import MethodSpec
from .stats import SolveError, SolveStats, Status, record_last_stats

__all__ = ["EventSolution", "EventHit", "EventLocator", "solve_event"]

EventFn = Callable[[Tensor, State], Tensor]

#: The end time used for an unbounded search (``t[-1] = ±inf``); the solve is then bounded
#: by ``options["max_num_steps"]`` alone.
_FAR = 1e300


# ------------------------------------------------------------- the event time's gradient
def _ift_reroute(event_fn: EventFn, locator: EventLocator, t_stop: Tensor, y_stop: Tensor,
                 ydot_user: Tensor, index: int) -> tuple[Tensor, Tensor]:
    """Attach ``dt*/dθ`` (implicit function theorem) to the event time and state.

    Returns ``(t*, y(t*))`` with the values of ``t_stop`` (float64) and ``y_stop``.
    """
    layout = locator.layout
    t_user = t_stop.detach().to(layout.real_dtype)
    g = event_fn(t_user, layout.unflatten(y_stop)).reshape(-1)[index]
    if not g.requires_grad:
        return t_stop, y_stop
    with torch.enable_grad():
        tt = t_user.clone().requires_grad_(True)
        yy = y_stop.detach().requires_grad_(True)
        gk = event_fn(tt, layout.unflatten(yy)).reshape(-1)[index]
        if gk.requires_grad:
            g_t, g_y = torch.autograd.grad(gk, (tt, yy), allow_unused=True)
        else:
            g_t, g_y = None, None
    with torch.no_grad():
        slope = torch.zeros((), dtype=layout.real_dtype, device=layout.device)
        if g_t is not None:
            slope = slope + g_t
        if g_y is not None:
            slope = slope + (g_y * ydot_user).sum()
    if float(slope) == 0.0:  # host sync: once per event
        warnings.warn("event_fn crosses zero tangentially (d event_fn / dt = 0 along the "
                      "solution): the event time has no derivative; returning it without "
                      "one", RuntimeWarning, stacklevel=4)
        return t_stop, y_stop
    # Zero-valued: its gradient is -(dg/dθ at fixed t) / (dg/dt along the solution).
    delta = -(g - g.detach()) / slope
    t_event = t_stop + delta.to(t_stop.dtype)
    y_event = y_stop + ydot_user * delta.to(y_stop.dtype)
    return t_event, y_event


def _field_at(problem: Problem, t: float, y: Tensor) -> Tensor:
    """``func`` at the event (canonical time and derivative), without graph."""
    with torch.no_grad():
        return problem.func(t, y.detach())


# ------------------------------------------------------------------------------ the solve
def _event_times(t: Any) -> tuple[Tensor, bool]:
    if not isinstance(t, Tensor) or t.ndim != 1 or t.numel() != 2:
        shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(
            "with event_fn, t must be a 1-D tensor of two times [t0, t1]: the search runs "
            f"from t0 towards t1 (t1 = inf or -inf for no end time), got {shape}"
        )
    if not t.is_floating_point():
        raise TypeError(f"t must be floating point, got dtype {t.dtype}")
    t0, t1 = t.detach().to("cpu", torch.float64).tolist()  # host sync: once per solve
    if not math.isfinite(t0):
        raise ValueError(f"t[0] must be finite, got {t0}")
    unbounded = math.isinf(t1)
    if unbounded:
        end = math.copysign(_FAR, t1)
        if (end > 0 and t0 >= _FAR) or (end < 0 and t0 <= -_FAR):
            raise ValueError(f"t[0] = {t0} is beyond the unbounded search's range")
        t1_tensor = torch.tensor([end], dtype=torch.float64, device=t.device)
    else:
        t1_tensor = t[1:].detach().to(torch.float64)
    return torch.cat([t[:1].to(torch.float64), t1_tensor]), unbounded


def _run_loop(problem: Problem, spec: Any, locator: EventLocator, y0_run: Tensor, mode: str,
              unbounded: bool) -> Any:
    """The adaptive loop with the event hook; under autograd only for ``mode="direct"``."""
    try:
        if mode == "direct":
            return run_loop(replace(problem, y0=y0_run), spec, event=locator)
        run_problem = replace(problem, y0=y0_run.detach())
        if mode == "adjoint" and spec.implicit and run_problem.dense_sink is None:
            # A stiff adjoint reads y from the forward dense output (interpolating_adjoint).
            run_problem = replace(run_problem, dense_sink=[])
        with torch.no_grad():
            result = run_loop(run_problem, spec, event=locator,
                              record_steps=mode == "checkpoint")
        result.pieces = run_problem.dense_sink
        return result
    except SolveError as err:
        if unbounded and err.status == Status.MAX_STEPS_REACHED:
            steps = problem.options.get("max_num_steps", f"{DEFAULT_MAX_NUM_STEPS} (default)")
            raise SolveError(err.status, err.t, f"event_fn did not cross zero within "
                             f"max_num_steps={steps} steps of a search without an end time; "
                             "raise options['max_num_steps'] or check event_fn.",
                             err.stats) from None
        raise


def solve_event(
    func: Callable[[Tensor, State], State],
    y0: State,
    t: Tensor,
    *,
    event_fn: EventFn,
    rtol: Any,
    atol: Any,
    spec: MethodSpec,
    options: dict[str, Any],
    gradient: str,
    adjoint_config: AdjointConfig | None,
    adjoint_params: Sequence[Tensor] | None,
    event_direction: Any,
    throw: bool,
    progress: bool = False,
) -> EventSolution:
    """Solve from ``t[0]`` until ``event_fn(t, y)`` crosses zero; ``solve(event_fn=...)`` runs it.

    ``solve`` checks the method, options and ``adjoint_options`` first and passes them
    here. Every method but ``scipy_solver`` works: adaptive ones locate the root on their
    dense output, fixed-grid ones on each step's interpolant (``options["interp"]``; an
    unbounded search needs ``options["step_size"]``).

    Args:
        t: ``[t0, t1]``: search from ``t0`` towards ``t1``; ``t1 = ±inf`` searches without an
            end time, bounded by ``options["max_num_steps"]`` (default 100000).
        event_fn: ``event_fn(t, y) -> Tensor`` with ``t`` and ``y`` as ``func`` gets them;
            any fixed shape: the first of its values to cross zero ends the solve. A value
            exactly zero at ``t0`` is not an event: it counts from the first step after which
            it is non-zero.
        event_direction: ``+1`` (only rising crossings), ``-1`` (only falling), ``0``
            (both), one value or one per value of ``event_fn``; ``None`` reads
            ``event_fn.direction`` (SciPy's convention), else ``0``.
        throw: raise :class:`~odeflow.SolveError` (status ``NO_EVENT``) when ``t1`` is reached
            without an event; if ``False``, return the solution at ``t1`` with
            ``event_t=None`` and ``stats.status == Status.NO_EVENT``.

    Returns:
        An :class:`EventSolution`: ``ys`` at ``[t0, t*]``, ``ts``, ``stats`` (status
        ``EVENT``; the message names the value and direction), ``event_t`` (0-dim, ``t``'s
        dtype, differentiable) and ``event_index``.

    Raises:
        ValueError, TypeError: invalid arguments; a non-finite event value.
        SolveError: no event before ``t1`` (``NO_EVENT``) or within ``max_num_steps``
            (``MAX_STEPS_REACHED``), step-size underflow, non-finite ``func``.
    """
    if not callable(event_fn):
        raise TypeError(f"event_fn must be callable as event_fn(t, y), got {type(event_fn)}")
    if not spec.supports_events:
        raise ValueError("event_fn is not supported with method='scipy_solver'; use an odeflow "
                         "method (e.g. 'dopri5')")
    opts = options
    t_prob, unbounded = _event_times(t)
    problem = make_problem(func, y0, t_prob, rtol, atol, spec.name, opts)
    if progress:
        problem = replace(problem, progress=Progress(problem.t_out[0], problem.t_out[-1],
                                                     problem.sign, desc="event search"))
    if event_direction is None:
        event_direction = getattr(event_fn, "direction", 0)
    locator = EventLocator(problem, event_fn, event_direction)

    grad_on = torch.is_grad_enabled()
    mode = gradient if grad_on else "direct"
    params = find_params(func, adjoint_params, mode) if mode != "direct" else ()
    y0_flat = problem.y0
    y0_run = y0_flat
    if grad_on and problem.t.requires_grad:
        y0_run = shift_initial_state(problem, y0_flat)
    stats = SolveStats()
    result = _run_loop(problem, spec, locator, y0_run, mode, unbounded)
    stats.copy_forward(result.stats)
    hit: EventHit | None = result.event
    if hit is None:
        stats.status = Status.NO_EVENT
        end = "the end of an unbounded search" if unbounded else "t[1]"
        stats.message = (f"{Status.NO_EVENT.message} No crossing up to "
                         f"t={problem.user_time(result.t_last)!r} ({end}).")
        stats.nfe = problem.func.nfe
        record_last_stats(stats)
        if throw:
            raise SolveError(Status.NO_EVENT, problem.user_time(result.t_last),
                             "Pass a later t[1] (or inf), or check event_fn.", stats)
        t_stop_c, y_stop = result.t_last, result.y_last
    else:
        t_stop_c, y_stop = hit.t, hit.y

    if mode != "direct":  # y at the stop time, with the mode's gradient
        ys_fwd = torch.stack([y0_run.detach(), y_stop.detach()])
        stop_problem = replace(problem, y0=y0_run.detach(), t_out=(problem.t_out[0], t_stop_c))
        if mode == "checkpoint":
            y_stop = attach_checkpoint(stop_problem, spec, stats, y0_run, params, result.steps,
                                       ys_fwd)[1]
        else:
            assert adjoint_config is not None
            pieces = result.pieces if spec.implicit else None
            y_stop = attach_adjoint(stop_problem, spec, adjoint_config, stats, y0_run, params,
                                    ys_fwd, pieces)[1]

    t_stop = torch.tensor(problem.user_time(t_stop_c), dtype=torch.float64, device=t.device)
    event_index = None
    if hit is not None:
        event_index = hit.index
        if grad_on:
            # A fixed grid's interpolant (linear by default) has a poor slope: use the
            # vector field at the event, as torchdiffeq does.
            ydot = hit.ydot if spec.adaptive else _field_at(problem, hit.t, hit.y)
            ydot_user = problem.sign * ydot
            t_stop, y_stop = _ift_reroute(event_fn, locator, t_stop, y_stop, ydot_user,
                                          hit.index)
        stats.status = Status.EVENT
        kind = "rising" if hit.rising else "falling"
        stats.message = (f"{Status.EVENT.message} Value {hit.index} of event_fn crossed "
                         f"({kind}) at t={problem.user_time(hit.t)!r}.")
    stats.nfe = problem.func.nfe
    record_last_stats(stats)
    event_t = t_stop.to(t.dtype)
    ys = problem.layout.unflatten_stacked(torch.stack([y0_flat, y_stop]))
    ts = torch.stack([t[0], event_t])
    return EventSolution(ys, ts, stats, event_t if hit is not None else None,
                         event_index=event_index)
