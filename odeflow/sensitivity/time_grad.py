"""Gradients with respect to the output times, from the flow's derivative.

For ``y_i = y(t_i)`` with ``y(t_0) = y0``: ``∂y_i/∂t_i = f(t_i, y_i)`` and
``∂y_i/∂t_0 = -(∂y_i/∂y0) f(t_0, y0)``. The second is obtained by solving from
``y0 - (t_0 - stop_grad(t_0)) · stop_grad(f(t_0, y0))``, which has the value ``y0`` and
routes ``∂L/∂t_0 = -(∂L/∂y0 through the solve) · f(t_0, y0)`` through whichever gradient
mode is in use; :class:`_OutputTimes` adds ``<∂L/∂y_i, f(t_i, y_i)>`` for every output.
For ``i = 0`` both terms cancel, as they must: ``y(t_0) = y0`` does not depend on ``t_0``.
These are the exact flow's derivatives at the computed solution; they differ from the
derivative of the discrete solution by terms of the order of the solver's tolerance.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..problem import Problem
from ..stats import SolveStats

__all__ = ["shift_initial_state", "attach_output_times"]


def shift_initial_state(problem: Problem, y0: Tensor) -> Tensor:
    """``y0`` with the ``t_0`` dependence of the flow attached (see the module docstring)."""
    t0 = problem.t[0]
    with torch.no_grad():
        f0 = problem.func.at(t0.detach().to(problem.layout.real_dtype), y0)
    # f0 is canonical (sign applied): d y / d t_user = sign * f0.
    return y0 - (t0 - t0.detach()).to(y0.dtype) * (problem.sign * f0)


class _OutputTimes(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t: Tensor, ys: Tensor, problem: Problem,  # type: ignore[override]
                stats: SolveStats | None) -> Tensor:
        ctx.problem = problem
        ctx.stats = stats
        ctx.save_for_backward(t, ys.detach())
        return ys.view_as(ys)

    @staticmethod
    def backward(ctx, grad_ys: Tensor):  # type: ignore[override]
        t, ys = ctx.saved_tensors
        problem: Problem = ctx.problem
        grad_t = None
        if ctx.needs_input_grad[0]:
            grad_t = torch.zeros_like(t)
            with torch.no_grad():
                for i in range(ys.shape[0]):
                    ti = t[i].to(problem.layout.real_dtype)
                    f_user = problem.sign * problem.func.at(ti, ys[i])
                    grad_t[i] = (grad_ys[i] * f_user).sum().to(t.dtype)
            if ctx.stats is not None:
                ctx.stats.nfe_backward += ys.shape[0]
        return grad_t, grad_ys, None, None


def attach_output_times(problem: Problem, ys: Tensor, stats: SolveStats | None = None) -> Tensor:
    """``ys`` (``(T, n)`` flat) whose backward also gives ``∂L/∂t_i = <∂L/∂y_i, f(t_i, y_i)>``.

    The ``T`` evaluations of ``func`` this needs are added to ``stats.nfe_backward``.
    """
    return _OutputTimes.apply(problem.t, ys, problem, stats)
