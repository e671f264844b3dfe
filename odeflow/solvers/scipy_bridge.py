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
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..problem import Problem
from ..stats import SolveStats, Status

__all__ = ["SCIPY_OPTIONS", "SCIPY_METHODS", "integrate_scipy"]

SCIPY_OPTIONS = ("solver", "first_step", "max_step", "min_step", "per_sample")
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
    f, y0, C = problem.func, problem.y0, problem.clock
    if C.per_sample:
        return _per_sample(problem, solve_ivp, kwargs)
    stats = SolveStats()
    t_out = list(problem.t_out)
    done = dict(stats=stats, t_last=C.t_end, status=int(Status.SUCCESS))
    if len(t_out) == 1:
        return dict(done, ys=[y0], y_last=y0)

    first = [True]

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        y_t = torch.from_numpy(y).to(y0)
        with torch.no_grad():
            out = f.checked(float(t), y_t) if first[0] else f(float(t), y_t)
        first[0] = False
        return _to_numpy(out)

    stop = _Stop()
    result = solve_ivp(rhs, (t_out[0], t_out[-1]), _to_numpy(y0), t_eval=t_out, events=stop,
                       **kwargs)
    stats.n_steps = stats.n_accepted = max(len(result.t) - 1, 0)
    ys = list(torch.from_numpy(np.ascontiguousarray(result.y.T)).to(y0).unbind(0)) or [y0]
    if result.status == 0:
        return dict(done, ys=ys, y_last=ys[-1])
    stats.message = f"SciPy said: {result.message}"  # (run.failure gives it as the detail)
    return dict(stats=stats, ys=ys, t_last=stop.t, y_last=torch.from_numpy(stop.y).to(y0),
                status=int(Status.STEP_SIZE_UNDERFLOW))


def _per_sample(problem: Problem, solve_ivp: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """One SciPy solve per sample on its own canonical output times (module docstring); a
    sample SciPy fails keeps the outputs it reached (``nan`` after) and does not stop the
    others."""
    f, y0, C = problem.func, problem.y0, problem.clock
    grid = C.grid.tolist()  # host sync: once per solve
    ys = y0.new_full((C.n_out, *y0.shape), math.nan)
    ys[0] = y0
    status, n_acc, t_last, y_last = C.full(int(Status.SUCCESS)), C.full(0), C.t0, y0.clone()
    first = [True]
    for b, times in enumerate(grid):
        def rhs(t: float, y: Any, b: int = b) -> Any:
            tt, yy = C.t0, y0.clone()
            tt[b], yy[b] = t, torch.from_numpy(y).to(y0)
            with torch.no_grad():
                out = f.checked(tt, yy) if first[0] else f(tt, yy)
            first[0] = False
            return _to_numpy(out[b])

        stop = _Stop()
        result = solve_ivp(rhs, (times[0], times[-1]), _to_numpy(y0[b]), t_eval=times,
                           events=stop, **kwargs)
        n = len(result.t)
        if n:
            ys[:n, b] = torch.from_numpy(result.y.T.copy()).to(y0)
            t_last[b], y_last[b], n_acc[b] = result.t[-1], ys[n - 1, b], n - 1
        if result.status != 0:
            status[b] = int(Status.STEP_SIZE_UNDERFLOW)
            t_last[b], y_last[b] = stop.t, torch.from_numpy(stop.y).to(y0)
    stats = SolveStats()
    stats.n_steps = stats.n_accepted = int(n_acc.sum())
    return dict(ys=ys, stats=stats, t_last=t_last, y_last=y_last, status=status,
                lanes=(status, n_acc, n_acc, torch.zeros_like(n_acc)))


class _Stop:
    """Where SciPy stopped: an event function that never crosses zero, which ``solve_ivp``
    calls at ``t0`` and after each accepted step. With ``t_eval`` its result holds only the
    output times reached, and a failure's message does not say where the failing step
    began."""

    t: float
    y: Any  # a NumPy array

    def __call__(self, t: float, y: Any) -> float:
        self.t, self.y = float(t), y.copy()
        return 1.0


def _to_numpy(x: Any) -> Any:
    return x.detach().to("cpu", torch.float64).numpy() if isinstance(x, torch.Tensor) else x
