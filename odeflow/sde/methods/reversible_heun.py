"""The reversible Heun method for Stratonovich SDEs (Kidger et al. 2021).

It carries an auxiliary state ``z`` and the drift and diffusion at ``z``:
``z1 = 2y - z + f(z) dt + g(z) dW``, ``y1 = y + (f(z) + f(z1)) dt/2 + (g(z) + g(z1)) dW/2``,
one evaluation of ``f`` and ``g`` per step. The step is algebraically reversible:
:meth:`ReversibleHeun.backward_step` recovers ``(y, z, f(z), g(z))`` from
``(y1, z1, f(z1), g(z1))`` exactly up to rounding, which the adjoint
(:mod:`odeflow.sde.adjoint`) uses to rebuild the forward trajectory without storing it.
Strong order 0.5 in general, 1.0 for additive noise.

Reference: P. Kidger, J. Foster, X. Li, T. Lyons, "Efficient and accurate gradients for
neural SDEs", NeurIPS 2021, Algorithm 1 and §3.
"""

from __future__ import annotations

import torch

from ..settings import METHODS, NOISE_TYPES, SDE_TYPES
from .base import SDEMethod, axpy

__all__ = ["ReversibleHeun"]


class ReversibleHeun(SDEMethod):
    """Reversible Heun (Stratonovich, every noise type); state ``(f(z), g(z), z)``."""

    name = METHODS.reversible_heun
    sde_types = (SDE_TYPES.stratonovich,)
    strong_orders = {"general": 0.5, NOISE_TYPES.additive: 1.0}

    def init_state(self, sde, t0, y0):
        f, g = sde.f_and_g(t0, y0)
        return (f, g, y0)

    def step(self, sde, t, dt, y, dW, state, levy):
        f0, g0, z0 = state
        z1 = _plus_prod(sde, axpy(torch.add(y - z0, y), f0, dt), g0, dW, 1.0)
        f1, g1 = sde.f_and_g(t + dt, z1)
        y1 = _plus_prod(sde, axpy(y, f0 + f1, 0.5 * dt), g0 + g1, dW, 0.5)
        return y1, (f1, g1, z1)

    def backward_step(self, sde, t1, dt, y1, dW, state1, levy=None):
        """Undo :meth:`step` from ``t1`` back to ``t1 - dt`` (same ``dW``).

        Returns:
            ``(y0, (f0, g0, z0))``, the inputs of the forward step that produced
            ``(y1, state1)``.
        """
        f1, g1, z1 = state1
        z0 = _plus_prod(sde, axpy(torch.add(y1 - z1, y1), f1, -dt), g1, dW, -1.0)
        f0, g0 = sde.f_and_g(t1 - dt, z0)
        y0 = _plus_prod(sde, axpy(y1, f0 + f1, -0.5 * dt), g0 + g1, dW, -0.5)
        return y0, (f0, g0, z0)


def _plus_prod(sde, x, g, dW, c: float):
    """``x + c g dW`` (diagonal noise: one fused ``addcmul`` instead of three kernels)."""
    if sde.noise_type == NOISE_TYPES.diagonal:
        return torch.addcmul(x, g, dW, value=c)
    return x + sde.prod(g, c * dW)
