"""The Milstein method, Itô and Stratonovich, with a derivative-free variant.

With ``L g = Σ_j g_j ∂g/∂y_j`` (for diagonal noise ``g_i ∂g_i/∂y_i``, for scalar noise
the Jacobian of ``g`` applied to ``g``):

* Itô: ``y1 = y + f dt + g dW + ½ L g (dW² - dt)``
* Stratonovich: ``y1 = y + f dt + g dW + ½ L g dW²``

``L g`` is one Jacobian-vector product through ``g``. With ``options={"grad_free": True}``
it is replaced by the finite difference ``(g(ŷ) - g(y)) / √dt`` with
``ŷ = y + f dt + g √dt`` (Itô) or ``ŷ = y + g √dt`` (Stratonovich), Kloeden & Platen's
derivative-free (Runge–Kutta) Milstein scheme. Strong order 1.0 for commutative noise
(diagonal, scalar, additive), weak order 1.0.

Reference: G. N. Milstein, "Approximate integration of stochastic differential
equations", Theory Probab. Appl. 19, 1975; Kloeden & Platen 1992, §10.3 and §11.1.
"""

from __future__ import annotations

import math

from ..settings import METHODS, NOISE_TYPES, SDE_TYPES
from .base import SDEMethod

__all__ = ["MilsteinIto", "MilsteinStratonovich"]


class _Milstein(SDEMethod):
    noise_types = (NOISE_TYPES.additive, NOISE_TYPES.diagonal, NOISE_TYPES.scalar)
    strong_orders = {"general": 1.0}
    option_keys = ("grad_free",)
    ito: bool

    def step(self, sde, t, dt, y, dW, state, levy):
        weight = dW * dW - dt if self.ito else dW * dW
        if sde.noise_type == NOISE_TYPES.additive:
            f, g_dW = sde.f_and_g_prod(t, y, dW)
            return y + f * dt + g_dW, state
        diagonal = sde.noise_type == NOISE_TYPES.diagonal
        if self.options.get("grad_free", False):
            f, g = sde.f_and_g(t, y)
            g_col = g if diagonal else g.squeeze(-1)
            # dt is a float, or a (B, 1) tensor of per-sample steps (odeflow.sde.per_sample).
            sqrt_dt = math.sqrt(dt) if isinstance(dt, (int, float)) else dt.sqrt()
            y_hat = y + g_col * sqrt_dt + (f * dt if self.ito else 0.0)
            g_hat = sde.g(t, y_hat)
            Lg = (g_hat - g) / sqrt_dt
            Lg = Lg if diagonal else Lg.squeeze(-1)
        else:  # J_g g by autodiff (SDEFunctions; the stochastic adjoint has its own form)
            f = sde.f(t, y)
            g_dW, Lg_w = sde.g_prod_and_gdg_prod(t, y, dW, weight)
            return y + f * dt + g_dW + 0.5 * Lg_w, state
        return y + f * dt + sde.prod(g, dW) + 0.5 * Lg * weight, state


class MilsteinIto(_Milstein):
    """Milstein for Itô SDEs with commutative noise (``grad_free`` option)."""

    name = METHODS.milstein
    sde_types = (SDE_TYPES.ito,)
    ito = True


class MilsteinStratonovich(_Milstein):
    """Milstein for Stratonovich SDEs with commutative noise (``grad_free`` option)."""

    name = METHODS.milstein
    sde_types = (SDE_TYPES.stratonovich,)
    ito = False
