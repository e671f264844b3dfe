"""``method="auto"``: explicit (tsit5) while the problem is not stiff, rodas5p while it is.

Stiffness is detected as in Hairer's DOPRI5 (Hairer & Wanner, *Solving ODEs II*, Section
IV.2, and the code DOPRI5's ``IASTI`` test): after an accepted explicit step, the last two
stages, both at ``t + h``, give the estimate ``ρ = ‖k_7 - k_6‖ / ‖Y_7 - Y_6‖`` of the
dominant eigenvalue's modulus. When ``h ρ`` exceeds the method's stability boundary on the
negative real axis (about 3.3 for tsit5) in 15 accepted steps without 6 calm steps in
between, the step size is limited by stability, not accuracy: the solve switches to
rodas5p. While rodas5p runs, ``‖J‖_∞`` (an upper bound of the spectral radius, from the
Jacobian it computes anyway) is compared with the same boundary: after 10 accepted steps
in which the explicit method would be stable at the current step size, the solve switches
back. Both methods have order 5 with an order-4 error estimate, so the step-size
controller carries on unchanged across a switch.

Each switch is recorded in ``SolveStats.switches`` as ``(t, method)`` (the user's time).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from ..interp import Interpolant
from ..linalg import ImplicitCounts, check_solver_dtype
from . import auto_lanes
from .base import StepResult
from .explicit_rk import ExplicitRK
from .rosenbrock import Rosenbrock, RosenbrockState

__all__ = ["AutoSwitch", "AutoState"]

Func = Callable[[float, Tensor], Tensor]

STABILITY_BOUNDARY = 3.3  # tsit5's stability interval on the negative real axis is ~[-3.5, 0]
STIFF_HITS = 15  # Hairer's DOPRI5 test
CALM_RESET = 6
CALM_TO_SWITCH_BACK = 10


class _Stages(tuple):
    """A step's stages, tagged with the method that produced them."""

    explicit: bool

    def __new__(cls, stages: Sequence[Tensor], explicit: bool) -> _Stages:
        out = super().__new__(cls, stages)
        out.explicit = explicit
        return out


@dataclass(frozen=True)
class AutoState:
    """Which method runs, the stiffness counters, and the Rosenbrock state."""

    explicit: bool
    implicit_state: RosenbrockState
    stiff_hits: int = 0
    calm: int = 0
    switched_at: tuple | None = None  # (t_user, method) of a switch this state adopts
    lanes: Any = None  # per sample: the auto_lanes.LaneSwitch of every lane

    @property
    def counts(self) -> ImplicitCounts:
        return self.implicit_state.counts


class AutoSwitch:
    """A stepper that runs ``explicit`` or ``implicit`` (see the module docstring)."""

    #: takes one step size per lane (a per-sample batch: ``auto_lanes.py``)
    per_sample = True

    steps_to_outputs = False
    needs_f_end_for_dense = False
    #: the switching rule's constants (read by the per-sample path)
    thresholds = (STABILITY_BOUNDARY, STIFF_HITS, CALM_RESET, CALM_TO_SWITCH_BACK)

    def __init__(self, explicit: ExplicitRK, implicit: Rosenbrock):
        self.explicit, self.implicit = explicit, implicit
        self.order = min(explicit.order, implicit.order)
        self.error_order = max(explicit.error_order, implicit.error_order)
        tab = explicit.tableau
        if not (tab.fsal and tab.c[-1] == 1.0 and tab.c[-2] == 1.0):
            raise ValueError("the stiffness test needs an FSAL tableau whose last two stages "
                             "are at t + h (tsit5, dopri5)")
        self._a_prev = tuple((j, w) for j, w in enumerate(tab.a[-2]) if w != 0.0)

    def workspace(self, y0: Tensor) -> tuple:
        return self.explicit.workspace(y0), self.implicit.workspace(y0)

    def init(self, y0: Tensor) -> AutoState:
        # Checked now, not at the first switch to the stiff method deep into the solve.
        check_solver_dtype("auto", y0.dtype)
        return AutoState(True, RosenbrockState())

    def step(self, f: Func, t: float, y: Tensor, f0: Tensor, dt: float,
             state: AutoState | None, ws: tuple | None, *, with_error: bool = True,
             f_last: Func | None = None, fsal_stage: bool = True) -> StepResult:
        if state is None:
            raise ValueError("method='auto' steps cannot be replayed on their own; use "
                             "gradient='direct' or 'adjoint'")
        if isinstance(dt, Tensor):  # per sample: every lane switches on its own
            return auto_lanes.step_lanes(self, f, t, y, f0, dt, state, ws, with_error, f_last)
        if state.switched_at is not None:  # the step that ended with a switch was accepted
            switches = state.counts.switches
            if not switches or switches[-1] != state.switched_at:  # (not again on a retry)
                switches.append(state.switched_at)
            state = replace(state, switched_at=None)
        if state.explicit:
            res = self.explicit.step(f, t, y, f0, dt, None, ws[0] if ws else None,
                                     with_error=with_error, f_last=f_last)
            new_state = self._after_explicit(f, t + dt, y, dt, res, state)
            return StepResult(res.y_new, res.error, _Stages(res.stages, True), new_state,
                              res.ok)
        res = self.implicit.step(f, t, y, f0, dt, state.implicit_state,
                                 ws[1] if ws else None, with_error=with_error, f_last=f_last)
        new_state = self._after_implicit(f, t + dt, dt, state)
        return StepResult(res.y_new, res.error, _Stages(res.stages, False), new_state, res.ok)

    def _after_explicit(self, f: Any, t_new: float, y: Tensor, dt: float, res: StepResult,
                        state: AutoState) -> AutoState:
        with torch.no_grad():
            stages = res.stages
            y_prev = y.detach().clone()
            for j, w in self._a_prev:
                y_prev.add_(stages[j].detach(), alpha=dt * w)
            dy = torch.linalg.vector_norm(res.y_new.detach() - y_prev)
            dk = torch.linalg.vector_norm(stages[-1].detach() - stages[-2].detach())
            # host sync: the decision (0/0 when the two stages coincide: not stiff)
            h_rho = dt * float(torch.where(dy > 0, dk / dy, 0.0))
        if h_rho > STABILITY_BOUNDARY:
            hits, calm = state.stiff_hits + 1, 0
        else:
            calm = state.calm + 1
            hits = 0 if calm >= CALM_RESET else state.stiff_hits
        if hits >= STIFF_HITS:
            return AutoState(False, state.implicit_state,
                             switched_at=(f.sign * t_new, "rodas5p"))
        return replace(state, stiff_hits=hits, calm=calm)

    def _after_implicit(self, f: Any, t_new: float, dt: float, state: AutoState) -> AutoState:
        jac = state.implicit_state.jac
        if not isinstance(jac, Tensor):
            return state
        with torch.no_grad():
            bound = dt * float(torch.linalg.matrix_norm(jac.detach(), ord=float("inf")))
        calm = state.calm + 1 if bound < STABILITY_BOUNDARY else 0
        if calm >= CALM_TO_SWITCH_BACK:
            return AutoState(True, state.implicit_state, switched_at=(f.sign * t_new, "tsit5"))
        return replace(state, calm=calm)

    def f_end(self, f: Func, t_new: float, y_new: Tensor, result: StepResult) -> Tensor:
        if isinstance(result.stages, auto_lanes.LaneStages):
            return auto_lanes.f_end(f, t_new, y_new, result.stages)
        owner = self.explicit if result.stages.explicit else self.implicit
        return owner.f_end(f, t_new, y_new, result)

    def interpolant(self, t: float, dt: float, y: Tensor, y_new: Tensor,
                    stages: Sequence[Tensor], f_new: Tensor | None,
                    f: Func | None = None) -> Interpolant:
        if isinstance(stages, auto_lanes.LaneStages):
            return auto_lanes.interpolant(self, t, dt, y, y_new, stages, f_new, f)
        owner = self.explicit if stages.explicit else self.implicit
        return owner.interpolant(t, dt, y, y_new, tuple(stages), f_new, f)

    def interpolate(self, y: Tensor, y_new: Tensor, dt: float, stages: Sequence[Tensor],
                    f_new: Tensor | None, theta: float, ws: tuple | None) -> Tensor:
        if isinstance(stages, auto_lanes.LaneStages):
            return self.interpolant(0.0, dt, y, y_new, stages, f_new).evaluate(theta)
        if stages.explicit:
            return self.explicit.interpolate(y, y_new, dt, tuple(stages), f_new, theta,
                                             ws[0] if ws else None)
        return self.implicit.interpolate(y, y_new, dt, tuple(stages), f_new, theta,
                                         ws[1] if ws else None)
