"""SDE methods on odeflow's one loop: a stepper that takes Brownian increments.

:class:`SDESteps` puts an SDE method (``step(sde, t, dt, y, dW, state, levy)``) behind the
stepper contract of :mod:`odeflow.integrate`, so SDE solves use the same loop as ODE
solves: its stops, statistics, failure statuses and step-size control. The stepper queries
the Brownian motion itself for each step's increment (and Lévy area), so a replayed step
sees the same path. The loop's ``func`` is not used by SDE methods (they call the drift
and diffusion they hold); :func:`solve_sde` gives it a zero field.

* Fixed steps (``adaptive=False``): the grid ``t0 + k dt`` (the last step ends on the last
  output time); outputs between grid points are interpolated linearly, as torchsde does.
* Adaptive steps: one step of ``h`` against two of ``h/2`` (torchsde's scheme; see also
  Gaines & Lyons, "Variable step size control in the numerical solution of stochastic
  differential equations", SIAM J. Appl. Math. 1997): the two-half-step result is kept,
  their difference is the error estimate the loop scales by ``rtol``/``atol``, a step of
  ``dt_min`` is accepted whatever its error, and the next step comes from a PI controller
  with torchsde's limits (grow at most 1.4x, shrink at most 5x).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..controllers import PIDController
from ..integrate import LoopConfig, integrate
from ..interp import LinearInterpolant, linear
from ..problem import make_problem
from ..run import check_fixed_grid_finite, failure
from ..solvers.base import StepResult
from ..stats import SolveStats
from .methods import Levy, SDEMethod

__all__ = ["SDEStats", "SDESteps", "solve_sde", "sde_loop", "sde_outputs"]

#: torchsde's step-size limits, with odeflow's PI filter (Hairer & Wanner II, eq. IV.2.43c).
CONTROLLER = PIDController(beta1=0.7, beta2=-0.4, safety=0.9, ifactor=1.4, dfactor=0.2)


@dataclass
class SDEStats(SolveStats):
    """:class:`~odeflow.stats.SolveStats` of an SDE solve.

    ``nfe`` is ``nfe_drift + nfe_diffusion``; a fused call (``f_and_g``) counts one of
    each. An adaptive attempt is three steps of the method (one of ``h``, two of ``h/2``).
    """

    nfe_drift: int = 0
    nfe_diffusion: int = 0


class SDESteps:
    """An SDE method as a stepper of the one loop (see the module docstring)."""

    steps_to_outputs = False
    needs_f_end_for_dense = False
    fsal = False
    implicit = False
    per_sample = False
    order = 1
    error_order = 1  # the step-doubling estimate: the controller's exponent is 1/2

    def __init__(self, method: SDEMethod, funcs: Any, bm: Any, state0: tuple,
                 shape: torch.Size, dt_min: float = 0.0):
        self.method, self.funcs, self.bm, self.state0 = method, funcs, bm, state0
        self.shape = shape  # the loop integrates the flat state; methods see (batch, d)
        self.dt_min = dt_min
        self.warned = False

    def workspace(self, y0: Tensor) -> None:
        return None

    def init(self, y0: Tensor) -> tuple:
        return self.state0

    def _one(self, t: float, dt: float, y: Tensor, state: tuple) -> tuple[Tensor, tuple]:
        need = self.method.levy
        if need == "space-time":
            dW, U = self.bm(t, t + dt, return_U=True)
            levy = Levy(U=U)
        elif need == "area":
            dW, A = self.bm(t, t + dt, return_A=True)
            levy = Levy(A=A)
        else:
            dW, levy = self.bm(t, t + dt), Levy()
        y_new, new_state = self.method.step(self.funcs, t, dt, y.view(self.shape), dW, state,
                                            levy)
        return y_new.reshape(-1), new_state

    def step(self, f: Any, t: float, y: Tensor, f0: Tensor, dt: float, state: tuple, ws: Any,
             *, with_error: bool = True, f_last: Any = None, fsal_stage: bool = True
             ) -> StepResult:
        """One step of ``dt``; with ``with_error``, two half steps and their difference
        from the full step as the error estimate (``f0``/``f_last``: unused)."""
        if not with_error:
            y_new, new_state = self._one(t, dt, y, state)
            return StepResult(y_new, None, (f0,), new_state)
        y_full, _ = self._one(t, dt, y, state)
        half = 0.5 * dt
        y_mid, state_mid = self._one(t, half, y, state)
        y_two, new_state = self._one(t + half, dt - half, y_mid, state_mid)
        if dt <= self.dt_min * (1 + 1e-12) and not self.warned:
            self.warned = True  # as torchsde: said once per solve
            warnings.warn("Hitting minimum allowed step size in adaptive time-stepping.",
                          stacklevel=6)
        with torch.no_grad():
            error = (y_two - y_full).detach()
        return StepResult(y_two, error, (f0,), new_state)

    def f_end(self, f: Any, t_new: float, y_new: Tensor, result: StepResult) -> Tensor:
        return result.stages[0]  # the loop's f is a zero field: nothing to evaluate

    def interpolant(self, t, dt, y, y_new, stages, f_new, f=None):
        return LinearInterpolant(t, dt, y, y_new)

    def interpolate(self, y, y_new, dt, stages, f_new, theta, ws):
        return linear(y, y_new, theta)


def solve_sde(stepper: SDESteps, y0: Tensor, ts: Tensor, times: list[float], dt: float,
              adaptive: bool, rtol: float, atol: float, dt_min: float, throw: bool
              ) -> tuple[Tensor, tuple, SolveStats]:
    """Run ``stepper`` on the one loop from ``ts[0]`` through every output time.

    Returns ``(ys, final carried state, statistics)``; a failure raises
    :class:`~odeflow.SolveError` (or, with ``throw=False``, leaves ``nan`` after it).
    """
    problem, _, result = sde_loop(stepper, y0, ts, times, dt, adaptive, rtol, atol, dt_min)
    return sde_outputs(problem, result, y0, times, adaptive, throw), result.state, result.stats


def sde_loop(stepper: SDESteps, y0: Tensor, ts: Tensor, times: list[float], dt: float,
             adaptive: bool, rtol: float, atol: float, dt_min: float, record: bool = False
             ) -> tuple[Any, LoopConfig, Any]:
    """The loop of :func:`solve_sde`: ``(problem, loop configuration, loop result)``.

    ``record`` keeps one :class:`~odeflow.integrate.StepRecord` per step, for the
    checkpointed gradient (:mod:`odeflow.sde.checkpoint`).
    """
    problem = make_problem(lambda t, y: torch.zeros_like(y), y0, ts, rtol, atol, {})
    t0, t1 = times[0], times[-1]
    if adaptive:
        cfg = LoopConfig(True, CONTROLLER, 10**9, dt_min, math.inf, dt, [t1], None,
                         record=record)
    else:
        n = max(1, math.ceil((t1 - t0) / dt - 1e-9))
        cfg = LoopConfig(False, None, 10**9, 0.0, math.inf, None,
                         [t0 + i * dt for i in range(1, n)] + [t1], None, record=record)
    return problem, cfg, integrate(problem, stepper, cfg)


def sde_outputs(problem: Any, result: Any, y0: Tensor, times: list[float], adaptive: bool,
                throw: bool) -> Tensor:
    """The outputs ``(T, *y0.shape)`` of a loop result; a failure raises (or, with
    ``throw=False``, leaves ``nan`` after it)."""
    if not adaptive:
        check_fixed_grid_finite(problem, result)
    err = failure(problem, result, fixed=not adaptive)
    ys = torch.stack(result.ys)
    if err is not None:
        if throw:
            raise err
        ys = torch.cat([ys, ys.new_full((len(times) - ys.shape[0], *ys.shape[1:]), math.nan)])
    return ys.view(len(times), *y0.shape)
