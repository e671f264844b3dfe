"""``method="scipy_solver"``: any ``scipy.integrate.solve_ivp`` method on a torch ``func``.

SciPy is imported lazily, so the core still depends on torch alone. SciPy integrates in
float64 (or complex128) NumPy arrays on the CPU; the result comes back in the state's own
dtype and device. The forward solve has no autograd graph: gradients come from the
adjoint (``odeint_adjoint(..., method="scipy_solver")``), which calls SciPy again on the
augmented system.
"""

from __future__ import annotations

from typing import Any

import torch

from ..problem import Problem
from ..stats import SolveError, SolveStats, Status

__all__ = ["SCIPY_OPTIONS", "SCIPY_METHODS", "integrate_scipy"]

SCIPY_OPTIONS = ("solver", "first_step", "max_step", "min_step")
SCIPY_METHODS = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")


def integrate_scipy(problem: Problem) -> tuple[list[torch.Tensor], SolveStats]:
    """Solve ``problem`` with SciPy; returns flat outputs at ``problem.t_out`` and stats."""
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
    f = problem.func
    y0 = problem.y0
    dtype, device = y0.dtype, y0.device
    t_out = list(problem.t_out)
    stats = SolveStats()
    if len(t_out) == 1:
        return [y0], stats

    first = [True]

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        y_t = torch.from_numpy(y).to(dtype=dtype, device=device)
        with torch.no_grad():
            if first[0]:
                first[0] = False
                out = f.checked(float(t), y_t)
            else:
                out = f(float(t), y_t)
        return out.detach().to("cpu", torch.float64).numpy()

    rtol = _to_numpy(problem.rtol)
    atol = _to_numpy(problem.atol)
    result = solve_ivp(
        rhs, (t_out[0], t_out[-1]), y0.detach().to("cpu", torch.float64).numpy(),
        method=solver, t_eval=t_out, rtol=rtol, atol=atol, **kwargs,
    )
    stats.n_steps = stats.n_accepted = max(len(result.t) - 1, 0)
    if result.status != 0:
        stats.status = Status.STEP_SIZE_UNDERFLOW
        stats.message = f"scipy {solver}: {result.message}"
        t_fail = problem.user_time(float(result.t[-1])) if len(result.t) else problem.t_out[0]
        err = SolveError(Status.STEP_SIZE_UNDERFLOW, t_fail, f"SciPy said: {result.message}",
                         stats)
        reached = torch.from_numpy(np.ascontiguousarray(result.y.T)).to(dtype=dtype,
                                                                          device=device)
        err.partial_ys = list(reached.unbind(0)) if len(reached) else [y0]
        raise err
    ys = torch.from_numpy(np.ascontiguousarray(result.y.T)).to(dtype=dtype, device=device)
    return list(ys.unbind(0)), stats


def _to_numpy(tol: Any) -> Any:
    if isinstance(tol, torch.Tensor):
        return tol.detach().to("cpu", torch.float64).numpy()
    return tol
