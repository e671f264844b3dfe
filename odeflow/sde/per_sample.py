"""Per-sample output times for SDEs: ``sdeint(sde, y0, ts)`` with ``ts`` of shape (B, T).

An odeflow extension (torchsde takes one 1-D ``ts`` for the whole batch). Each row ``b``
of ``ts`` is sample ``b``'s own increasing output times; the sample steps on its own
fixed grid ``ts[b, 0] + k dt`` (the last step ends on ``ts[b, -1]``) and reports at its
own times, interpolating linearly between grid points as the shared solve does. The
samples run together on the one loop of :mod:`odeflow.integrate` with a per-sample clock
(:class:`~odeflow.lanes.LaneClock`): one lane per sample, a lane that has reached its end
stops while the others go on.

What the SDE sees: ``f(t, y)`` and ``g(t, y)`` get ``t`` as a ``(B, 1)`` tensor (each
row the time of that sample, in ``y``'s dtype), which broadcasts against ``y`` of shape
``(B, d)`` and works where a scalar time is expanded (``t.expand(B, 1)``).

The Brownian motion: sample ``b`` is driven by row ``b`` of ``bm`` at absolute times, so
a step of sample ``b`` over ``[t, t + h]`` takes ``bm(t, t + h)[b]``. That is exactly the
noise a solve of sample ``b`` alone would see if its Brownian motion were row ``b`` of
``bm``, and with every row of ``ts`` equal the solve is the shared one. Each step asks
``bm`` once per distinct interval among the samples: rows that share their start time
share their grid and cost one query; rows that all start at different times cost ``B``
queries per step.

Fixed steps only: ``adaptive=True`` with per-sample times raises (the step-doubling
controller would need a per-sample accept/reject of the method's carried state), as does
``sdeint_adjoint`` (its backward retraces one shared grid).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..integrate import LoopConfig, integrate
from ..problem import make_problem
from ..run import check_fixed_grid_finite, failure
from ..solvers.base import StepResult
from ..stats import SolveStats
from .methods import Levy
from .steps import SDESteps

__all__ = ["lane_times", "lane_grid", "LaneSDESteps", "solve_sde_lanes"]

#: The step handed to the method for a lane that has finished (its result is discarded):
#: positive, so that methods dividing by ``dt`` or ``√dt`` (srk, derivative-free
#: Milstein) give finite values there, and the zero gradient of a discarded row stays 0.
_IDLE_DT = 1e-12


def lane_times(ts: Any, y0: Tensor) -> tuple[Tensor, list[list[float]]]:
    """Check per-sample output times: shape ``(B, T)`` with ``B = y0.size(0)``, each row
    strictly increasing and finite. Returns them as a tensor of ``y0``'s dtype and as rows
    of Python floats.

    Raises:
        ValueError: naming ``ts`` and what is wrong (shape, a row that does not increase).
    """
    if not torch.is_tensor(ts):
        ts = torch.tensor(ts, dtype=y0.dtype, device=y0.device)
    if ts.dim() != 2 or ts.shape[0] != y0.size(0) or ts.shape[1] < 1:
        raise ValueError(f"per-sample `ts` must have shape (batch, T) = ({y0.size(0)}, T) with "
                         f"one row of output times per sample of y0; got {tuple(ts.shape)}")
    if ts.requires_grad:
        raise ValueError("ts must not require grad (gradients with respect to times are not "
                         "supported by sdeint)")
    rows = ts.detach().to("cpu", torch.float64).tolist()  # host sync: once per solve
    for b, row in enumerate(rows):
        if not all(math.isfinite(v) for v in row):
            raise ValueError(f"ts[{b}] must be finite; got {row[:6]}")
        bad = next((i for i in range(1, len(row)) if row[i] <= row[i - 1]), None)
        if bad is not None:
            raise ValueError(f"each row of per-sample `ts` must be strictly increasing; ts[{b}] "
                             f"has ts[{b}, {bad - 1}] = {row[bad - 1]!r} and ts[{b}, {bad}] = "
                             f"{row[bad]!r}")
    return ts.to(device=y0.device), rows


def lane_grid(grid: Tensor, dt: float) -> Tensor:
    """Each row's fixed-step stop times ``t0 + k dt`` (the last one is the row's end),
    ``inf`` padded to the longest row: the same float operations as the shared grid of
    :func:`~odeflow.sde.steps.solve_sde`, so equal rows step exactly as a shared solve."""
    span = grid[:, -1] - grid[:, 0]
    n = torch.clamp(torch.ceil(span / dt - 1e-9), min=1).long()
    i = torch.arange(1, int(n.max()) + 1, dtype=torch.float64, device=grid.device)
    points = grid[:, :1] + i * dt
    return torch.where(i < n[:, None], points,
                       torch.where(i == n[:, None], grid[:, -1:], math.inf))


class LaneSDESteps(SDESteps):
    """:class:`SDESteps` for ``B`` lanes: ``t`` and ``dt`` are ``(B,)`` tensors, ``dt = 0``
    for a lane that has finished (the loop keeps its state; so does the carried state
    here). Fixed steps only."""

    per_sample = True

    def _increments(self, t: Tensor, dt: Tensor, like: Tensor) -> tuple[Tensor, Levy]:
        """Each lane's Brownian increment (and Lévy area) over its own ``[t, t + dt]``: one
        query per distinct interval, rows gathered from it; zeros for finished lanes."""
        need = self.method.levy
        kw = {"return_U": True} if need == "space-time" else \
            {"return_A": True} if need == "area" else {}
        ends = t + dt  # the shared stepper's float operation, so equal rows query equally
        # host sync: the Brownian motion is queried with Python floats, once per step
        pairs = torch.stack((t, ends, dt)).tolist()
        groups: dict[tuple[float, float], list[int]] = {}
        for lane, (a, b, h) in enumerate(zip(*pairs)):
            if h > 0:
                groups.setdefault((a, b), []).append(lane)
        parts: list[Tensor | None] = [None, None]
        for (a, b), lanes in groups.items():
            out = self.bm(a, b, **kw)
            out = out if isinstance(out, tuple) else (out,)
            if len(groups) == 1 and len(lanes) == t.shape[0]:
                parts = [out[0], out[1] if len(out) > 1 else None]
                break
            index = torch.tensor(lanes, device=like.device)
            for k, value in enumerate(out[:2]):
                if parts[k] is None:
                    parts[k] = torch.zeros_like(value)
                parts[k] = parts[k].index_copy(0, index, value.index_select(0, index))
        dW = parts[0] if parts[0] is not None else like.new_zeros(self.bm.shape)
        extra = parts[1]
        if need == "space-time":
            return dW, Levy(U=extra if extra is not None else torch.zeros_like(dW))
        if need == "area":
            return dW, Levy(A=extra if extra is not None else
                            like.new_zeros((*self.bm.shape, self.bm.shape[-1])))
        return dW, Levy()

    def step(self, f: Any, t: Tensor, y: Tensor, f0: Tensor, dt: Tensor, state: tuple,
             ws: Any, *, with_error: bool = True, f_last: Any = None, fsal_stage: bool = True
             ) -> StepResult:
        """One step of each lane's ``dt`` (``f0``/``f_last``: unused; no error estimate)."""
        if with_error:
            raise NotImplementedError("per-sample SDE solves take fixed steps only")
        dW, levy = self._increments(t, dt, y)
        active = dt > 0
        col = active[:, None]
        t_col = t.to(y.dtype)[:, None]
        dt_col = torch.where(active, dt, _IDLE_DT).to(y.dtype)[:, None]
        y_new, new_state = self.method.step(self.funcs, t_col, dt_col, y, dW, state, levy)
        # A finished lane keeps its carried state (e.g. reversible Heun's (f, g, z)).
        new_state = tuple(torch.where(col.view(-1, *[1] * (n.dim() - 1)), n, s)
                          for n, s in zip(new_state, state))
        return StepResult(y_new, None, (f0,), new_state)


def solve_sde_lanes(stepper: LaneSDESteps, y0: Tensor, ts: Tensor, dt: float, throw: bool
                    ) -> tuple[Tensor, tuple, SolveStats]:
    """Run ``stepper`` on the one loop, each lane from ``ts[b, 0]`` through its row.

    Returns ``(ys of shape (T, B, d), final carried state, statistics)``; a failure raises
    :class:`~odeflow.SolveError` (or, with ``throw=False``, leaves ``nan`` after it in the
    lanes that failed).
    """
    # The loop's own field is unused by SDE methods (they hold drift and diffusion).
    problem = make_problem(lambda t, y: torch.zeros_like(y), y0, ts, 1e-5, 1e-4,
                           stepper.method.name, {"per_sample": True})
    C = problem.clock
    if not C.per_sample:  # one sample: the scalar clock, whose times are floats
        raise ValueError("solve_sde_lanes needs a batch of at least two samples")
    stops = lane_grid(C.grid, dt)
    cfg = LoopConfig(False, None, 10**9, 0.0, math.inf, None, stops, None)
    result = integrate(problem, stepper, cfg)
    check_fixed_grid_finite(problem, result)
    err = failure(problem, result, fixed=True)
    if err is not None and throw:
        raise err
    return result.ys, result.state, result.stats
