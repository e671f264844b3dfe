"""``method="auto"`` per sample: every lane runs tsit5 or rodas5p and switches on its own.

Each lane keeps the joint solve's switching state (which method runs, the stiffness hits
and calm steps of :mod:`odeflow.solvers.auto`) as ``(B,)`` tensors, and takes the decisions
a solve of that sample alone takes. An attempt runs the explicit method on the lanes that
are explicit and the implicit one on the others (each with step size 0 on the rest, which
then stay where they are); when all stepping lanes use one method the other is not run.

The joint stepper's state changes only with an accepted step (the loop keeps the state of
accepted steps only); per sample the loop hands back the state of every attempt, so the
counters an attempt computes are *pending* until the lane's time shows that the attempt
was accepted (a lane's ``t`` changes exactly then), and are committed at the next call. A
switch is recorded, as in a joint solve, when the next step starts, as
``(t, method, sample)`` in ``SolveStats.switches``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from ..interp import Interpolant
from .base import StepResult

__all__ = ["LaneSwitch", "LaneStages", "step_lanes"]


@dataclass
class LaneSwitch:
    """Per lane: the committed switching state, and that of the last attempt (pending)."""

    explicit: Tensor  # (B,) bool
    hits: Tensor  # (B,) long
    calm: Tensor  # (B,) long
    pend: tuple[Tensor, Tensor, Tensor, Tensor] | None = None  # explicit, hits, calm, switched
    pend_t: Tensor | None = None  # (B,) the attempt's start time (nan: none)

    @classmethod
    def start(cls, batch: int, device: torch.device) -> LaneSwitch:
        zeros = torch.zeros(batch, dtype=torch.long, device=device)
        return cls(torch.ones(batch, dtype=torch.bool, device=device), zeros, zeros.clone())


class LaneStages(tuple):
    """A per-sample step's stages: ``(f0,)``, with each method's own stages (``None``
    where the method did not run) and the lanes that used the explicit one."""

    explicit: Tensor
    parts: tuple[Any, Any]

    def __new__(cls, f0: Tensor, explicit: Tensor, parts: tuple[Any, Any]) -> LaneStages:
        out = super().__new__(cls, (f0,))
        out.explicit, out.parts = explicit, parts
        return out


def _commit(clock: Any, t: Tensor, active: Tensor, sw: LaneSwitch, counts: Any) -> None:
    """Adopt the pending state of the lanes whose last attempt was accepted; record the
    switches of those that step again."""
    if sw.pend is None:
        return
    moved = ~torch.isnan(sw.pend_t) & (sw.pend_t != t)
    explicit, hits, calm, switched = sw.pend
    sw.explicit = torch.where(moved, explicit, sw.explicit)
    sw.hits = torch.where(moved, hits, sw.hits)
    sw.calm = torch.where(moved, calm, sw.calm)
    record = moved & switched & active
    sw.pend_t = torch.where(moved, math.nan, sw.pend_t)
    if bool(record.any()):  # host sync: only in a step where some lane switched
        for b in record.nonzero().squeeze(1).tolist():
            method = "tsit5" if bool(sw.explicit[b]) else "rodas5p"
            counts.switches.append((clock.user_float(t, b), method, b))


def step_lanes(auto: Any, f: Any, t: Tensor, y: Tensor, f0: Tensor, dt: Tensor, state: Any,
               ws: Any, with_error: bool, f_last: Any) -> StepResult:
    """One attempt per lane (see the module docstring); ``auto`` is the
    :class:`~odeflow.solvers.auto.AutoSwitch`."""
    boundary, stiff_hits, calm_reset, calm_to_switch_back = auto.thresholds
    if state.lanes is None:
        state = replace(state, lanes=LaneSwitch.start(y.shape[0], y.device))
    sw: LaneSwitch = state.lanes
    active = dt > 0
    _commit(f.clock, t, active, sw, state.counts)
    explicit = sw.explicit
    run_e, run_i = (bool(x) for x in torch.stack(  # host sync: which methods run
        [(active & explicit).any(), (active & ~explicit).any()]).tolist())
    res_e = res_i = None
    if run_e:
        dt_e = dt if not run_i else torch.where(explicit, dt, 0.0)
        res_e = auto.explicit.step(f, t, y, f0, dt_e, None, ws[0] if ws else None,
                                   with_error=with_error, f_last=f_last)
    if run_i:
        dt_i = dt if not run_e else torch.where(explicit, 0.0, dt)
        res_i = auto.implicit.step(f, t, y, f0, dt_i, state.implicit_state,
                                   ws[1] if ws else None, with_error=with_error, f_last=f_last)
    col = explicit[:, None]
    if res_i is None:
        y_new, err = res_e.y_new, res_e.error
    elif res_e is None:
        y_new, err = res_i.y_new, res_i.error
    else:
        y_new = torch.where(col, res_e.y_new, res_i.y_new)
        err = None if not with_error else torch.where(col, res_e.error, res_i.error)
    with torch.no_grad():
        hits, calm = sw.hits, sw.calm
        to_i = to_e = torch.zeros_like(active)
        hits_e, calm_e, calm_i = hits, calm, calm
        if res_e is not None:
            stages = res_e.stages
            h = dt.to(y.dtype)[:, None]
            y_prev = y.detach()
            for j, w in auto._a_prev:
                y_prev = y_prev + (w * h) * stages[j].detach()
            dy = torch.linalg.vector_norm(res_e.y_new.detach() - y_prev, dim=-1)
            dk = torch.linalg.vector_norm(stages[-1].detach() - stages[-2].detach(), dim=-1)
            h_rho = dt * torch.where(dy > 0, dk / torch.where(dy > 0, dy, 1.0), 0.0).double()
            stiff = h_rho > boundary
            calm_e = torch.where(stiff, 0, calm + 1)
            hits_e = torch.where(stiff, hits + 1, torch.where(calm_e >= calm_reset, 0, hits))
            to_i = explicit & (hits_e >= stiff_hits)
        if res_i is not None:
            jac = state.implicit_state.jac.detach()
            bound = dt * torch.linalg.matrix_norm(jac, ord=math.inf).double()
            calm_i = torch.where(bound < boundary, calm + 1, 0)
            to_e = ~explicit & (calm_i >= calm_to_switch_back)
        switched = to_i | to_e
        new_explicit = torch.where(explicit, ~to_i, to_e)
        new_hits = torch.where(explicit, torch.where(to_i, 0, hits_e),
                               torch.where(to_e, 0, hits))
        new_calm = torch.where(switched, 0, torch.where(explicit, calm_e, calm_i))
        sw.pend = (new_explicit, new_hits, new_calm, switched)
        sw.pend_t = torch.where(active, t, math.nan)
    parts = (res_e.stages if res_e is not None else None,
             res_i.stages if res_i is not None else None)
    return StepResult(y_new, err, LaneStages(f0, explicit, parts), state)


def f_end(f: Any, t_new: Tensor, y_new: Tensor, stages: LaneStages) -> Tensor:
    """The explicit lanes' FSAL stage, the implicit lanes' evaluation at the step's end."""
    s_e, s_i = stages.parts
    if s_i is None:
        return s_e[-1]
    f_new = f(t_new, y_new)
    return f_new if s_e is None else torch.where(stages.explicit[:, None], s_e[-1], f_new)


class LaneInterpolant(Interpolant):
    """Each lane's dense output from the method it used (both parts always present, a
    method that did not run as a zero placeholder, so that a solve's pieces have one
    structure and stack into a per-sample dense output)."""

    __slots__ = ("t", "dt", "explicit", "e", "i")

    def __init__(self, t: Tensor, dt: Tensor, explicit: Tensor, e: Interpolant,
                 i: Interpolant):
        self.t, self.dt, self.explicit, self.e, self.i = t, dt, explicit, e, i

    def evaluate(self, theta: Any) -> Tensor:
        return torch.where(self.explicit[:, None], self.e.evaluate(theta),
                           self.i.evaluate(theta))

    def derivative(self, theta: Any) -> Tensor:
        return torch.where(self.explicit[:, None], self.e.derivative(theta),
                           self.i.derivative(theta))

    def detached(self) -> LaneInterpolant:
        return LaneInterpolant(self.t, self.dt, self.explicit, self.e.detached(),
                               self.i.detached())


def interpolant(auto: Any, t: Tensor, dt: Tensor, y: Tensor, y_new: Tensor,
                stages: LaneStages, f_new: Tensor | None, f: Any = None) -> Interpolant:
    """The lanes' dense output (see :class:`LaneInterpolant`)."""
    s_e, s_i = stages.parts
    if s_e is None:
        s_e = (torch.zeros_like(y),) * auto.explicit.stages
    if s_i is None:
        s_i = (stages[0],) + (torch.zeros_like(y),) * auto.implicit.tableau.stages
    e = auto.explicit.interpolant(t, dt, y, y_new, tuple(s_e), f_new, f)
    i = auto.implicit.interpolant(t, dt, y, y_new, tuple(s_i), f_new, f)
    return LaneInterpolant(t, dt, stages.explicit, e, i)


def is_lanes(stages: Sequence[Tensor]) -> bool:
    return isinstance(stages, LaneStages)
