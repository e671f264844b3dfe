"""The event time's gradient, by the implicit function theorem (joint and per sample).

With ``t*`` defined by ``g(t*, y(t*; θ)) = 0``,
``dt*/dθ = -(∂g/∂y · ∂y/∂θ + ∂g/∂θ) / (∂g/∂t + ∂g/∂y · ẏ)``, and the returned state
``y(t*)`` gets ``ẏ dt*/dθ`` on top of ``∂y/∂θ``. Both are attached by a zero-valued
correction (``t* - (g - stop_grad(g)) / stop_grad(D)``), so the gradient flows through
whichever gradient mode computed ``y(t*)`` and through any parameters ``event_fn`` itself
holds. ``ẏ`` is the time derivative of the dense output of adaptive methods (exact for the
discretised solution under ``gradient="direct"`` and ``"checkpoint"``), and the vector
field at the event on a fixed grid and for methods that re-step (as torchdiffeq).

References:
    Chen, Amos & Nickel, "Learning Neural Event Functions for Ordinary Differential
    Equations", ICLR 2021.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ..event_location import EventLocator
from ..problem import Problem

__all__ = ["attach_event_time"]


def attach_event_time(locator: EventLocator, problem: Problem, t_stop: Tensor, y_stop: Tensor
                      ) -> tuple[Tensor, Tensor]:
    """Attach ``dt*/dθ`` to each lane's event time and state.

    ``t_stop`` ``(L,)`` canonical float64 and ``y_stop`` ``(L, n)`` (with the gradient
    mode's graph). Returns ``(t*, y(t*))``: the user's time with the same values; lanes
    without an event get no correction.
    """
    C = problem.clock
    hits = locator.hits
    t_user = (C.sign * t_stop).detach()
    real = problem.layout.real_dtype
    index = hits.index.clamp(min=0)[:, None]
    g = locator.call(t_user.to(real), y_stop).gather(1, index)[:, 0]
    if not g.requires_grad:
        return t_user, y_stop
    ydot_user = hits.ydot * (C.sign_column(y_stop.dtype) if C.per_sample else C.sign)
    with torch.enable_grad():
        tt = t_user.to(real).requires_grad_(True)
        yy = y_stop.detach().requires_grad_(True)
        gk = locator.call(tt, yy).gather(1, index)[:, 0]
        g_t, g_y = (torch.autograd.grad(gk.sum(), (tt, yy), allow_unused=True)
                    if gk.requires_grad else (None, None))
    with torch.no_grad():
        slope = torch.zeros_like(t_user, dtype=y_stop.dtype)
        if g_t is not None:
            slope = slope + g_t
        if g_y is not None:
            slope = slope + (g_y * ydot_user).sum(-1)
        flat = hits.found & (slope == 0)
    if bool(flat.any()):  # host sync: once per solve
        which = (f"for samples {flat.nonzero()[:, 0].tolist()} " if C.per_sample else "")
        warnings.warn(f"event_fn crosses zero tangentially {which}(d event_fn / dt = 0 along "
                      "the solution): the event time has no derivative; returning it without "
                      "one", RuntimeWarning, stacklevel=5)
    use = hits.found & ~flat
    delta = torch.where(use, -(g - g.detach()) / torch.where(use, slope, 1.0), 0.0)
    t_event = t_user + delta.to(t_user.dtype)
    y_event = y_stop + ydot_user * delta[:, None].to(y_stop.dtype)
    return t_event, y_event
