"""Per-sample events: each sample of a ``per_sample`` batch stops at its own first crossing.

``event_fn(t, y)`` gets the batch as ``func`` does (``t`` of shape ``(B,)``, ``y`` of shape
``(B, *rest)``) and returns ``(B,)`` or ``(B, k)`` values (any ``(B, ...)``, flattened to
``(B, k)``); sample ``b``'s values must depend on ``t[b]`` and ``y[b]`` only. After every
iteration of the per-sample loop, :meth:`EventTracker.check` samples ``event_fn`` on each
accepted step's dense output at the same points as the joint locator
(:data:`~odeflow.event_location.INTERIOR_SAMPLES` interior points and the step's end),
finds each sample's first bracket with a counting sign change (a value exactly zero at
``t0`` is armed once it is non-zero; ``event_direction`` filters rising/falling crossings)
and locates the root in it for all crossing samples at once by the Illinois variant of
regula falsi with a bisection fallback, as :mod:`odeflow.event_location` does for one
problem. The earliest root among a sample's crossing values wins. The located sample
stops; the others go on. One host synchronisation per iteration, plus one per root
iteration when some sample crossed.

The event time's gradient is the implicit function theorem per sample
(:func:`ift_reroute`), exactly as for a joint solve (see :mod:`odeflow.events`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .event_location import _MAX_ROOT_ITERS, _THETAS, direction_tensor
from .integrate_per_sample import BatchFunc, IterRecord
from .solvers.explicit_rk import ExplicitRK

__all__ = ["EventHits", "EventTracker", "ift_reroute"]


@dataclass
class EventHits:
    """The located events of a batch (canonical time; ``found`` marks the samples)."""

    found: Tensor  # (B,) bool
    t: Tensor  # (B,) float64 canonical event time (nan where none)
    y: Tensor  # (B, n) state at the event (with the loop's graph), else y0
    ydot: Tensor  # (B, n) canonical d y / d t of the dense output there
    index: Tensor  # (B,) long: which value crossed (-1: none)
    rising: Tensor  # (B,) bool


class EventTracker:
    """The per-sample loop's ``event`` hook (one object per solve).

    Raises:
        TypeError, ValueError: ``event_fn``'s output is not a real floating tensor of shape
            ``(B, ...)``, is not finite at ``t0``, or ``direction`` is malformed.
    """

    def __init__(self, f: BatchFunc, event_fn: Callable, t0: Tensor, y0: Tensor,
                 direction: Any = 0):
        self.f = f
        self.event_fn = event_fn
        self.batch = y0.shape[0]
        self.k = None
        with torch.no_grad():
            g0 = self.raw(t0, y0)
        if not bool(torch.isfinite(g0).all()):  # host sync: once per solve
            raise ValueError("event_fn(t0, y0) must be finite")
        self.k = g0.shape[1]
        self.direction = direction_tensor(direction, self.k, g0)
        self.sign = torch.sign(g0)
        self.g_prev = g0
        B = self.batch
        self.hits = EventHits(
            found=torch.zeros(B, dtype=torch.bool, device=y0.device),
            t=torch.full((B,), math.nan, dtype=torch.float64, device=y0.device),
            y=y0, ydot=torch.zeros_like(y0).detach(),
            index=torch.full((B,), -1, dtype=torch.long, device=y0.device),
            rising=torch.zeros(B, dtype=torch.bool, device=y0.device))

    def raw(self, t: Tensor, y: Tensor) -> Tensor:
        """``event_fn`` at canonical times ``t`` ``(B,)`` and flat ``y``, as ``(B, k)``."""
        out = self.event_fn(self.f.user_time(t), self.f.layout.unflatten(y))
        if not isinstance(out, Tensor) or not out.is_floating_point():
            got = out.dtype if isinstance(out, Tensor) else type(out).__name__
            raise TypeError(f"event_fn(t, y) must return a real floating tensor, got {got}")
        if out.ndim == 0 or out.shape[0] != self.batch or out.numel() == 0:
            raise ValueError(
                f"with options['per_sample'], event_fn(t, y) must return shape (B,) or "
                f"(B, k) with B = {self.batch} (one row of values per sample), got "
                f"{tuple(out.shape)}")
        out = out.reshape(self.batch, -1)
        if self.k is not None and out.shape[1] != self.k:
            raise ValueError(f"event_fn must return {self.k} values per sample at every call "
                             f"(as at t0), got {out.shape[1]}")
        return out

    def check(self, f: BatchFunc, rk: ExplicitRK, t: Tensor, t_new: Tensor, dt: Tensor,
              ok: Tensor, y: Tensor, y_new: Tensor, K: Tensor, f_new: Tensor | None,
              rec: IterRecord | None) -> Tensor | None:
        """After an iteration: the samples whose step holds their first crossing (or None)."""
        with torch.no_grad():
            samples = []
            for th in _THETAS[:-1]:
                theta = torch.full_like(t, th)
                value = rk.batch_evaluate(y, y_new, K, f_new, dt, theta)
                samples.append(self.raw(t + th * dt, value))
            samples.append(self.raw(t_new, y_new))
            s = self.sign
            found = torch.zeros_like(ok)
            g_a, th_a = self.g_prev, torch.zeros_like(t)
            g_b, th_b = self.g_prev, torch.zeros_like(t)
            crossed_at = torch.zeros_like(s, dtype=torch.bool)
            for j, g_j in enumerate(samples):
                counts = (self.direction == 0) | (self.direction == -s)
                crossed = (s != 0) & ~(g_j * s > 0) & counts & ok[:, None]
                new = crossed.any(1) & ~found
                g_b = torch.where(new[:, None], g_j, g_b)
                th_b = torch.where(new, _THETAS[j], th_b)
                crossed_at = torch.where(new[:, None], crossed, crossed_at)
                found = found | new
                keep = found | ~ok  # frozen: found samples and samples that did not step
                s = torch.where(keep[:, None] | (g_j == 0), s, torch.sign(g_j))
                g_a = torch.where(keep[:, None], g_a, g_j)
                th_a = torch.where(keep, th_a, _THETAS[j])
            self.g_prev = torch.where((ok & ~found)[:, None], samples[-1], self.g_prev)
            sign_at_cross = self.sign = s  # found samples keep their sign at the crossing
            if not bool(found.any()):  # host sync: the event test, once per iteration
                return None
            if not bool(torch.isfinite(torch.where(found[:, None], g_b, 0.0)).all()):
                raise ValueError("event_fn returned non-finite values during the solve")

            def evaluate(theta: Tensor) -> Tensor:
                return self.raw(t + theta * dt, rk.batch_evaluate(y, y_new, K, f_new, dt, theta))

            eps = torch.finfo(y.dtype).eps
            safe_dt = torch.where(dt > 0, dt, 1.0)
            tol = 4 * eps * torch.maximum(torch.maximum(t.abs(), t_new.abs()), dt) / safe_dt
            theta = torch.full_like(t, math.inf)
            index = torch.full_like(self.hits.index, -1)
            for k in range(self.k):
                mask = found & crossed_at[:, k]
                if not bool(mask.any()):  # host sync: per event value, on a crossing only
                    continue
                sk = sign_at_cross[:, k]
                root = _root(evaluate, k, sk, th_a, g_a[:, k] * sk, th_b, g_b[:, k] * sk,
                             tol, mask)
                better = mask & (root < theta)
                theta = torch.where(better, root, theta)
                index = torch.where(better, k, index)
            theta = torch.where(found, theta, 1.0)
            if rk.steps_to_outputs:
                theta = self._refine(f, rk, t, dt, y, K, samples[-1], found, index,
                                     sign_at_cross, th_a, th_b, theta, tol)
            t_ev = torch.where(theta == 1.0, t_new, t + theta * dt)
            rising = sign_at_cross.gather(1, index.clamp(min=0)[:, None])[:, 0] < 0
            if not rk.steps_to_outputs:
                ydot = rk.batch_derivative(y, y_new, K, f_new, dt, theta)
        if rk.steps_to_outputs:  # re-stepped: the method's own order (with the loop's graph)
            y_ev = restep(f, rk, t, dt, y, K, theta)
            with torch.no_grad():
                ydot = f(t_ev, y_ev.detach())
        else:
            y_ev = rk.batch_evaluate(y, y_new, K, f_new, dt, theta)  # with the loop's graph, if any
        y_ev = torch.where((theta == 1.0)[:, None], y_new, y_ev)
        h = self.hits
        h.y = torch.where(found[:, None], y_ev, h.y)
        h.ydot = torch.where(found[:, None], ydot, h.ydot)
        h.t = torch.where(found, t_ev, h.t)
        h.index = torch.where(found, index, h.index)
        h.rising = torch.where(found, rising, h.rising)
        h.found = h.found | found
        if rec is not None:
            sel = found.nonzero()[:, 0]
            rec.events = (sel, theta[sel])
        return found


    def _refine(self, f: BatchFunc, rk: ExplicitRK, t: Tensor, dt: Tensor, y: Tensor, K: Tensor,
                g_end: Tensor, found: Tensor, index: Tensor, s: Tensor, th_a: Tensor,
                th_b: Tensor, theta: Tensor, tol: Tensor) -> Tensor:
        """Locate each found sample's root again on the re-stepped dense output: in the
        bracket found on the Hermite one when it still brackets there, else on the whole
        step, else keep the Hermite root (``event_location``'s ``_refine``, per sample)."""

        def evaluate(th: Tensor) -> Tensor:
            return self.raw(t + th * dt, restep(f, rk, t, dt, y, K, th))

        k = index.clamp(min=0)[:, None]
        sk = s.gather(1, k)[:, 0]
        g_a = torch.where((th_a > 0)[:, None], evaluate(th_a), self.g_prev)
        g_b = torch.where((th_b < 1)[:, None], evaluate(th_b), g_end)
        fa, fb = g_a.gather(1, k)[:, 0] * sk, g_b.gather(1, k)[:, 0] * sk
        inner = (fa > 0) & (fb <= 0)
        whole_a = self.g_prev.gather(1, k)[:, 0] * sk
        whole_b = g_end.gather(1, k)[:, 0] * sk
        whole = ~inner & (whole_a > 0) & (whole_b <= 0)
        a = torch.where(inner, th_a, 0.0)
        b = torch.where(inner, th_b, 1.0)
        fa = torch.where(inner, fa, whole_a)
        fb = torch.where(inner, fb, whole_b)
        out = theta
        for j in range(self.k):
            mask = found & (index == j) & (inner | whole)
            if bool(mask.any()):  # host sync: per event value, on a crossing only
                root = _root(evaluate, j, sk, a, fa, b, fb, tol, mask)
                out = torch.where(mask, root, out)
        return out


def restep(f: BatchFunc, rk: ExplicitRK, t: Tensor, dt: Tensor, y: Tensor, K: Tensor,
           theta: Tensor) -> Tensor:
    """``y(t + θ dt)`` as one step of size ``θ dt`` from the step's start (``dopri8``, whose
    Hermite dense output is below its order; as ``ReStepInterpolant``)."""
    return rk.step_batch(f, t, y, K[0], theta * dt)[0]


def _root(evaluate: Callable[[Tensor], Tensor], k: int, s: Tensor, a: Tensor, fa: Tensor,
          b: Tensor, fb: Tensor, tol: Tensor, mask: Tensor) -> Tensor:
    """First point of ``[a, b]`` where ``s * g_k`` stops being positive, for every sample in
    ``mask`` at once (see ``event_location._root``): Illinois regula falsi while the end
    value is negative, a bisection when it is zero or the bracket stalls; returns the
    bracket end on the positive side (``b`` when ``a`` never moved)."""
    a0 = a
    side = torch.zeros_like(a)
    width = b - a
    stalled = torch.zeros_like(a)
    for _ in range(_MAX_ROOT_ITERS):
        live = mask & (b - a > tol)
        if not bool(live.any()):  # host sync: once per root iteration
            break
        denom = fb - fa
        c_rf = b - fb * (b - a) / torch.where(denom != 0, denom, 1.0)
        bisect = (fb == 0) | (stalled >= 2) | ~((a < c_rf) & (c_rf < b)) | (denom == 0)
        c = torch.where(bisect, 0.5 * (a + b), c_rf)
        c = torch.where(live, c, a)
        fc = evaluate(c)[:, k] * s
        if not bool(torch.isfinite(torch.where(live, fc, 0.0)).all()):
            raise ValueError("event_fn returned a non-finite value while locating a root")
        up = live & (fc > 0)
        down = live & ~(fc > 0)
        fb = torch.where(up & (side == 1), 0.5 * fb, fb)
        fa = torch.where(down & (side == -1), 0.5 * fa, fa)
        a = torch.where(up, c, a)
        fa = torch.where(up, fc, fa)
        b = torch.where(down, c, b)
        fb = torch.where(down, fc, fb)
        side = torch.where(up, 1.0, torch.where(down, -1.0, side))
        halved = (b - a) <= 0.5 * width
        width = torch.where(live & halved, b - a, width)
        stalled = torch.where(live, torch.where(halved, 0.0, stalled + 1), stalled)
    return torch.where(a == a0, b, a)


def ift_reroute(tracker: EventTracker, t_stop: Tensor, y_stop: Tensor) -> tuple[Tensor, Tensor]:
    """Attach ``dt*/dθ`` (implicit function theorem) per sample to the event times and states.

    ``t_stop`` ``(B,)`` canonical float64 and ``y_stop`` ``(B, n)`` (with the gradient mode's
    graph). Returns ``(t*, y(t*))`` in user time with the same values; samples without an
    event get no correction.
    """
    f, hits = tracker.f, tracker.hits
    found = hits.found
    t_user = (f.sign * t_stop).detach()
    index = hits.index.clamp(min=0)[:, None]
    g = tracker.raw(t_stop, y_stop).gather(1, index)[:, 0]
    if not g.requires_grad:
        return t_user, y_stop
    ydot_user = hits.ydot * f.sign_col
    with torch.enable_grad():
        tt = f.user_time(t_stop).detach().requires_grad_(True)
        yy = y_stop.detach().requires_grad_(True)
        out = tracker.event_fn(tt, f.layout.unflatten(yy)).reshape(f.batch, -1)
        gk = out.gather(1, index)[:, 0]
        g_t, g_y = (torch.autograd.grad(gk.sum(), (tt, yy), allow_unused=True)
                    if gk.requires_grad else (None, None))
    with torch.no_grad():
        slope = torch.zeros_like(t_user, dtype=y_stop.dtype)
        if g_t is not None:
            slope = slope + g_t
        if g_y is not None:
            slope = slope + (g_y * ydot_user).sum(-1)
        flat = found & (slope == 0)
    if bool(flat.any()):  # host sync: once per solve
        warnings.warn("event_fn crosses zero tangentially for samples "
                      f"{flat.nonzero()[:, 0].tolist()} (d event_fn / dt = 0 along the "
                      "solution): their event times have no derivative", RuntimeWarning,
                      stacklevel=4)
    use = found & ~flat
    delta = torch.where(use, -(g - g.detach()) / torch.where(use, slope, 1.0), 0.0)
    t_event = t_user + delta.to(t_user.dtype)
    y_event = y_stop + ydot_user * delta[:, None].to(y_stop.dtype)
    return t_event, y_event
