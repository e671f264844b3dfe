"""Event detection and root finding on a step's dense output (no gradients here).

After an attempt, :meth:`EventLocator.detect` evaluates ``event_fn`` on the step's
:class:`~odeflow.interp.Interpolant`, at the step's end and at :data:`INTERIOR_SAMPLES`
interior points, and compares each value's sign with its sign before the step, with no host
synchronisation: a per-sample loop reads the crossing lanes with its other decisions of
the iteration, a joint one reads them once per accepted step.
The first sample at which a value reaches or passes zero (in the chosen direction)
brackets the first crossing, so the located event is the first sign change of the step
also when

* ``event_fn`` crosses zero and back within one step (two roots further apart than one
  sample spacing, ``dt / (INTERIOR_SAMPLES + 1)``; closer pairs can still be missed, as
  with any sampling: shrink ``max_step`` to resolve them);
* ``event_fn`` is exactly zero at the step's end, e.g. piecewise and forced to zero after
  some time: the earliest point of the bracket where it stops being on its starting side
  is found, not the step's end.

One locator serves a joint solve (one lane) and a per-sample one (each sample stops at
its own first crossing; ``event_fn`` then gets the batch as ``func`` does and returns
``(B,)`` or ``(B, k)`` values, sample ``b``'s depending on ``t[b]`` and ``y[b]`` only).
:meth:`EventLocator.locate` finds the root inside each crossing lane's bracket for all
lanes and crossing values at once (the first zero of the least of the crossing values, so
the earliest root wins) to ``tol = 4 eps max(|t|, |t + dt|, dt)``. The time returned is
the bracket end on the side the value started on, so ``event_fn`` there still has its
pre-crossing sign (or is zero) and a solve restarted there does not see the same crossing
again. A method without an interpolant of its own order (dopri8) locates the root again
by re-stepping.

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
from .problem import Problem

__all__ = ["EventHits", "EventLocator", "INTERIOR_SAMPLES"]

#: Interior points of each step at which ``event_fn`` is sampled (besides the step's end).
INTERIOR_SAMPLES = 4
_THETAS = tuple((i + 1) / (INTERIOR_SAMPLES + 1) for i in range(INTERIOR_SAMPLES)) + (1.0,)
_MAX_ROOT_ITERS = 200
#: Root iterations between two reads of whether any lane still needs one.
_CHECK_EVERY = 8


@dataclass
class EventHits:
    """The located events, one row per lane (canonical time; ``found`` marks the lanes)."""

    found: Tensor  # (L,) bool
    t: Tensor  # (L,) float64 canonical event time (nan where none)
    y: Tensor  # (L, n) state at the event (with the loop's graph), else y0
    ydot: Tensor  # (L, n) canonical d y / d t of the dense output there
    index: Tensor  # (L,) long: which value crossed (-1: none)
    rising: Tensor  # (L,) bool


class EventLocator:
    """The ``event`` hook of the loop: detects and locates zero crossings.

    One object per solve (it carries the sign of each value from step to step).

    Args:
        problem: the canonical problem (``event_fn`` sees user time and structure).
        event_fn: ``event_fn(t, y)`` returning a real tensor of any fixed shape (per
            sample: ``(B, ...)``).
        direction: ``+1`` (only rising crossings, negative to positive), ``-1`` (only
            falling), ``0`` (both): one value, or one per value of ``event_fn``.

    Raises:
        TypeError, ValueError: ``event_fn``'s output at ``t0`` is not a real floating tensor,
            is empty, has the wrong batch size or is not finite, or ``direction`` is
            malformed.
    """

    def __init__(self, problem: Problem, event_fn: Callable, direction: Any = 0,
                 field_slope: bool = False):
        self.clock = C = problem.clock
        self.func = problem.func
        #: the event's dy/dt from the vector field, not the interpolant (fixed grids)
        self.field_slope = field_slope
        self.layout = problem.layout
        self.event_fn = event_fn
        self.lanes = C.batch or 1
        self.k: int | None = None
        y0 = problem.y0
        with torch.no_grad():
            g0 = self.raw(C.t0, y0)
        if not bool(torch.isfinite(g0).all()):  # host sync: once per solve
            raise ValueError(f"event_fn(t0, y0) must be finite, got {g0.tolist()}")
        self.k = k = g0.shape[1]
        # event_direction as one value per event value: +1 rising, -1 falling, 0 both
        if isinstance(direction, Tensor):
            values = direction.detach().reshape(-1).tolist()  # host sync: once per solve
        elif isinstance(direction, (list, tuple)):
            values = list(direction)
        else:
            values = [direction]
        if len(values) == 1:
            values = values * k
        if len(values) != k or any(v not in (-1, 0, 1) for v in values):
            raise ValueError(
                f"event_direction must be -1 (falling), 0 (either) or +1 (rising), one value or "
                f"one per value of event_fn ({k}); got {direction!r}")
        self.direction = torch.tensor(values, dtype=g0.dtype, device=g0.device)
        self.sign = torch.sign(g0)  # 0 for a value exactly zero at t0: not armed yet
        self.g_prev = g0
        rows = y0.reshape(self.lanes, -1)
        dev = y0.device
        self.hits = EventHits(
            found=torch.zeros(self.lanes, dtype=torch.bool, device=dev),
            t=torch.full((self.lanes,), math.nan, dtype=torch.float64, device=dev),
            y=rows, ydot=torch.zeros_like(rows).detach(),
            index=torch.full((self.lanes,), -1, dtype=torch.long, device=dev),
            rising=torch.zeros(self.lanes, dtype=torch.bool, device=dev))

    def raw(self, t: Any, y: Tensor) -> Tensor:
        """``event_fn`` at canonical ``t`` and flat ``y``, checked, as ``(L, k)``."""
        C = self.clock
        if not C.per_sample:
            if isinstance(t, Tensor):
                t = float(t.reshape(-1)[0])  # host sync: root iterations only
            y = y.reshape(-1)
        out = self.event_fn(C.user_time(t), self.layout.unflatten(y))
        if not isinstance(out, Tensor):
            raise TypeError(f"event_fn(t, y) must return a tensor, got {type(out).__name__}")
        if not out.is_floating_point():
            raise TypeError(f"event_fn(t, y) must return a real floating tensor, got {out.dtype}")
        if out.numel() == 0:
            raise ValueError("event_fn(t, y) returned an empty tensor; return one value per "
                             "event")
        if C.per_sample and (out.ndim == 0 or out.shape[0] != self.lanes):
            raise ValueError(f"with options['per_sample'], event_fn(t, y) must return shape "
                             f"(B,) or (B, k) with B = {self.lanes} (one row of values per "
                             f"sample), got {tuple(out.shape)}")
        out = out.reshape(self.lanes, -1)
        if self.k is not None and out.shape[1] != self.k:
            raise ValueError(f"event_fn must return {self.k} values"
                             f"{' per sample' if C.per_sample else ''} at every call (as at "
                             f"t0), got {out.shape[1]}")
        return out

    def call(self, t_user: Tensor, y: Tensor) -> Tensor:
        """``event_fn`` at user times ``(L,)`` and flat ``y`` ``(L, n)`` (with a graph); one
        lane gets its time as :meth:`raw` gives it (``(1,)`` for one sample in the
        per-sample form, else 0-dim)."""
        C = self.clock
        if not C.per_sample:
            t_user, y = (t_user if C.lane_time else t_user.reshape(())), y.reshape(-1)
        return self.event_fn(t_user, self.layout.unflatten(y)).reshape(self.lanes, -1)

    def _at(self, interp: Interpolant, theta: Any) -> Tensor:
        if not self.clock.per_sample and isinstance(theta, Tensor):
            theta = float(theta.reshape(-1)[0])  # host sync: root iterations only
        return interp.evaluate(theta).reshape(self.lanes, -1)

    def detect(self, interp: Interpolant, y_new: Tensor, ok: Any) -> Tensor:
        """After an attempt: the lanes whose accepted step holds their first crossing
        ``(L,)``, with no host synchronisation (per sample the loop reads it with the
        iteration's other decisions); :meth:`locate` then locates them."""
        t, dt = interp.t, interp.dt
        lanes_ok = ok if isinstance(ok, Tensor) else torch.ones(
            1, dtype=torch.bool, device=y_new.device)
        with torch.no_grad():
            samples = [self.raw(t + th * dt, self._at(interp, th)) for th in _THETAS[:-1]]
            samples.append(self.raw(t + dt, y_new))
            s = self.sign
            found = torch.zeros_like(lanes_ok)
            g_a, th_a = self.g_prev, torch.zeros(self.lanes, dtype=torch.float64,
                                                 device=s.device)
            g_b, th_b = self.g_prev, th_a.clone()
            crossed_at = torch.zeros_like(s, dtype=torch.bool)
            for j, g_j in enumerate(samples):
                counts = (self.direction == 0) | (self.direction == -s)
                crossed = (s != 0) & ~(g_j * s > 0) & counts & lanes_ok[:, None]
                new = crossed.any(1) & ~found
                g_b = torch.where(new[:, None], g_j, g_b)
                th_b = torch.where(new, _THETAS[j], th_b)
                crossed_at = torch.where(new[:, None], crossed, crossed_at)
                found = found | new
                keep = found | ~lanes_ok  # frozen: found lanes and lanes that did not step
                s = torch.where(keep[:, None] | (g_j == 0), s, torch.sign(g_j))
                g_a = torch.where(keep[:, None], g_a, g_j)
                th_a = torch.where(keep, th_a, _THETAS[j])
            # (found lanes keep g_prev and their sign at the crossing, read by locate)
            self._bracket = (found, crossed_at, th_a, g_a, th_b, g_b, samples[-1])
            self.g_prev = torch.where((lanes_ok & ~found)[:, None], samples[-1], self.g_prev)
            self.sign = s
        return found

    def locate(self, interp: Interpolant, y_new: Tensor, rec: Any = None) -> Tensor:
        """Locate the crossings of the last :meth:`detect` (call it only when some lane
        crossed; ``interp`` and ``y_new`` as given to ``detect``, possibly with a graph)
        and record them in :attr:`hits`. Returns the lanes that stop."""
        C = self.clock
        found, crossed_at, th_a, g_a, th_b, g_b, g_end = self._bracket
        s = self.sign
        with torch.no_grad():
            # (one lane: its float times as (1,) tensors)
            t_l, dt_l = (torch.as_tensor(x, dtype=torch.float64, device=s.device).expand(self.lanes)
                         for x in (interp.t, interp.dt))
            t_new = t_l + dt_l

            def evaluate(theta: Tensor, on: Interpolant = interp) -> Tensor:
                return self.raw(t_l + theta * dt_l, self._at(on, theta))

            eps = torch.finfo(self.layout.real_dtype).eps
            safe_dt = torch.where(dt_l > 0, dt_l, 1.0)
            tol = 4 * eps * torch.maximum(torch.maximum(t_l.abs(), t_new.abs()), dt_l) / safe_dt
            theta, index = _root(evaluate, s, found, crossed_at, th_a, g_a, th_b, g_b, tol)
            precise = interp.precise
            if precise is not None:
                theta = self._refine(lambda th: evaluate(th, precise), g_end, found, index, s,
                                     th_a, th_b, theta, tol)
            rising = s.gather(1, index.clamp(min=0)[:, None])[:, 0] < 0
            on = precise or interp
        # The state is evaluated outside no_grad so that it carries the loop's graph.
        y_ev = torch.where((theta == 1.0)[:, None], y_new.reshape(self.lanes, -1),
                           self._at(on, theta))
        t_ev = torch.where(theta == 1.0, t_new, t_l + theta * dt_l)
        with torch.no_grad():  # host syncs (float): a joint solve's event only
            lane = (lambda x: x) if C.per_sample else (lambda x: float(x[0]))
            if self.field_slope or precise is not None:  # the vector field at the event
                ydot = self.func(lane(t_ev), y_ev.detach().reshape(y_new.shape))
            else:
                ydot = on.derivative(lane(theta))
        h = self.hits
        h.y = torch.where(found[:, None], y_ev, h.y)
        h.ydot = torch.where(found[:, None], ydot.reshape(self.lanes, -1).to(h.ydot.dtype), h.ydot)
        h.t = torch.where(found, t_ev, h.t)
        h.index = torch.where(found, index, h.index)
        h.rising = torch.where(found, rising, h.rising)
        h.found = h.found | found
        if rec is not None:  # host sync: checkpointed solves, on a crossing only
            sel = found.nonzero()[:, 0] if C.per_sample else None
            rec.event = (sel, theta if C.per_sample else float(theta[0]), precise is not None)
        return found

    def _refine(self, evaluate: Callable, g_end: Tensor, found: Tensor, index: Tensor,
                s: Tensor, th_a: Tensor, th_b: Tensor, theta: Tensor, tol: Tensor) -> Tensor:
        """Locate each found lane's root again on the precise (re-stepped) dense output:
        within the bracket found on the cheap one when it still brackets there, else on
        the whole step, else keep the cheap root."""
        k = index.clamp(min=0)[:, None]
        sk = s.gather(1, k)[:, 0]
        g_a = torch.where((th_a > 0)[:, None], evaluate(th_a), self.g_prev)
        g_b = torch.where((th_b < 1)[:, None], evaluate(th_b), g_end)

        def brackets(ga: Tensor, gb: Tensor) -> Tensor:
            return (ga.gather(1, k)[:, 0] * sk > 0) & (gb.gather(1, k)[:, 0] * sk <= 0)

        inner = brackets(g_a, g_b)
        use = found & (inner | brackets(self.g_prev, g_end))
        crossed = (index[:, None] == torch.arange(self.k, device=index.device)) & use[:, None]
        wide = inner[:, None]
        root, _ = _root(evaluate, s, use, crossed, torch.where(inner, th_a, 0.0),
                        torch.where(wide, g_a, self.g_prev), torch.where(inner, th_b, 1.0),
                        torch.where(wide, g_b, g_end), tol)
        return torch.where(use, root, theta)


def _root(evaluate: Callable[[Tensor], Tensor], s: Tensor, mask: Tensor, crossed_at: Tensor,
          a: Tensor, g_a: Tensor, b: Tensor, g_b: Tensor, tol: Tensor) -> tuple[Tensor, Tensor]:
    """The earliest root in the bracket ``[a, b]`` of each lane in ``mask`` among its
    crossing values, and which value it is: the first point where ``min_k h_k``, ``h_k =
    s_k g_k`` over the crossing values (``g = evaluate(theta)``, ``(L, k)``), stops being
    positive (positive at ``a``, ``<= 0`` at ``b``), found once for all of them.

    Illinois regula falsi; a bracket that has not halved within two iterations is bisected
    (the width shrinks at least geometrically), and a point closer than ``tol / 2`` to an
    end is moved to ``tol / 2`` from it, so that once one end has converged the next point
    closes the bracket. At an exact zero the point ``tol / 2`` before it is tried once,
    then bisection on the sign locates where a function that is zero on a whole interval
    first reaches zero. Returns the bracket end on the positive side (``b`` when ``a``
    never moved; ``1`` outside ``mask``) and the index of the value at or past its zero
    there (``-1`` outside ``mask``).
    """
    def h(g: Tensor) -> Tensor:  # s_k g_k of the crossing values, +inf for the others
        return torch.where(crossed_at, g * s, math.inf)

    hb = h(g_b)
    a0 = a
    fa, fb = h(g_a).amin(1), hb.amin(1)
    bad = mask & ~torch.isfinite(fb)
    side = torch.zeros_like(a)
    width = b - a
    stalled = torch.zeros_like(a)
    tried = torch.zeros_like(mask)  # the point before an exact zero was tried
    half_tol = 0.5 * tol
    for it in range(1, _MAX_ROOT_ITERS + 1):
        live = mask & (b - a > tol)
        denom = fb - fa
        c_rf = b - fb * (b - a) / torch.where(denom != 0, denom, 1.0)
        zero = fb == 0
        bisect = (zero & tried) | (stalled >= 2) | ~((a < c_rf) & (c_rf <= b)) | (denom == 0)
        c = torch.where(bisect, 0.5 * (a + b), c_rf)
        c = torch.minimum(torch.maximum(c, a + half_tol), b - half_tol)
        c = torch.where(live, c, a)
        tried = tried | (live & zero)
        hc = h(evaluate(c))
        fc = hc.amin(1)
        bad = bad | (live & ~torch.isfinite(fc))
        up = live & (fc > 0)
        down = live & ~(fc > 0)
        fb = torch.where(up & (side == 1), 0.5 * fb, fb)
        fa = torch.where(down & (side == -1), 0.5 * fa, fa)
        a = torch.where(up, c, a)
        fa = torch.where(up, fc, fa)
        b = torch.where(down, c, b)
        fb = torch.where(down, fc, fb)
        hb = torch.where(down[:, None], hc, hb)
        side = torch.where(up, 1.0, torch.where(down, -1.0, side))
        halved = (b - a) <= 0.5 * width
        width = torch.where(live & halved, b - a, width)
        stalled = torch.where(live, torch.where(halved, 0.0, stalled + 1), stalled)
        if it % _CHECK_EVERY == 0 or it == _MAX_ROOT_ITERS:
            # host sync: once per _CHECK_EVERY root iterations, on a crossing only
            more, nonfinite = torch.stack(((mask & (b - a > tol)).any(), bad.any())).tolist()
            if nonfinite:
                raise ValueError("event_fn returned a non-finite value while locating a root")
            if not more:
                break
    index = torch.where(mask, hb.argmin(1), -1)
    return torch.where(mask, torch.where(a == a0, b, a), 1.0), index

