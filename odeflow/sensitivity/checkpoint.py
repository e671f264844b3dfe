"""Exact gradients at low memory: replay each accepted step under autograd, newest first.

The forward pass runs the ordinary loop without a graph and keeps one
:class:`~odeflow.integrate.StepRecord` per accepted step (its start time, step size and
start state). The backward pass rebuilds the graph of one step at a time, from the last to
the first, and pulls the incoming gradient through it. Because every step is replayed
with the same ``t``, ``dt`` and start state, the result is the gradient of the same
discrete solution that ``gradient="direct"`` differentiates, while memory holds one step's
graph plus one state per step instead of every stage of every step.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from ..integrate import StepRecord, run_loop
from ..interp import hermite, linear
from ..problem import Problem
from ..solvers import MethodSpec
from ..stats import SolveStats

__all__ = ["solve_checkpoint", "attach_checkpoint"]


class _Checkpoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, payload: tuple, spec: MethodSpec, stats: SolveStats, y0: Tensor,
                *params: Tensor) -> Tensor:  # type: ignore[override]
        problem, steps, ys = payload
        ctx.problem, ctx.spec, ctx.stats, ctx.steps = problem, spec, stats, steps
        ctx.save_for_backward(*params)
        return ys

    @staticmethod
    def backward(ctx, grad_ys: Tensor):  # type: ignore[override]
        problem: Problem = ctx.problem
        spec: MethodSpec = ctx.spec
        steps: list[StepRecord] = ctx.steps
        params = ctx.saved_tensors
        f = problem.func
        stepper = spec.build(problem.options, problem.rtol, problem.atol)
        nfe_before = f.nfe
        t_out = problem.t_out
        fixed = not spec.adaptive
        interp = problem.options.get("interp", "linear")
        perturb = fixed and bool(problem.options.get("perturb", False))
        f_last = (lambda t, x: f.perturbed(t, x, -1)) if perturb else None

        param_grads: list[Tensor | None] = [None] * len(params)
        adj: Tensor | None = None  # dL/dy at the end of the step being replayed
        j = len(t_out) - 1  # newest output not yet routed
        for n in range(len(steps) - 1, -1, -1):
            step = steps[n]
            outs = []
            while j >= 1 and t_out[j] > step.t:
                outs.append(j)
                j -= 1
            # The FSAL stage (the derivative at the step's end) only feeds the dense output;
            # y_new does not need it, so it is skipped unless an output lies inside the step.
            interior = any(t_out[k] != step.t_new for k in outs)
            with torch.enable_grad():
                y = step.y.detach().requires_grad_(True)
                if perturb or (n > 0 and steps[n - 1].jump_after):
                    f0 = f.perturbed(step.t, y, +1)
                else:
                    f0 = f(step.t, y)
                result = stepper.step(
                    f, step.t, y, f0, step.dt, None, None, with_error=False,
                    f_last=f_last if not step.jump_after else
                    (lambda tt, x: f.perturbed(tt, x, -1)),
                    fsal_stage=interior)
                y_new, stages = result.y_new, result.stages
                targets, grads = [], []
                end_grad = adj
                f_new = None
                for k in outs:
                    if t_out[k] == step.t_new:
                        end_grad = grad_ys[k] if end_grad is None else end_grad + grad_ys[k]
                        continue
                    theta = (t_out[k] - step.t) / step.dt
                    if fixed:
                        if interp == "linear":
                            out = linear(y, y_new, theta)
                        else:
                            if f_new is None:
                                f_new = (f.perturbed(step.t_new, y_new, +1) if perturb
                                         else f(step.t_new, y_new))
                            out = hermite(y, y_new, f0, f_new, step.dt, theta)
                    else:
                        if f_new is None and stepper.needs_f_end_for_dense:
                            f_new = stepper.f_end(f, step.t_new, y_new, result)
                        out = stepper.interpolate(y, y_new, step.dt, stages, f_new, theta, None)
                    targets.append(out)
                    grads.append(grad_ys[k])
                if end_grad is not None:
                    targets.append(y_new)
                    grads.append(end_grad)
                if not targets:
                    adj = None
                    continue
                inputs = (y, *params)
                # retain_graph: func may use a tensor computed once outside it from a
                # parameter (w = p * p); its graph is shared by every replayed step.
                got = torch.autograd.grad(targets, inputs, grads, allow_unused=True,
                                          retain_graph=True)
            adj = got[0]
            for i, g in enumerate(got[1:]):
                if g is not None:
                    param_grads[i] = g if param_grads[i] is None else param_grads[i] + g
        grad_y0 = grad_ys[0] if adj is None else adj + grad_ys[0]
        ctx.stats.nfe_backward += f.nfe - nfe_before
        ctx.stats.n_steps_backward += len(steps)
        return (None, None, None, grad_y0, *param_grads)


def attach_checkpoint(problem: Problem, spec: MethodSpec, stats: SolveStats, y0: Tensor,
                      params: tuple[Tensor, ...], steps: list[StepRecord], ys: Tensor) -> Tensor:
    """Give the outputs ``ys`` of a finished loop the checkpointed gradient.

    Args:
        problem: the problem the loop solved (its ``t_out`` says where ``ys`` are; an event
            solve passes ``(t0, t_event)``).
        spec: the method.
        stats: receives ``nfe_backward`` and ``n_steps_backward`` when backward runs.
        y0: the flat initial state, with its graph (gradients flow to it).
        params: the tensors whose gradients backward returns.
        steps: the loop's :class:`~odeflow.integrate.StepRecord` list (``record_steps``).
        ys: the loop's stacked flat outputs ``(T, n)``, without graph.

    Returns:
        ``ys`` (the same values) whose backward replays the steps newest first.
    """
    return _Checkpoint.apply((replace(problem, y0=y0.detach()), steps, ys), spec, stats, y0,
                             *params)


def solve_checkpoint(problem: Problem, spec: MethodSpec, stats: SolveStats, y0: Tensor,
                     params: tuple[Tensor, ...]) -> Tensor:
    """Solve with checkpointed gradients; returns the stacked flat outputs ``(T, n)``."""
    if not spec.replayable:
        raise ValueError(
            f"gradient='checkpoint' replays single steps and needs a Runge–Kutta method; "
            f"method={spec.name!r} is not one (use gradient='adjoint' or 'direct')"
        )
    with torch.no_grad():
        result = run_loop(replace(problem, y0=y0.detach()), spec, record_steps=True)
    stats.copy_forward(result.stats)
    stats.nfe = problem.func.nfe
    return attach_checkpoint(problem, spec, stats, y0, params, result.steps,
                             torch.stack(result.ys))
