"""A small stepping loop for SDE methods: fixed steps on a grid, or adaptive step doubling.

To be moved onto odeflow's one loop: the core's loop is being rewritten around a
stepper contract, and the SDE methods (``step(sde, t, dt, y, dW, state, levy)``) will
be plugged into it then, with its controllers, statistics and gradient modes. Until
then this module is the only place where SDE steps are looped over.

* Fixed steps walk the grid ``t0 + k dt`` and also stop exactly at every output time
  (no interpolation), so outputs are values of the numerical solution and the
  Brownian queries fall on the grid the default Brownian motion is built for.
* Adaptive steps compare one step of ``h`` with two steps of ``h/2`` (the scheme of
  torchsde; see also J. G. Gaines & T. J. Lyons, "Variable step size control in the
  numerical solution of stochastic differential equations", SIAM J. Appl. Math. 1997),
  accept when the scaled RMS difference is at most 1 (or ``h`` reached ``dt_min``), keep
  the two-half-step result, and pick the next ``h`` with odeflow's PI controller.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from ..controllers import PIDController
from ..stats import SolveError, SolveStats, Status
from .methods import Levy, SDEMethod

__all__ = ["SDEStats", "integrate"]

# torchsde's step-size rule: grow at most 1.4x, shrink at most 5x, safety 0.9.
_CONTROLLER = PIDController(beta1=0.7, beta2=-0.4, safety=0.9, ifactor=1.4, dfactor=0.2,
                            shrink_on_accept=False)


@dataclass
class SDEStats(SolveStats):
    """:class:`~odeflow.stats.SolveStats` of an SDE solve.

    ``nfe`` is ``nfe_drift + nfe_diffusion``; a fused call (``f_and_g``) counts one of
    each. ``n_steps`` counts step attempts (each adaptive attempt is three method steps).
    """

    nfe_drift: int = 0
    nfe_diffusion: int = 0


def _increments(bm, ta: float, tb: float, need: str) -> tuple[Tensor, Levy]:
    if need == "space-time":
        dW, U = bm(ta, tb, return_U=True)
        return dW, Levy(U=U)
    if need == "area":
        dW, A = bm(ta, tb, return_A=True)
        return dW, Levy(A=A)
    return bm(ta, tb), Levy()


def _finite(y: Tensor) -> bool:
    return bool(torch.isfinite(y).all())  # host sync: one per output time (non-finite check)


def integrate(method: SDEMethod, sde, bm, y0: Tensor, ts: list[float], dt: float, adaptive: bool,
              rtol: float, atol: float, dt_min: float, state: tuple, stats: SDEStats,
              throw: bool = True) -> tuple[Tensor, tuple]:
    """Solve from ``ts[0]`` through every output time.

    Returns:
        ``ys`` of shape ``(len(ts), *y0.shape)`` and the method's final carried state.
        With ``throw=False`` a failure fills the remaining rows with ``nan`` and sets
        ``stats.status``; with ``throw=True`` it raises :class:`~odeflow.stats.SolveError`.
    """
    need = method.levy
    ys = [y0]
    t, y = ts[0], y0
    n = 0                     # fixed steps: index of the grid point at or before t
    h = dt                    # adaptive: the next step size to try
    ctrl = _CONTROLLER.init()
    warned = False
    for out_t in ts[1:]:
        while t < out_t:
            if not adaptive:
                grid = ts[0] + (n + 1) * dt
                if grid >= out_t - 1e-6 * dt:
                    t_next, n = out_t, (n + 1 if grid <= out_t + 1e-6 * dt else n)
                else:
                    t_next, n = grid, n + 1
                dW, levy = _increments(bm, t, t_next, need)
                y, state = method.step(sde, t, t_next - t, y, dW, state, levy)
                stats.n_steps += 1
                stats.n_accepted += 1
                t = t_next
                continue
            t_next = min(t + h, out_t)
            step = t_next - t
            t_mid = t + 0.5 * step
            dW, levy = _increments(bm, t, t_next, need)
            y_full, _ = method.step(sde, t, step, y, dW, state, levy)
            dW1, levy1 = _increments(bm, t, t_mid, need)
            y_mid, state_mid = method.step(sde, t, t_mid - t, y, dW1, state, levy1)
            dW2, levy2 = _increments(bm, t_mid, t_next, need)
            y_two, state_two = method.step(sde, t_mid, t_next - t_mid, y_mid, dW2, state_mid, levy2)
            with torch.no_grad():
                scale = atol + rtol * torch.maximum(y_full.abs(), y_two.abs())
                err = ((y_full - y_two) / scale).pow(2).mean().sqrt()
                err = float(err)  # host sync: the accept/reject decision
            stats.n_steps += 1
            at_min = step <= dt_min * (1 + 1e-12)
            accepted = err <= 1.0 or at_min
            if at_min and err > 1.0 and not warned:
                warnings.warn("Hitting minimum allowed step size in adaptive time-stepping.",
                              stacklevel=3)
                warned = True
            if not math.isfinite(err) and at_min:
                accepted = True
            if accepted:
                stats.n_accepted += 1
                t, y, state = t_next, y_two, state_two
            else:
                stats.n_rejected += 1
            if math.isfinite(err):
                h_new, ctrl = _CONTROLLER.propose(step, err, accepted and err <= 1.0, 2, ctrl)
            else:
                h_new = step * _CONTROLLER.dfactor
            h = max(h_new, dt_min)
            if t_next == out_t and accepted and step < h:
                h = max(h, step)
        if not _finite(y):
            stats.status = Status.NONFINITE
            stats.message = f"{Status.NONFINITE.message} Stopped at t={t!r}."
            if throw:
                raise SolveError(Status.NONFINITE, t,
                                 "The SDE's drift or diffusion produced inf/nan.", stats)
            ys.append(y)
            ys.extend(torch.full_like(y0, float("nan")) for _ in range(len(ts) - len(ys)))
            return torch.stack(ys), state
        ys.append(y)
    return torch.stack(ys), state
