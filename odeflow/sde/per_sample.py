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

The Brownian motion: sample ``b`` is driven by row ``b`` of ``bm`` on its own clock,
started at the earliest start ``t0 = min_b ts[b, 0]``: its ``k``-th step takes row ``b`` of
the increment over ``[t0 + k dt, t0 + (k + 1) dt]`` (its last step: over ``[t0 + k dt,
t0 + k dt + h]``, ``h`` the length of that step), whatever its own start ``ts[b, 0]``. So
``bm`` must span ``[t0, t0 + the longest row's span]`` (the default one does), a row
that starts at ``t0`` sees ``bm`` at its own times, with every row of ``ts`` equal the
solve is the shared one bit for bit, and a later-starting row gets the same law (a
Brownian motion's increments are stationary). This choice keeps the noise cheap: at each
step every sample that is not on its last step asks ``bm`` for the same interval, on
``bm``'s ``dt`` grid, so a solve costs one query per step plus one per sample; reading
each row at its own absolute times would cost up to ``B`` queries per step, off the grid.

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

__all__ = ["lane_times", "lane_grid", "noise_span", "LaneSDESteps", "solve_sde_lanes"]

#: The step handed to the method for a lane that has finished (its result is discarded):
#: positive, so that methods dividing by ``dt`` or ``√dt`` (srk, derivative-free
#: Milstein) give finite values there, and the zero gradient of a discarded row stays 0.
_IDLE_DT = 1e-12


def lane_times(ts: Any, y0: Tensor) -> tuple[Tensor, Tensor]:
    """Check per-sample output times: shape ``(B, T)`` with ``B = y0.size(0)``, each row
    strictly increasing and finite. Returns them on ``y0``'s device, and as a float64 CPU
    copy for setting up the solve.

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
    values = ts.detach().to("cpu", torch.float64)  # host sync: once per solve
    finite = torch.isfinite(values).all(1)
    rising = (values[:, 1:] > values[:, :-1]).all(1)
    if not bool((finite & rising).all()):  # checked together; the message finds the row
        b = int(torch.argmin((finite & rising).to(torch.uint8)))
        row = values[b].tolist()
        if not bool(finite[b]):
            raise ValueError(f"ts[{b}] must be finite; got {row[:6]}")
        i = 1 + int(torch.argmin((values[b, 1:] > values[b, :-1]).to(torch.uint8)))
        raise ValueError(f"each row of per-sample `ts` must be strictly increasing; ts[{b}] "
                         f"has ts[{b}, {i - 1}] = {row[i - 1]!r} and ts[{b}, {i}] = "
                         f"{row[i]!r}")
    return ts.to(device=y0.device), values


def lane_grid(grid: Tensor, dt: float) -> tuple[Tensor, Tensor]:
    """Each row's fixed-step stop times ``t0 + k dt`` (the last one is the row's end),
    ``inf`` padded to the longest row, and each row's number of steps: the same float
    operations as the shared grid of :func:`~odeflow.sde.steps.solve_sde`, so equal rows
    step exactly as a shared solve."""
    span = grid[:, -1] - grid[:, 0]
    n = torch.clamp(torch.ceil(span / dt - 1e-9), min=1).long()
    i = torch.arange(1, int(n.max()) + 1, dtype=torch.float64, device=grid.device)
    points = grid[:, :1] + i * dt
    stops = torch.where(i < n[:, None], points,
                        torch.where(i == n[:, None], grid[:, -1:], math.inf))
    return stops, n


def noise_span(times: Tensor, dt: float) -> tuple[float, float]:
    """The interval a per-sample solve reads its Brownian motion on (``times``: the
    ``(B, T)`` output times in float64): from the earliest start to the end of the
    longest row's last step on the noise clock."""
    grid = times[:, [0, -1]]
    _, n = lane_grid(grid, dt)
    k = (n - 1).to(torch.float64)
    origin = float(grid[:, 0].min())
    last = grid[:, 0] + k * dt  # each row's last grid point, as the loop reaches it
    ends = (origin + k * dt) + (grid[:, 1] - last)
    return origin, max(float(ends.max()), origin)


class LaneSDESteps(SDESteps):
    """:class:`SDESteps` for ``B`` lanes: ``t`` and ``dt`` are ``(B,)`` tensors, ``dt = 0``
    for a lane that has finished (the loop keeps its state; so does the carried state
    here). Fixed steps of nominal size ``h`` on each row's grid ``start + k h`` (``n``
    steps per row); the noise clock starts at ``origin`` (see the module docstring)."""

    per_sample = True

    def __init__(self, method: Any, funcs: Any, bm: Any, state0: tuple, shape: torch.Size,
                 start: Tensor, n: Tensor, h: float):
        super().__init__(method, funcs, bm, state0, shape)
        self.start, self.h = start, h
        self.last_k = (n - 1).to(torch.float64)
        self.origin = float(start.min())

    def _increments(self, t: Tensor, dt: Tensor, like: Tensor) -> tuple[Tensor, Levy]:
        """Each lane's Brownian increment (and Lévy area) for its step ``k`` on the noise
        clock: one query per distinct interval, rows gathered from it; zeros for finished
        lanes."""
        need = self.method.levy
        kw = {"return_U": True} if need == "space-time" else \
            {"return_A": True} if need == "area" else {}
        k = torch.round((t - self.start) / self.h)  # t is start + k h: the round is exact
        a = self.origin + k * self.h
        # The shared stepper's float operations (query [t, t + (next stop - t)], the last
        # one [t, t + h]), so every lane on step k asks for the same interval, and equal
        # rows for the shared solve's.
        inner = a + ((self.origin + (k + 1) * self.h) - a)
        ends = torch.where(k >= self.last_k, a + dt, inner)
        active = dt > 0
        inner_mask = active & (k < self.last_k)
        last = (active & ~inner_mask).nonzero()[:, 0]
        j = torch.argmax(inner_mask.to(torch.uint8))  # any lane not on its last step
        head = torch.stack((inner_mask.any().to(a.dtype), a[j], inner[j]))
        # host sync: the Brownian motion is queried with Python floats, once per step
        values = torch.cat((head, a[last], ends[last])).tolist()
        parts: list[Tensor | None] = [None, None]

        def put(out: Any, rows: Tensor | None, index: Tensor | None) -> None:
            out = out if isinstance(out, tuple) else (out,)
            for i, value in enumerate(out[:2]):
                base = torch.zeros_like(value) if parts[i] is None else parts[i]
                parts[i] = (torch.where(rows.view(-1, *[1] * (value.dim() - 1)), value, base)
                            if rows is not None else
                            base.index_copy(0, index, value.index_select(0, index)))

        if values[0]:  # every lane not on its last step: one shared interval
            put(self.bm(values[1], values[2], **kw), inner_mask, None)
        n = last.numel()
        groups: dict[tuple[float, float], list[int]] = {}
        for lane, start_, end_ in zip(last.tolist(), values[3:3 + n], values[3 + n:]):
            groups.setdefault((start_, end_), []).append(lane)
        for (start_, end_), lanes in groups.items():
            put(self.bm(start_, end_, **kw), None, torch.tensor(lanes, device=like.device))
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


def solve_sde_lanes(method: Any, funcs: Any, bm: Any, state0: tuple, y0: Tensor, ts: Tensor,
                    dt: float, throw: bool) -> tuple[Tensor, tuple, SolveStats]:
    """Run ``method`` on the one loop, each lane from ``ts[b, 0]`` through its row.

    Returns ``(ys of shape (T, B, d), final carried state, statistics)``; a failure raises
    :class:`~odeflow.SolveError` (or, with ``throw=False``, leaves ``nan`` after it in the
    lanes that failed).
    """
    # The loop's own field is unused by SDE methods (they hold drift and diffusion).
    problem = make_problem(lambda t, y: torch.zeros_like(y), y0, ts, 1e-5, 1e-4,
                           {"per_sample": True})
    C = problem.clock
    if not C.per_sample:  # one sample: the scalar clock, whose times are floats
        raise ValueError("solve_sde_lanes needs a batch of at least two samples")
    stops, n = lane_grid(C.grid, dt)
    stepper = LaneSDESteps(method, funcs, bm, state0, y0.shape, C.grid[:, 0], n, dt)
    cfg = LoopConfig(False, None, 10**9, 0.0, math.inf, None, stops, None)
    result = integrate(problem, stepper, cfg)
    check_fixed_grid_finite(problem, result)
    err = failure(problem, result, fixed=True)
    if err is not None and throw:
        raise err
    return result.ys, result.state, result.stats
