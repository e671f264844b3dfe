"""Gradients with respect to the output times, from the flow's derivative.

For ``y_i = y(t_i)`` with ``y(t_0) = y0``: ``∂y_i/∂t_i = f(t_i, y_i)`` and
``∂y_i/∂t_0 = -(∂y_i/∂y0) f(t_0, y0)``. The second is obtained by solving from
``y0 - (t_0 - stop_grad(t_0)) · stop_grad(f(t_0, y0))``, which has the value ``y0`` and
routes ``∂L/∂t_0 = -(∂L/∂y0 through the solve) · f(t_0, y0)`` through whichever gradient
mode is in use; :class:`_OutputTimes` adds ``<∂L/∂y_i, f(t_i, y_i)>`` for every output.
For ``i = 0`` both terms cancel, as they must: ``y(t_0) = y0`` does not depend on ``t_0``.
These are the exact flow's derivatives at the computed solution; they differ from the
derivative of the discrete solution by terms of the order of the solver's tolerance.
Per sample the same holds lane by lane (a shared 1-D ``t`` sums the lanes' terms).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..problem import Problem
from ..stats import SolveStats

__all__ = ["shift_initial_state", "attach_output_times", "user_derivative"]


def user_derivative(problem: Problem, t_user: Tensor, y: Tensor) -> Tensor:
    """``dy/dt`` in the user's time direction at user times ``t_user`` (0-dim, or ``(B,)``)."""
    C = problem.clock
    out = problem.func.at(t_user.to(problem.layout.real_dtype), y)  # canonical
    return out * C.sign_column(out.dtype) if C.per_sample else C.sign * out


def shift_initial_state(problem: Problem, y0: Tensor) -> Tensor:
    """``y0`` with the ``t_0`` dependence of the flow attached (see the module docstring)."""
    t0 = problem.t[..., 0]
    if problem.per_sample:  # (a 1-D t is shared by the lanes)
        t0 = t0.expand(problem.clock.batch)
    with torch.no_grad():
        f0 = user_derivative(problem, t0.detach(), y0)
    shift = (t0 - t0.detach()).to(y0.dtype)
    return y0 - (shift[:, None] if problem.per_sample else shift) * f0


class _OutputTimes(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t: Tensor, ys: Tensor, problem: Problem,  # type: ignore[override]
                stats: SolveStats) -> Tensor:
        ctx.problem, ctx.stats = problem, stats
        ctx.save_for_backward(t, ys.detach())
        return ys.view_as(ys)

    @staticmethod
    def backward(ctx, grad_ys: Tensor):  # type: ignore[override]
        t, ys = ctx.saved_tensors
        problem: Problem = ctx.problem  # (attached only where t requires grad)
        lanes = problem.per_sample
        grid = t if (not lanes or t.ndim == 2) else t.expand(problem.clock.batch, -1)
        with torch.no_grad():
            # where, not a product alone: an output no loss reaches (a failed sample's
            # nan past its failure) must add 0, not 0 * nan
            rows = [torch.where(g != 0, g * user_derivative(
                        problem, grid[..., j].detach(), ys[j]), 0.0).sum(-1)
                    for j, g in enumerate(torch.nan_to_num(grad_ys))]
        g = torch.stack(rows, -1).to(t.dtype)  # (T,) or (B, T)
        grad_t = g.sum(0) if (lanes and t.ndim == 1) else g
        ctx.stats.nfe_backward += ys.shape[0]
        return grad_t, grad_ys, None, None


def attach_output_times(problem: Problem, ys: Tensor, stats: SolveStats) -> Tensor:
    """``ys`` (``(T, n)`` or ``(T, B, n)``) whose backward also gives
    ``∂L/∂t_i = <∂L/∂y_i, f(t_i, y_i)>``; the evaluations this needs are added to
    ``stats.nfe_backward``."""
    return _OutputTimes.apply(problem.t, ys, problem, stats)
