"""The Euler–Heun method for Stratonovich SDEs.

``ỹ = y + g dW``, ``y1 = y + f dt + (g(t, y) + g(t + dt, ỹ)) dW / 2``: Euler in the drift,
Heun (trapezoidal) in the diffusion, which makes the limit Stratonovich. Strong order
0.5 (1.0 for additive noise). Reference: Kloeden & Platen 1992; P. Kidger et al.,
"Efficient and accurate gradients for neural SDEs", NeurIPS 2021, §2.
"""

from __future__ import annotations

from ..settings import METHODS, NOISE_TYPES, SDE_TYPES
from .base import SDEMethod

__all__ = ["EulerHeun"]


class EulerHeun(SDEMethod):
    """Euler–Heun (Stratonovich, every noise type)."""

    name = METHODS.euler_heun
    sde_types = (SDE_TYPES.stratonovich,)
    strong_orders = {"general": 0.5, NOISE_TYPES.additive: 1.0}
    evals_per_step = (1, 2)

    def step(self, sde, t, dt, y, dW, state, levy):
        f, g_dW = sde.f_and_g_prod(t, y, dW)
        g1_dW = sde.g_prod(t + dt, y + g_dW, dW)
        return y + f * dt + 0.5 * (g_dW + g1_dW), state
