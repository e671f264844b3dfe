"""Event detection and root finding on a step's dense output (no gradients here).

After every accepted step the loop hands :meth:`EventLocator.check` the step's
:class:`~odeflow.interp.Interpolant`. ``check`` evaluates ``event_fn`` at the step's end and
at :data:`INTERIOR_SAMPLES` interior points of the dense output, and compares each value's
sign with its sign before the step; all of it costs one host synchronisation per step when
nothing changes sign. The first sample at which a value reaches or passes zero (in the
chosen direction) brackets the first crossing, so the located event is the first sign
change of the step also when

* ``event_fn`` crosses zero and back within one step (two roots further apart than one
  sample spacing, ``dt / (INTERIOR_SAMPLES + 1)``; closer pairs can still be missed, as
  with any sampling: shrink ``max_step`` to resolve them);
* ``event_fn`` is exactly zero at the step's end, e.g. piecewise and forced to zero after
  some time: the earliest point of the bracket where it stops being on its starting side
  is found, not the step's end.

The root inside the bracket is found by the Illinois variant of regula falsi with a
bisection fallback (a bracket that has not halved in two iterations is bisected); when the
bracket ends on an exact zero, bisection on the sign finds the first point that is no
longer on the starting side. It stops when the bracket is narrower than
``4 eps max(|t|, |t + dt|, dt)``. The time returned is the bracket end on the side the
value started on, so ``event_fn`` there still has its pre-crossing sign (or is zero) and a
solve restarted there does not see the same crossing again. When several values cross in
one bracket, the earliest root wins.

References:
    Dowell & Jarratt, "A modified regula falsi method for computing the root of an
    equation", BIT 11 (1971) (the Illinois method). Shampine & Thompson, "Event location
    for ordinary differential equations", Comput. Math. Appl. 39 (2000).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .interp import Interpolant
from .problem import Problem, State

__all__ = ["EventHit", "EventLocator", "INTERIOR_SAMPLES", "direction_tensor"]

EventFn = Callable[[Tensor, State], Tensor]

#: Interior points of each step at which ``event_fn`` is sampled (besides the step's end).
INTERIOR_SAMPLES = 4
_THETAS = tuple((i + 1) / (INTERIOR_SAMPLES + 1) for i in range(INTERIOR_SAMPLES)) + (1.0,)
_MAX_ROOT_ITERS = 200


@dataclass
class EventHit:
    """What :meth:`EventLocator.check` returns for a located event (canonical time)."""

    t: float  # canonical event time
    y: Tensor  # flat state on the dense output at t (with the loop's graph, if any)
    ydot: Tensor  # canonical d y / d t of the dense output at t (no graph)
    index: int  # flat index of the value that crossed
    rising: bool  # crossed from negative to positive
    step_dt: float | None = None  # set when y is one step of this size from the step start


class EventLocator:
    """The ``event`` hook of the loops: detects and locates zero crossings.

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
            g0 = self.raw(t0, problem.y0, check=True)
        if not bool(torch.isfinite(g0).all()):  # host sync: once per solve
            raise ValueError(f"event_fn(t0, y0) must be finite, got {g0.tolist()}")
        self.n = g0.numel()
        self.direction = direction_tensor(direction, self.n, g0)
        self.sign = torch.sign(g0)  # 0 for a value exactly zero at t0: not armed yet
        self.g_prev = g0

    def user_time(self, t: float) -> Tensor:
        return torch.scalar_tensor(self.problem.sign * t, dtype=self.layout.real_dtype,
                                   device=self.layout.device)

    def raw(self, t: float, y: Tensor, check: bool = False) -> Tensor:
        """``event_fn`` at canonical ``t`` and flat ``y``, flattened."""
        out = self.event_fn(self.user_time(t), self.layout.unflatten(y))
        if check:
            _check_event_output(out)
        out = out.reshape(-1)
        if out.numel() != getattr(self, "n", out.numel()):
            raise ValueError(f"event_fn must return {self.n} values at every call (as at t0), "
                             f"got {out.numel()} at t={self.problem.user_time(t)}")
        return out

    def check(self, interp: Interpolant, y_new: Tensor) -> EventHit | None:
        """Called by the loop after each accepted step; an :class:`EventHit` ends the solve."""
        t, dt = interp.t, interp.dt
        with torch.no_grad():
            samples = [self.raw(t + th * dt, interp.evaluate(th)) for th in _THETAS[:-1]]
            samples.append(self.raw(t + dt, y_new))
            g = torch.stack(samples)
            # host sync: the event test, once per step. Fast path: every value stays
            # non-zero on the side it was on before (a nan fails the test).
            if (g * self.sign).min().item() > 0:
                self.g_prev = g[-1]
                return None
        return self._scan(interp, g)

    def _scan(self, interp: Interpolant, g: Tensor) -> EventHit | None:
        """Slow path: walk the samples in order; the first bracket with a crossing wins."""
        g_a, theta_a = self.g_prev, 0.0
        for j, theta_b in enumerate(_THETAS):
            g_b = g[j]
            s = self.sign
            crossed = (s != 0) & ~(g_b * s > 0)  # reached or passed zero (nan counts)
            crossed &= (self.direction == 0) | (self.direction == -s)
            if bool(crossed.any()):  # host sync: only when some sign changed
                if not bool(torch.isfinite(g_b).all()):
                    t_b = interp.t + theta_b * interp.dt
                    raise ValueError(f"event_fn returned non-finite values at "
                                     f"t={self.problem.user_time(t_b)!r}: {g_b.tolist()}")
                with torch.no_grad():
                    theta, index = self._locate(interp, theta_a, g_a, theta_b, g_b, crossed)
                    if interp.precise is not None:
                        theta = self._refine(interp.precise, index, theta_a, theta_b, g[-1])
                if interp.precise is not None:
                    return self._hit(interp.precise, theta, index, restep=True)
                return self._hit(interp, theta, index)
            # No crossing that counts: values that changed sign (in the other direction)
            # are re-armed on their new side.
            self.sign = torch.where(g_b != 0, torch.sign(g_b), s)
            g_a, theta_a = g_b, theta_b
        self.g_prev = g[-1]
        return None

    def _hit(self, interp: Interpolant, theta: float, index: int,
             restep: bool = False) -> EventHit:
        with torch.no_grad():
            ydot = interp.derivative(theta).detach()
        rising = bool(self.sign[index] < 0)
        # The state is evaluated outside no_grad so that it carries the loop's graph.
        y_ev = interp.evaluate(theta)
        step_dt = theta * interp.dt if restep else None
        return EventHit(interp.t + theta * interp.dt, y_ev, ydot, index, rising, step_dt)

    def _refine(self, precise: Interpolant, k: int, a: float, b: float, g_end: Tensor) -> float:
        """Locate value ``k``'s root again on the ``precise`` dense output: within the
        bracket found on the cheap one when it still brackets there, else on the step."""
        t, dt = precise.t, precise.dt
        s = self.sign[k].item()

        def evaluate(theta: float) -> list[float]:
            return self.raw(t + theta * dt, precise.evaluate(theta)).tolist()

        g_a = evaluate(a) if a > 0 else self.g_prev.tolist()
        g_b = evaluate(b) if b < 1 else g_end.tolist()
        if not (g_a[k] * s > 0 and g_b[k] * s <= 0):
            a, g_a, b, g_b = 0.0, self.g_prev.tolist(), 1.0, g_end.tolist()
        tol = 4 * torch.finfo(self.layout.real_dtype).eps * max(abs(t), abs(t + dt), dt) / dt
        return _root(evaluate, k, s, a, g_a, b, g_b, tol)[0]

    def _locate(self, interp: Interpolant, a: float, g_a: Tensor, b: float, g_b: Tensor,
                crossed: Tensor) -> tuple[float, int]:
        """The earliest root in ``[a, b]`` among the crossing values: ``(theta, index)``."""
        s_list = self.sign.tolist()
        g_start = g_a.tolist()
        g_end = g_b.tolist()
        t, dt = interp.t, interp.dt
        t_scale = max(abs(t), abs(t + dt), dt)
        tol = 4 * torch.finfo(self.layout.real_dtype).eps * t_scale / dt  # in units of theta

        def evaluate(theta: float) -> list[float]:
            with torch.no_grad():
                return self.raw(t + theta * dt, interp.evaluate(theta)).tolist()

        candidates = []
        for k in crossed.nonzero().reshape(-1).tolist():
            fa, fb = g_start[k] * s_list[k], g_end[k] * s_list[k]
            guess = a + (b - a) * fa / (fa - fb) if fa > fb else a
            candidates.append((guess, k))
        best_theta, best_g, best_k = b, g_end, candidates[0][1]
        for _, k in sorted(candidates):
            fb = best_g[k] * s_list[k]
            if fb > 0:  # still on its starting side at the best root so far: crosses later
                continue
            best_theta, best_g = _root(evaluate, k, s_list[k], a, g_start, best_theta, best_g,
                                       tol)
            best_k = k
        return best_theta, best_k


def _root(evaluate: Callable[[float], list[float]], k: int, s: float, a: float,
          g_a: list[float], b: float, g_b: list[float], tol: float,
          ) -> tuple[float, list[float]]:
    """First point of ``[a, b]`` where ``s * g_k`` stops being positive (positive at ``a``,
    ``<= 0`` at ``b``).

    Illinois regula falsi while the end value is negative (a bracket that has not halved
    within two iterations is bisected, so the width shrinks at least geometrically);
    bisection on the sign when it is exactly zero, so that a function that is zero on a
    whole interval is located where it first reaches zero. Returns the bracket end on the
    positive side with the event values there (``b`` when ``a`` never moved: the root lies
    within ``tol`` of the bracket's start).
    """
    fa, fb = g_a[k] * s, g_b[k] * s
    a0 = a
    side = 0
    width_ref = b - a
    stalled = 0
    for _ in range(_MAX_ROOT_ITERS):
        if b - a <= tol:
            break
        if fb == 0 or stalled >= 2:
            c = 0.5 * (a + b)
        else:
            c = b - fb * (b - a) / (fb - fa)
            if not (a < c < b):
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
        else:
            b, fb, g_b = c, fc, g_c
            if side == -1:
                fa *= 0.5
            side = -1
        if b - a <= 0.5 * width_ref:
            width_ref, stalled = b - a, 0
        else:
            stalled += 1
    if a == a0:
        return b, g_b
    return a, g_a


def _check_event_output(out: Any) -> None:
    if not isinstance(out, Tensor):
        raise TypeError(f"event_fn(t, y) must return a tensor, got {type(out).__name__}")
    if not out.is_floating_point():
        raise TypeError(f"event_fn(t, y) must return a real floating tensor, got {out.dtype}")
    if out.numel() == 0:
        raise ValueError("event_fn(t, y) returned an empty tensor; return one value per event")


def direction_tensor(direction: Any, n: int, like: Tensor) -> Tensor:
    """``event_direction`` as one value per event value: ``+1`` rising, ``-1`` falling,
    ``0`` both (shared by the joint and the per-sample event solves)."""
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
