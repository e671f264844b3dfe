"""Event location: stop a solve where ``event_fn(t, y)`` crosses zero, with a differentiable time.

How it works, in three parts:

1. **Detection** (:class:`EventLocator`, the ``event`` hook of
   :func:`~odeflow.integrate.integrate_adaptive`). After every accepted step the loop calls
   ``check``, which evaluates ``event_fn`` at the step's end and compares the sign of each
   value with its sign before the step. A value that reaches or passes zero (in the chosen
   direction) is a crossing. One ``event_fn`` call, three small tensor operations and one
   host sync per step when nothing changes sign.
2. **Location.** The root is found on the method's dense output inside that step, by the
   Illinois variant of regula falsi with a bisection fallback (a bracket that has not halved
   in two iterations is bisected), so it always converges and takes no extra solver steps.
   It stops when the bracket is narrower than ``4 eps max(|t|, |t + dt|, dt)`` (``eps``
   of the state's dtype) or at an exact zero. The time returned is the bracket end on the
   side the value started on, so ``event_fn`` at the returned state still has its
   pre-crossing sign (or is zero) and a solve restarted there does not see the same
   crossing again. When several values cross in one step, the earliest root wins.
3. **Gradient** (implicit function theorem). With ``t*`` defined by ``g(t*, y(t*; θ)) = 0``,
   ``dt*/dθ = -(∂g/∂y · ∂y/∂θ + ∂g/∂θ) / (∂g/∂t + ∂g/∂y · ẏ)``, and the returned state
   ``y(t*)`` gets ``ẏ dt*/dθ`` on top of ``∂y/∂θ``. Both are attached by a zero-valued
   correction (``t* - (g - stop_grad(g)) / stop_grad(D)``), so the gradient flows through
   whichever gradient mode computed ``y(t*)`` and through any parameters ``event_fn`` itself
   holds. ``ẏ`` is the time derivative of the dense output (not ``func``), which makes the
   derivative exact for the discretised solution under ``gradient="direct"`` and
   ``"checkpoint"``.

References:
    Chen, Amos & Nickel, "Learning Neural Event Functions for Ordinary Differential
    Equations", ICLR 2021. Dowell & Jarratt, "A modified regula falsi method for computing
    the root of an equation", BIT 11 (1971) (the Illinois method). Shampine & Thompson,
    "Event location for ordinary differential equations", Comput. Math. Appl. 39 (2000).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from .integrate import DEFAULT_MAX_NUM_STEPS, run_loop
from .odeint import Solution, State, odeint
from .problem import Problem, check_options, make_problem
from .sensitivity import GRADIENTS, find_params
from .sensitivity.adjoint import _Adjoint, make_adjoint_config
from .sensitivity.checkpoint import _Checkpoint
from .sensitivity.time_grad import shift_initial_state
from .solvers import get_method
from .stats import SolveError, SolveStats, Status, record_last_stats

__all__ = ["EventSolution", "EventLocator", "odeint_event", "solve_event"]

EventFn = Callable[[Tensor, State], Tensor]

#: The end time used for an unbounded search (``t[-1] = ±inf``); the solve is then bounded
#: by ``options["max_num_steps"]`` alone.
_FAR = 1e300
_MAX_ROOT_ITERS = 200


@dataclass
class EventSolution(Solution):
    """A :class:`~odeflow.Solution` of an event-terminated solve.

    Attributes:
        event_index: which value of ``event_fn(t, y).reshape(-1)`` ended the solve (``0``
            for a scalar ``event_fn``), or ``None`` if no event happened.
    """

    event_index: int | None = None


# ------------------------------------------------------------------------------- detection
@dataclass
class EventHit:
    """What :meth:`EventLocator.check` returns for a located event (canonical time)."""

    t: float  # canonical event time
    y: Tensor  # flat state on the dense output at t (with the loop's graph, if any)
    ydot: Tensor  # canonical d y / d t of the dense output at t (no graph)
    index: int  # flat index of the value that crossed
    rising: bool  # crossed from negative to positive


class EventLocator:
    """The ``event`` hook of the adaptive loop: detects and locates zero crossings.

    One object per solve (it carries the sign of each value from step to step).

    Args:
        problem: the canonical problem (``event_fn`` sees user time and structure).
        event_fn: ``event_fn(t, y)`` returning a real tensor of any fixed shape.
        direction: ``+1`` (only rising crossings, negative to positive), ``-1`` (only
            falling), ``0`` (both): one value, or one per value of ``event_fn``.

    Raises:
        TypeError, ValueError: ``event_fn``'s output at ``t0`` is not a real floating tensor,
            is empty or not finite, or ``direction`` is malformed.
    """

    def __init__(self, problem: Problem, event_fn: EventFn, direction: Any = 0):
        self.problem = problem
        self.event_fn = event_fn
        self.layout = problem.layout
        t0 = problem.t_out[0]
        with torch.no_grad():
            g0 = self._raw(t0, problem.y0, check=True)
        if not bool(torch.isfinite(g0).all()):  # host sync: once per solve
            raise ValueError(f"event_fn(t0, y0) must be finite, got {g0.tolist()}")
        self.n = g0.numel()
        self.direction = _direction_tensor(direction, self.n, g0)
        self.sign = torch.sign(g0)  # 0 for a value exactly zero at t0: not armed yet
        self.g_prev = g0

    # the user's event function on canonical arguments -----------------------------------
    def user_time(self, t: float) -> Tensor:
        return torch.scalar_tensor(self.problem.sign * t, dtype=self.layout.real_dtype,
                                   device=self.layout.device)

    def _raw(self, t: float, y: Tensor, check: bool = False) -> Tensor:
        out = self.event_fn(self.user_time(t), self.layout.unflatten(y))
        if check:
            _check_event_output(out)
        return out.reshape(-1)

    # the hook --------------------------------------------------------------------------
    def check(self, t: float, y: Tensor, t_new: float, y_new: Tensor, dt: float,
              stages: Sequence[Tensor], f_new: Tensor | None, ws: Any, solver: Any,
              ) -> EventHit | None:
        """Called by the loop after each accepted step; an :class:`EventHit` ends the solve."""
        with torch.no_grad():
            g_new = self._raw(t_new, y_new)
            if g_new.numel() != self.n:
                raise ValueError(f"event_fn must return {self.n} values at every call (as at "
                                 f"t0), got {g_new.numel()} at t={self.problem.user_time(t_new)}")
            s = self.sign
            side = g_new * s
            # host sync: the event test, once per step. Fast path: every value is non-zero
            # and on the side it was on before (a nan fails the test and goes on below).
            if side.min().item() > 0:
                self.g_prev = g_new
                return None
            crossed = (s != 0) & ~(side > 0)  # reached or passed zero (nan counts)
            crossed &= (self.direction == 0) | (self.direction == -s)
            if not bool(crossed.any()):  # host sync: only when some sign changed
                self.sign = torch.where(g_new != 0, torch.sign(g_new), s)
                self.g_prev = g_new
                return None
            if not bool(torch.isfinite(g_new).all()):  # host sync: event path only
                raise ValueError(f"event_fn returned non-finite values at "
                                 f"t={self.problem.user_time(t_new)!r}: {g_new.tolist()}")
            theta, index = self._locate(t, y, y_new, dt, stages, f_new, ws, solver,
                                        g_new, crossed)
            ydot = _dense_derivative(solver, y, y_new, dt, stages, f_new, theta)
        if theta == 1.0:
            t_ev, y_ev = t_new, y_new
        else:
            t_ev = t + theta * dt
            y_ev = solver.interpolate(y, y_new, dt, stages, f_new, theta, ws)
        rising = bool(self.sign[index] < 0)
        return EventHit(t_ev, y_ev, ydot, index, rising)

    def _locate(self, t, y, y_new, dt, stages, f_new, ws, solver, g_new, crossed):
        """The earliest root among the crossing values: ``(theta, index)``."""
        s_list = self.sign.tolist()
        g_start = self.g_prev.tolist()
        g_end = g_new.tolist()
        t_scale = max(abs(t), abs(t + dt), dt)
        tol = 4 * torch.finfo(self.layout.real_dtype).eps * t_scale / dt  # in units of theta

        def evaluate(theta: float) -> list[float]:
            y_th = solver.interpolate(y, y_new, dt, stages, f_new, theta, ws)
            return self._raw(t + theta * dt, y_th).tolist()

        candidates = []
        for k in crossed.nonzero().reshape(-1).tolist():
            fa, fb = g_start[k] * s_list[k], g_end[k] * s_list[k]
            guess = fa / (fa - fb) if fa > fb else 0.0
            candidates.append((guess, k))
        best_theta, best_g, best_k = 1.0, g_end, candidates[0][1]
        for _, k in sorted(candidates):
            fb = best_g[k] * s_list[k]
            if fb > 0:  # still on its starting side at the best root so far: crosses later
                continue
            best_theta, best_g = _illinois(evaluate, k, s_list[k], 0.0, g_start, best_theta,
                                           best_g, tol)
            best_k = k
        return best_theta, best_k


def _illinois(evaluate: Callable[[float], list[float]], k: int, s: float, a: float,
              g_a: list[float], b: float, g_b: list[float], tol: float,
              ) -> tuple[float, list[float]]:
    """Bracketing root of ``s * g_k(theta)`` on ``[a, b]``, positive at ``a``, ``<= 0`` at ``b``.

    Illinois regula falsi; a bracket that has not halved within two iterations is bisected,
    so the width shrinks at least geometrically. Returns the bracket end on the positive side
    (or an exact zero) with the event values there; ``b`` when that end is the step start.
    """
    fa, fb = g_a[k] * s, g_b[k] * s
    if fb == 0:
        return b, g_b
    a0 = a
    side = 0
    width_ref = b - a
    stalled = 0
    for _ in range(_MAX_ROOT_ITERS):
        if b - a <= tol:
            break
        c = b - fb * (b - a) / (fb - fa)
        if stalled >= 2 or not (a < c < b):
            c = 0.5 * (a + b)
        g_c = evaluate(c)
        fc = g_c[k] * s
        if not math.isfinite(fc):
            raise ValueError(f"event_fn returned a non-finite value while locating a root: {fc}")
        if fc > 0:
            a, fa, g_a = c, fc, g_c
            if side == 1:
                fb *= 0.5
            side = 1
        elif fc < 0:
            b, fb, g_b = c, fc, g_c
            if side == -1:
                fa *= 0.5
            side = -1
        else:
            return c, g_c
        if b - a <= 0.5 * width_ref:
            width_ref, stalled = b - a, 0
        else:
            stalled += 1
    if a == a0:
        return b, g_b
    return a, g_a


def _dense_derivative(solver: Any, y: Tensor, y_new: Tensor, dt: float,
                      stages: Sequence[Tensor], f_new: Tensor | None, theta: float) -> Tensor:
    """Canonical ``d y / d t`` of the step's dense output at ``theta`` (no graph).

    The tableau's own interpolant ``y + dt Σ b_i(θ) k_i`` gives ``Σ b_i'(θ) k_i``; cubic
    Hermite gives its own derivative.
    """
    tableau = getattr(solver, "tableau", None)
    if tableau is not None and tableau.dense is not None:
        out = torch.zeros_like(y)
        for k_i, poly in zip(stages, tableau.dense):
            w = sum((p + 1) * c * theta**p for p, c in enumerate(poly))
            if w != 0:
                out.add_(k_i.detach(), alpha=w)
        return out
    if f_new is None:
        raise ValueError("event location needs f at the step's end for a Hermite interpolant")
    th = theta
    d00, d10, d11 = 6 * th * th - 6 * th, 3 * th * th - 4 * th + 1, 3 * th * th - 2 * th
    out = (y_new.detach() - y.detach()).mul_(-d00 / dt)
    out.add_(stages[0].detach(), alpha=d10).add_(f_new.detach(), alpha=d11)
    return out


def _check_event_output(out: Any) -> None:
    if not isinstance(out, Tensor):
        raise TypeError(f"event_fn(t, y) must return a tensor, got {type(out).__name__}")
    if not out.is_floating_point():
        raise TypeError(f"event_fn(t, y) must return a real floating tensor, got {out.dtype}")
    if out.numel() == 0:
        raise ValueError("event_fn(t, y) returned an empty tensor; return one value per event")


def _direction_tensor(direction: Any, n: int, like: Tensor) -> Tensor:
    if isinstance(direction, Tensor):
        values = direction.detach().reshape(-1).tolist()
    elif isinstance(direction, (list, tuple)):
        values = list(direction)
    else:
        values = [direction]
    if len(values) == 1:
        values = values * n
    if len(values) != n or any(v not in (-1, 0, 1) for v in values):
        raise ValueError(
            f"event_direction must be -1 (falling), 0 (either) or +1 (rising), one value or "
            f"one per value of event_fn ({n}); got {direction!r}"
        )
    return torch.tensor(values, dtype=like.dtype, device=like.device)


# --------------------------------------------------------------- gradients of y(t*) by mode
class _CheckpointToEvent(_Checkpoint):
    """The checkpointed gradient of a loop that already ran (and stopped at the event)."""

    @staticmethod
    def forward(ctx, payload, spec, stats, y0, *params):  # type: ignore[override]
        problem, steps, ys = payload
        ctx.problem, ctx.spec, ctx.stats, ctx.steps = problem, spec, stats, steps
        ctx.save_for_backward(*params)
        return ys


class _AdjointToEvent(_Adjoint):
    """The adjoint gradient of a loop that already ran (and stopped at the event)."""

    @staticmethod
    def forward(ctx, payload, spec, config, stats, y0, *params):  # type: ignore[override]
        problem, ys = payload
        ctx.problem, ctx.config, ctx.stats = problem, config, stats
        ctx.save_for_backward(ys, *params)
        return ys


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
        with torch.no_grad():
            return run_loop(replace(problem, y0=y0_run.detach()), spec, event=locator,
                            record_steps=mode == "checkpoint")
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
    rtol: Any = 1e-7,
    atol: Any = 1e-9,
    method: str | None = None,
    options: dict[str, Any] | None = None,
    gradient: str = "direct",
    adjoint_rtol: float | None = None,
    adjoint_atol: float | None = None,
    adjoint_method: str | None = None,
    adjoint_options: dict[str, Any] | None = None,
    adjoint_params: Sequence[Tensor] | None = None,
    event_direction: Any = None,
    throw: bool = True,
) -> EventSolution:
    """Solve from ``t[0]`` until ``event_fn(t, y)`` crosses zero; ``solve(event_fn=...)`` runs it.

    Args:
        func, y0, rtol, atol, method, options, gradient, adjoint_*: as :func:`odeflow.solve`;
            ``method`` must be adaptive.
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
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient={gradient!r} is not one of {GRADIENTS}")
    if not callable(event_fn):
        raise TypeError(f"event_fn must be callable as event_fn(t, y), got {type(event_fn)}")
    spec = get_method(method)
    if spec.family != "adaptive":
        raise ValueError(
            f"event_fn needs an adaptive method (the root is located on its dense output), "
            f"got method={spec.name!r}; use e.g. 'dopri5' or 'tsit5'"
        )
    opts = check_options(spec.name, options, spec.valid_options)
    t_prob, unbounded = _event_times(t)
    problem = make_problem(func, y0, t_prob, rtol, atol, spec.name, opts)
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
    for name in ("n_steps", "n_accepted", "n_rejected"):
        setattr(stats, name, getattr(result.stats, name))
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
            y_stop = _CheckpointToEvent.apply((stop_problem, result.steps, ys_fwd), spec, stats,
                                              y0_run, *params)[1]
        else:
            config = make_adjoint_config(rtol, atol, method, options, adjoint_rtol,
                                         adjoint_atol, adjoint_method, adjoint_options)
            y_stop = _AdjointToEvent.apply((stop_problem, ys_fwd), spec, config, stats,
                                           y0_run, *params)[1]

    t_stop = torch.tensor(problem.user_time(t_stop_c), dtype=torch.float64, device=t.device)
    event_index = None
    if hit is not None:
        event_index = hit.index
        if grad_on:
            ydot_user = problem.sign * hit.ydot
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
    return EventSolution(ys, ts, stats, event_t if hit is not None else None, event_index)


# ------------------------------------------------------------------ torchdiffeq's interface
class _Directed:
    """``event_fn`` with a ``direction`` attribute (what ``event_direction=`` builds)."""

    def __init__(self, fn: EventFn, direction: Any):
        self.fn = fn
        self.direction = direction

    def __call__(self, t: Tensor, y: State) -> Tensor:
        return self.fn(t, y)


def odeint_event(
    func: Callable[[Tensor, State], State],
    y0: State,
    t0: Tensor | float,
    *,
    event_fn: EventFn,
    reverse_time: bool = False,
    odeint_interface: Callable[..., Any] = odeint,
    **kwargs: Any,
) -> tuple[Tensor, State]:
    """Solve from ``t0`` until ``event_fn(t, y)`` crosses zero: torchdiffeq's ``odeint_event``.

    The search has no end time; it is bounded by ``options["max_num_steps"]`` (default
    100000 steps) and raises :class:`~odeflow.SolveError` past it. The event time is
    differentiable (implicit function theorem, exact for the discretised solution with
    ``odeint``; as accurate as the adjoint solve with ``odeint_adjoint``).

    Args:
        func: the vector field ``func(t, y)``.
        y0: initial state (tensor or tuple of tensors).
        t0: initial time (0-dim tensor, may require grad; a number becomes a tensor of the
            state's real dtype).
        event_fn: ``event_fn(t, y) -> Tensor`` of any fixed shape; the first value to cross
            zero ends the solve (``odeflow.last_stats().message`` says which; ``solve``
            returns it as ``event_index``). A value exactly zero at ``t0`` is not an event.
        reverse_time: search towards decreasing time.
        odeint_interface: :func:`odeflow.odeint`, :func:`odeflow.odeint_adjoint` or a
            ``functools.partial`` of them (e.g. ``partial(odeint, gradient="checkpoint")``).
        **kwargs: passed to ``odeint_interface`` (``rtol``, ``atol``, ``method``,
            ``options``, ``adjoint_params``, ...), plus ``event_direction`` (``+1`` rising,
            ``-1`` falling, ``0`` both; one value or one per value of ``event_fn``).

    Returns:
        ``(event_t, solution)``: ``event_t`` a 0-dim tensor of ``t0``'s dtype;
        ``solution`` the state at ``[t0, event_t]`` (shape ``(2, *y0.shape)``, or a tuple).

    Example:
        >>> event_t, ys = odeflow.odeint_event(lambda t, y: -torch.ones_like(y),
        ...                                    torch.tensor([1.0]), torch.tensor(0.0),
        ...                                    event_fn=lambda t, y: y[0])
        >>> float(event_t)
        1.0
    """
    direction = kwargs.pop("event_direction", None)
    if direction is not None:
        event_fn = _Directed(event_fn, direction)
    if not isinstance(t0, Tensor):
        first = y0 if isinstance(y0, Tensor) else y0[0]
        t0 = torch.tensor(float(t0), dtype=first.real.dtype, device=first.device)
    t0 = t0.reshape(-1)[:1]
    far = t0.detach() + (-math.inf if reverse_time else math.inf)
    t = torch.cat([t0, far])
    return odeint_interface(func, y0, t, event_fn=event_fn, **kwargs)

