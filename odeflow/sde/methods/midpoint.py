"""The stochastic midpoint method for Stratonovich SDEs.

``ym = y + (f(t, y) dt + g(t, y) dW) / 2``, ``y1 = y + f(t + dt/2, ym) dt + g(t + dt/2, ym) dW``.
Strong order 1.0 for commutative (diagonal, scalar, additive) noise, 0.5 in general.
Reference: Kloeden & Platen 1992, §11.1 (two-stage Stratonovich Runge–Kutta schemes);
W. Rümelin, "Numerical treatment of stochastic differential equations", SIAM J. Numer.
Anal. 19(3), 1982.
"""

from __future__ import annotations

from ..settings import METHODS, NOISE_TYPES, SDE_TYPES
from .base import SDEMethod, two_stage

__all__ = ["Midpoint"]


class Midpoint(SDEMethod):
    """Stochastic midpoint (Stratonovich, every noise type)."""

    name = METHODS.midpoint
    sde_types = (SDE_TYPES.stratonovich,)
    strong_orders = {"general": 0.5, NOISE_TYPES.diagonal: 1.0, NOISE_TYPES.scalar: 1.0,
                     NOISE_TYPES.additive: 1.0}
    evals_per_step = (2, 2)

    def step(self, sde, t, dt, y, dW, state, levy):
        return two_stage(sde, t, dt, y, dW, 0.5, 0.0, 1.0), state
