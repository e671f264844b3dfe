"""A fixed-grid method as the one loop sees it (:mod:`odeflow.integrate`)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..interp import HermiteInterpolant, LinearInterpolant, hermite, linear

__all__ = ["FixedGridSteps"]


class FixedGridSteps:
    """The method's steps, with no error estimate, and the outputs' interpolant chosen by
    ``options["interp"]`` (linear, or cubic Hermite from the step's end derivatives)."""

    def __init__(self, stepper: Any, interp: str):
        self.stepper = stepper
        self.cubic = interp == "cubic"
        self.order = stepper.order
        self.error_order = 1
        self.steps_to_outputs = False
        self.needs_f_end_for_dense = self.cubic
        # The method's own steps, called directly (no forwarding call per step).
        self.workspace = stepper.workspace
        self.init = stepper.init
        self.step = stepper.step

    def interpolant(self, t, dt, y, y_new, stages, f_new, f=None):
        if self.cubic:
            return HermiteInterpolant(t, dt, y, y_new, stages[0], f_new)
        return LinearInterpolant(t, dt, y, y_new)

    def f_end(self, f: Any, t_new: Any, y_new: Tensor, result: Any) -> Tensor:
        return f(t_new, y_new)

    def dense_interpolant(self, t, dt, y, y_new, stages, f_new):
        return HermiteInterpolant(t, dt, y, y_new, stages[0], f_new)

    def interpolate(self, y, y_new, dt, stages, f_new, theta, ws):
        if self.cubic:
            return hermite(y, y_new, stages[0], f_new, dt, theta)
        return linear(y, y_new, theta)
