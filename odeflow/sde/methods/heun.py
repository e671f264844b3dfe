"""Heun's method for Stratonovich SDEs.

``ỹ = y + f dt + g dW``, ``y1 = y + (f + f(t1, ỹ)) dt / 2 + (g + g(t1, ỹ)) dW / 2``.
Strong order 1.0 for commutative noise, 0.5 in general. Reference: Rümelin 1982;
Kloeden & Platen 1992, §11.1.
"""

from __future__ import annotations

from ..settings import METHODS, NOISE_TYPES, SDE_TYPES
from .base import SDEMethod, two_stage

__all__ = ["Heun"]


class Heun(SDEMethod):
    """Stochastic Heun (Stratonovich, every noise type)."""

    name = METHODS.heun
    sde_types = (SDE_TYPES.stratonovich,)
    strong_orders = {"general": 0.5, NOISE_TYPES.diagonal: 1.0, NOISE_TYPES.scalar: 1.0,
                     NOISE_TYPES.additive: 1.0}
    evals_per_step = (2, 2)

    def step(self, sde, t, dt, y, dW, state, levy):
        return two_stage(sde, t, dt, y, dW, 1.0, 0.5, 0.5), state
