"""Exact gradients at low memory: replay each step under autograd, newest first.

The forward pass runs the loop without a graph and keeps one
:class:`~odeflow.integrate.StepRecord` per iteration (start time, step size, start state,
which lanes accepted, which outputs and event were taken from it). The backward pass
rebuilds the graph of one step at a time, from the last to the first, and pulls the
incoming gradient through it. Because every step is replayed with the same ``t``, ``dt``
and start state, the result is the gradient of the same discrete solution that
``gradient="direct"`` differentiates, while memory holds one step's graph plus one state
per step instead of every stage of every step. Joint and per-sample solves replay alike
(per sample, a step is one batched step; lanes that failed get no gradient).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import Tensor

from ..integrate import StepRecord, f_at_end
from ..problem import Problem
from ..stats import SolveStats
from . import add_grads, first_good_lane

__all__ = ["attach_checkpoint"]


class _Checkpoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, payload: tuple, ys: Tensor, y_last: Tensor, y0: Tensor,
                *params: Tensor):  # type: ignore[override]
        ctx.payload = payload
        ctx.save_for_backward(*params)
        return ys.clone(), y_last.clone()

    @staticmethod
    def backward(ctx, grad_ys: Tensor, grad_last: Tensor):  # type: ignore[override]
        problem, stepper, cfg, records, stats, failed, event_found = ctx.payload
        params = ctx.saved_tensors
        C = problem.clock
        nfe_before = problem.func.nfe
        if failed is not None:
            # Outputs never reached carry no gradient; lanes that failed get none (and are
            # replayed, with no step, from the first good lane's start state).
            good = first_good_lane(failed)
            if good is None:
                return (None, None, None, torch.zeros_like(grad_ys[0]),
                        *(torch.zeros_like(p) for p in params))
            keep = ~failed[:, None]
            grad_ys = torch.where(keep, torch.nan_to_num(grad_ys), 0.0)
            grad_last = torch.where(keep, torch.nan_to_num(grad_last), 0.0)
        if not C.per_sample and records:
            grad_last = grad_last.reshape(records[0].y.shape)
        adj = grad_last.clone()
        if event_found is not None:  # y_last of event lanes is injected at their event
            adj = torch.where(event_found[:, None] if C.per_sample else event_found[0], 0.0, adj)
        param_grads: list[Tensor | None] = [None] * len(params)
        for rec in reversed(records):
            with torch.enable_grad():
                y_in = rec.y if failed is None else torch.where(
                    keep, rec.y, records[0].y[good:good + 1])
                y = y_in.detach().requires_grad_(True)
                dt = rec.dt if failed is None else torch.where(failed, 0.0, rec.dt)
                targets, grads = _replay(problem, stepper, cfg, rec, y, dt, adj, grad_ys,
                                         grad_last)
                # retain_graph: func may use a tensor computed once outside it from a
                # parameter (w = p * p); its graph is shared by every replayed step.
                got = torch.autograd.grad(targets, (y, *params), grads, allow_unused=True,
                                          retain_graph=True)
                # Release this step's graph before the next one is built: with retain_graph
                # it would otherwise stay alive beside it (measured: 115 -> 69 MiB on S3).
                del targets, grads
            adj = got[0] if got[0] is not None else torch.zeros_like(adj)
            param_grads = add_grads(param_grads, got[1:])
        stats.nfe_backward += problem.func.nfe - nfe_before
        stats.n_steps_backward += len(records)
        return (None, None, None, adj + grad_ys[0], *param_grads)


def _replay(problem: Problem, stepper: Any, cfg: Any, rec: StepRecord, y: Tensor, dt: Any,
            adj: Tensor, grad_ys: Tensor, grad_last: Tensor) -> tuple[list, list]:
    """One step rebuilt under autograd; the tensors it produced and their gradients."""
    C, f, lanes = problem.clock, problem.func, problem.per_sample
    jumps = cfg.stop_jump is not None
    if cfg.perturb or (rec.f0_side if not lanes else jumps):
        f0 = f.perturbed(rec.t, y, 1 if cfg.perturb else rec.f0_side)
    else:
        f0 = f(rec.t, y)
    f_last = None
    if cfg.perturb or (rec.last_side if not lanes else jumps):
        f_last = partial(f.perturbed, side=-1 if cfg.perturb else rec.last_side)
    # The derivative at the step's end only feeds the dense output; y_new does not need it.
    interior = rec.event is not None or any(
        th != 1.0 if not lanes else True for _, _, th in rec.outputs)
    res = stepper.step(f, rec.t, y, f0, dt, None, None, with_error=False, f_last=f_last,
                       fsal_stage=interior)
    y_new, stages = res.y_new, res.stages
    f_new = None
    if interior and stepper.needs_f_end_for_dense:
        fsal = getattr(stepper, "fsal", False) and cfg.fsal
        f_new = f_at_end(stepper, f, cfg, fsal, rec.t_new, y_new, res)
    targets = [C.rows(rec.ok, y_new, y)]
    grads = [adj]
    for sel, j, theta in rec.outputs:
        if not lanes:
            targets.append(y_new if theta == 1.0 else stepper.interpolate(
                y, y_new, dt, stages, f_new, theta, None))
            grads.append(grad_ys[j])
            continue
        # per sample: ``sel`` the lanes that passed output ``j[b]`` in this step
        piece = stepper.interpolant(rec.t, dt, y, y_new, stages, f_new)
        exact = (C.grid.gather(1, j[:, None])[:, 0] == rec.t_new)[:, None]  # took y_new
        targets.append(torch.where(exact, y_new, piece.evaluate(theta)))
        cols = torch.arange(y.shape[0], device=y.device)
        grads.append(torch.where(sel[:, None], grad_ys[j, cols], 0.0))
    if rec.event is not None:
        sel, th, restep = rec.event  # (per sample th is 1 in the lanes without an event)
        piece = stepper.interpolant(rec.t, dt, y, y_new, stages, f_new, f)
        y_ev = (piece.precise if restep else piece).evaluate(th)
        if lanes:
            targets.append(torch.where((th == 1.0)[:, None], y_new, y_ev)[sel])
            grads.append(grad_last[sel])
        else:
            targets.append(y_new if th == 1.0 else y_ev)
            grads.append(grad_last)
    return targets, grads


def attach_checkpoint(problem: Problem, stepper: Any, cfg: Any, stats: SolveStats, y0: Tensor,
                      params: tuple[Tensor, ...], records: list[StepRecord], ys: Tensor,
                      y_last: Tensor, failed: Tensor | None, event_found: Tensor | None = None
                      ) -> tuple[Tensor, Tensor]:
    """``(ys, y_last)`` of a recorded forward, differentiable by replay.

    ``stats`` receives ``nfe_backward`` and ``n_steps_backward`` when backward runs;
    ``y0`` (flat) keeps its graph; ``ys`` and ``y_last`` (where the loop stopped: the event
    state of event lanes) have none. Per sample, ``failed`` lanes get no gradient, and the
    ``y_last`` of ``event_found`` lanes is injected at their event's step.
    """
    payload = (problem, stepper, cfg, records, stats, failed, event_found)
    return _Checkpoint.apply(payload, ys, y_last, y0, *params)
