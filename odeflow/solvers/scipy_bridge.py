"""``method="scipy_solver"``: any ``scipy.integrate.solve_ivp`` method on a torch ``func``.

SciPy is imported lazily, so the core still depends on torch alone. SciPy integrates in
float64 (or complex128) NumPy arrays on the CPU; the result comes back in the state's own
dtype and device. The forward solve has no autograd graph: gradients come from the
adjoint (``odeint_adjoint(..., method="scipy_solver")``), which calls SciPy again on the
augmented system.

Per sample (``options["per_sample"]``) each sample is its own SciPy solve on its own output
times, with its own steps, status and statistics. SciPy integrates one system at a time and
``func`` takes the whole batch, so each evaluation passes the other samples at their
initial time and state (their rows are discarded): a batch of ``B`` samples costs ``B``
batched evaluations per evaluation of one sample's solve. It is a reference, not a fast
path.

SciPy has no step limit and keeps retrying a step whose derivative is not finite (LSODA then
never returns), so the bridge stops it: after ``options["max_num_steps"]`` accepted steps
(``MAX_STEPS_REACHED``) and at a non-finite derivative (``NONFINITE``); the outputs reached
before are those of a second solve up to the last accepted step (same steps).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..options import DEFAULT_MAX_NUM_STEPS
from ..problem import Problem
from ..stats import SolveStats, Status

__all__ = ["SCIPY_OPTIONS", "SCIPY_METHODS", "integrate_scipy"]

SCIPY_OPTIONS = ("solver", "first_step", "max_step", "min_step", "max_num_steps", "per_sample")
SCIPY_METHODS = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")


def integrate_scipy(problem: Problem) -> dict[str, Any]:
    """Solve ``problem`` with SciPy; returns the fields of the loop's result (outputs at
    ``problem``'s output times, statistics, and per sample each sample's status and counts).
    """
    try:
        import numpy as np
        from scipy.integrate import solve_ivp
    except ImportError as exc:  # pragma: no cover - exercised only without scipy
        raise ImportError(
            "method='scipy_solver' needs SciPy: pip install 'odeflow[scipy]'"
        ) from exc
    opts = problem.options
    solver = opts.get("solver", "LSODA")
    if solver not in SCIPY_METHODS:
        raise ValueError(f"options['solver'] must be one of {SCIPY_METHODS}, got {solver!r}")
    kwargs: dict[str, Any] = {k: float(opts[k]) for k in ("first_step", "max_step", "min_step")
                              if k in opts}
    kwargs.update(method=solver, rtol=_to_numpy(problem.rtol), atol=_to_numpy(problem.atol))
    max_steps = opts.get("max_num_steps", DEFAULT_MAX_NUM_STEPS)
    f, y0, C = problem.func, problem.y0, problem.clock
    first = [True]

    def call(t: Any, y: torch.Tensor) -> torch.Tensor:  # (the first evaluation is checked)
        with torch.no_grad():
            out = f.checked(t, y) if first[0] else f(t, y)
        first[0] = False
        return out

    def solve(rhs: Any, times: list, y_0: torch.Tensor) -> tuple:
        """One SciPy solve from the first to the last of ``times`` with the outputs at
        ``times``, stopped by :class:`_Halt`: ``(outputs reached (n, ...), t_last, y_last,
        status, accepted steps, SciPy's message)``."""
        stop = _Stop(max_steps, times[0], _to_numpy(y_0))
        try:
            result = solve_ivp(rhs, (times[0], times[-1]), stop.y, t_eval=times, events=stop,
                               **kwargs)
        except _Halt as halt:
            stop.status = int(halt.args[0])
            # The outputs reached: the same steps again, up to the last accepted one.
            reached = [t for t in times if t <= stop.t]
            result = solve_ivp(rhs, (times[0], stop.t), _to_numpy(y_0), t_eval=reached,
                               **kwargs)
            result.status = -1
        ys = (torch.from_numpy(np.ascontiguousarray(result.y.T)).to(y_0) if len(result.t)
              else y_0.new_empty((0, *y_0.shape)))  # (no output reached: SciPy gives [])
        if result.status == 0:
            return ys, times[-1], ys[-1], int(Status.SUCCESS), stop.steps, ""
        return (ys, stop.t, torch.from_numpy(stop.y).to(y_0), stop.status, stop.steps,
                result.message)

    stats = SolveStats()
    if not C.per_sample:
        if C.n_out == 1:
            return dict(stats=stats, ys=[y0], t_last=C.t_end, y_last=y0,
                        status=int(Status.SUCCESS))
        out, t_last, y_last, status, stats.n_steps, message = solve(
            lambda t, y: _finite(call(float(t), torch.from_numpy(y).to(y0))), list(C.grid), y0)
        stats.n_accepted = stats.n_steps  # (SciPy's accepted steps)
        if status == int(Status.STEP_SIZE_UNDERFLOW):  # SciPy's own failure, its account
            stats.message = f"SciPy said: {message}"  # (run.failure gives it as the detail)
        return dict(stats=stats, ys=list(out.unbind(0)) or [y0], t_last=t_last,
                    y_last=y_last, status=status)
    # Per sample (module docstring): a sample SciPy fails keeps the outputs it reached (nan
    # after) and does not stop the others.
    ys = y0.new_full((C.n_out, *y0.shape), math.nan)
    ys[0] = y0
    status, n_acc, t_last, y_last = C.full(int(Status.SUCCESS)), C.full(0), C.t0, y0.clone()
    for b, times in enumerate(C.grid.tolist()):  # host sync: once per solve
        def rhs(t: float, y: Any, b: int = b) -> Any:
            tt, yy = C.t0, y0.clone()
            tt[b], yy[b] = t, torch.from_numpy(y).to(y0)
            return _finite(call(tt, yy)[b])

        out, t_last[b], y_last[b], status[b], n_acc[b], _ = solve(rhs, times, y0[b])
        ys[:len(out), b] = out
    stats.n_steps = stats.n_accepted = int(n_acc.sum())
    return dict(ys=ys, stats=stats, t_last=t_last, y_last=y_last, status=status,
                lane_counts=(n_acc, n_acc, torch.zeros_like(n_acc)))


class _Halt(Exception):
    """Raised out of SciPy's loop (module docstring) with the :class:`Status` that says why."""


class _Stop:
    """Where SciPy stopped: an event function that never crosses zero, which ``solve_ivp``
    calls at ``t0`` and after each accepted step. With ``t_eval`` its result holds only the
    output times reached, and a failure's message does not say where the failing step
    began. It halts the solve after ``max_steps`` accepted steps. Until its first call it
    holds the start ``(t0, y0)``: SciPy may evaluate ``func`` before (its first step size's
    probe), and be halted there."""

    def __init__(self, max_steps: int, t0: float, y0: Any):
        self.t, self.y = t0, y0  # (y: a NumPy array)
        self.steps, self.max_steps = -1, max_steps  # (the first call is at t0)
        self.status = int(Status.STEP_SIZE_UNDERFLOW)  # SciPy's own failures

    def __call__(self, t: float, y: Any) -> float:
        self.t, self.y = float(t), y.copy()
        self.steps += 1
        if self.steps > self.max_steps:
            raise _Halt(Status.MAX_STEPS_REACHED)
        return 1.0


def _finite(out: torch.Tensor) -> Any:
    """``out`` as NumPy, or :class:`_Halt` if it is not finite (SciPy would retry forever)."""
    if not bool(torch.isfinite(out).all()):
        raise _Halt(Status.NONFINITE)
    return _to_numpy(out)


def _to_numpy(x: Any) -> Any:
    return x.detach().to("cpu", torch.float64).numpy() if isinstance(x, torch.Tensor) else x
