"""Euler–Maruyama for Itô SDEs.

``y1 = y + f(t, y) dt + g(t, y) dW``: strong order 0.5 (1.0 for additive noise), weak
order 1.0. Reference: P. E. Kloeden & E. Platen, *Numerical Solution of Stochastic
Differential Equations*, Springer 1992, §10.2.
"""

from __future__ import annotations

from ..settings import METHODS, NOISE_TYPES, SDE_TYPES
from .base import SDEMethod, axpy

__all__ = ["Euler"]


class Euler(SDEMethod):
    """Euler–Maruyama (Itô, every noise type)."""

    name = METHODS.euler
    sde_types = (SDE_TYPES.ito,)
    strong_orders = {"general": 0.5, NOISE_TYPES.additive: 1.0}

    def step(self, sde, t, dt, y, dW, state, levy):
        f, g_dW = sde.f_and_g_prod(t, y, dW)
        return axpy(y, f, dt) + g_dW, state   # one fused kernel for y + f dt
