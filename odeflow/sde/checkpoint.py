"""``sdeint(..., gradient="checkpoint")``: backpropagation's gradients in less memory.

The forward solve runs odeflow's loop without a graph and keeps, per step, its start
time, step size and start state (:class:`~odeflow.integrate.StepRecord`). The backward
pass replays the steps newest first under autograd, one step's graph at a time, with
:mod:`odeflow.sensitivity.checkpoint` (the ODE solvers' replay). An SDE step is a pure
function of ``(t, dt, y)`` and the Brownian increment over ``[t, t + dt]``, and the
Brownian motion answers a repeated query with the same values whatever the order, so
each replayed step is the forward's step: the gradients are those of backpropagation
through the same solve (``gradient="direct"``) up to rounding. Memory holds one state per
step and one step's graph, instead of every intermediate tensor of every step.

Fixed steps and methods without a carried state (every method but ``reversible_heun``,
whose own adjoint, ``sdeint_adjoint(method="reversible_heun")``, is already exact and of
constant memory). An adaptive step keeps the result of two half steps, which a one-step
replay would not reproduce.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..sensitivity.checkpoint import attach_checkpoint
from ..stats import SolveStats
from .steps import SDESteps, sde_loop, sde_outputs

__all__ = ["solve_sde_checkpointed"]


def solve_sde_checkpointed(stepper: SDESteps, y0: Tensor, ts: Tensor, times: list[float],
                           dt: float, params: Sequence[Tensor], throw: bool
                           ) -> tuple[Tensor, tuple, SolveStats]:
    """:func:`~odeflow.sde.steps.solve_sde` on a fixed grid, differentiable by replay.

    Args:
        stepper, y0, ts, times, dt, throw: as ``solve_sde`` (``adaptive=False``).
        params: the tensors whose gradients the replay computes.

    Returns:
        ``(ys, final carried state, statistics)``; ``ys`` carries the gradient to ``y0``
        and ``params`` (none when the solve failed with ``throw=False``).
    """
    with torch.no_grad():
        # (rtol, atol: unused by a fixed grid; any valid values)
        problem, cfg, result = sde_loop(stepper, y0.detach(), ts, times, dt, False, 1e-5, 1e-4,
                                        0.0, record=True)
        ys = sde_outputs(problem, result, y0, times, False, throw)
    if not torch.isfinite(ys).all():  # host sync: once per solve; a failed solve (nan after)
        return ys, result.state, result.stats
    # The replay's own counters are of the loop's placeholder field, not of f and g: kept
    # apart from the solve's statistics.
    flat, _ = attach_checkpoint(problem, stepper, cfg, SolveStats(), y0.reshape(-1),
                                tuple(params), result.records, ys.reshape(len(times), -1),
                                result.y_last, None)
    return flat.view(ys.shape), result.state, result.stats
