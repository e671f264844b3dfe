"""Robertson's chemical kinetics: the true system and its accurately solved data.

Robertson (1966) proposed three reactions among species A, B, C:

    A → B        (k1 = 0.04)
    B + B → C + B (k2 = 3e7)
    B + C → A + C (k3 = 1e4)

which, by mass action, give

    y1' = -k1 y1 + k3 y2 y3
    y2' =  k1 y1 - k2 y2² - k3 y2 y3
    y3' =  k2 y2²

with ``y(0) = (1, 0, 0)``. The rate constants span nine orders of magnitude, so the
system is stiff: after a transient of about 1e-4 the fast reactions keep ``y2`` at a
quasi-steady state of at most about 3.6e-5, while ``y1`` and ``y3`` change over times up
to 1e5 and beyond. Hairer & Wanner (*Solving ODEs II*, §IV.1) use it as the standard
example of stiffness; Kim et al. (Chaos 31, 093122, 2021) learn it with neural ODEs.

The data are solved here by SciPy's Radau IIA (an implicit method of order 5) with the
exact Jacobian at tight tolerances, independently of odeflow's own solvers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["RATES", "Y0", "robertson_rhs", "robertson_jacobian", "robertson_solution",
           "log_times"]

# The rate constants k1, k2, k3 (Robertson 1966; Hairer & Wanner's values).
RATES = (0.04, 3.0e7, 1.0e4)
# Initial concentrations of A, B, C.
Y0 = (1.0, 0.0, 0.0)


def robertson_rhs(t: float, y: np.ndarray, k: Sequence[float] = RATES) -> np.ndarray:
    """The mass-action field (NumPy, for SciPy)."""
    k1, k2, k3 = k
    r1, r2, r3 = k1 * y[0], k2 * y[1] ** 2, k3 * y[1] * y[2]
    return np.array([-r1 + r3, r1 - r2 - r3, r2])


def robertson_jacobian(t: float, y: np.ndarray, k: Sequence[float] = RATES) -> np.ndarray:
    """``∂f/∂y`` of :func:`robertson_rhs`."""
    k1, k2, k3 = k
    return np.array([
        [-k1, k3 * y[2], k3 * y[1]],
        [k1, -2 * k2 * y[1] - k3 * y[2], -k3 * y[1]],
        [0.0, 2 * k2 * y[1], 0.0],
    ])  # fmt: skip


def log_times(t_start: float, t_end: float, n: int) -> torch.Tensor:
    """``n`` times spaced evenly in ``log10 t`` from ``t_start`` to ``t_end`` (float64)."""
    return torch.logspace(np.log10(t_start), np.log10(t_end), n, dtype=torch.float64)


def robertson_solution(
    times: torch.Tensor, rates: Sequence[float] = RATES, rtol: float = 1e-10,
    atol: float = 1e-16,
) -> torch.Tensor:
    """``y(times)`` from ``y(0) = (1, 0, 0)``, shape ``(len(times), 3)``, float64.

    ``times`` must be positive and increasing. ``atol`` is far below the smallest species
    (``y2`` ≈ 1e-5 … 1e-10) so that every species has ``rtol``'s relative accuracy.

    Raises:
        RuntimeError: SciPy did not finish (it should not at these tolerances).
    """
    from scipy.integrate import solve_ivp

    t = times.detach().cpu().double().numpy()
    rates = tuple(float(k) for k in rates)
    sol = solve_ivp(robertson_rhs, (0.0, float(t[-1])), list(Y0), method="Radau",
                    t_eval=t, rtol=rtol, atol=atol, jac=robertson_jacobian, args=(rates,))
    if not sol.success:
        raise RuntimeError(f"SciPy's Radau failed on Robertson's system: {sol.message}")
    return torch.from_numpy(sol.y.T.copy())
