"""Heun's method for Stratonovich SDEs.

``ỹ = y + f dt + g dW``, ``y1 = y + (f + f(t1, ỹ)) dt / 2 + (g + g(t1, ỹ)) dW / 2``.
Strong order 1.0 for commutative noise, 0.5 in general. Reference: Rümelin 1982;
Kloeden & Platen 1992, §11.1.
"""

from __future__ import annotations

from ..settings import METHODS, NOISE_TYPES, SDE_TYPES
from .base import SDEMethod

__all__ = ["Heun"]


class Heun(SDEMethod):
    """Stochastic Heun (Stratonovich, every noise type)."""

    name = METHODS.heun
    sde_types = (SDE_TYPES.stratonovich,)
    strong_orders = {"general": 0.5, NOISE_TYPES.diagonal: 1.0, NOISE_TYPES.scalar: 1.0,
                     NOISE_TYPES.additive: 1.0}
    evals_per_step = (2, 2)

    def step(self, sde, t, dt, y, dW, state, levy):
        f, g_dW = sde.f_and_g_prod(t, y, dW)
        y_pred = y + f * dt + g_dW
        f1, g1_dW = sde.f_and_g_prod(t + dt, y_pred, dW)
        return y + 0.5 * ((f + f1) * dt + g_dW + g1_dW), state
