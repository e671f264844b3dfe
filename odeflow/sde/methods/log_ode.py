"""The log-ODE midpoint method for Stratonovich SDEs (uses the Lévy area).

The step solves, by the midpoint rule, the ODE whose vector field is the truncated
log-signature of the driving path over the step:
``ym = y + (f dt + g dW)/2``, ``y1 = y + f(tm, ym) dt + g(tm, ym) dW + Σ_kl [g_k, g_l]-term``,
where the last term is ``Σ_k,l ∂g_l/∂y g_k A_kl`` at the midpoint (zero unless the noise
is general, i.e. non-commutative). Strong order 1.0 for commutative noise; with an
approximate Lévy area (Davie, Foster) 0.5 for general noise in the strong sense, but
higher in the 2-Wasserstein sense (Davie 2014).

References: A. Davie, "KMT theory applied to approximations of SDE", 2014; J. Foster,
PhD thesis, Oxford 2020, §3 (log-ODE methods); T. Lyons, "Rough paths, signatures and
the modelling of functions on streams", 2014.
"""

from __future__ import annotations

from ..settings import METHODS, NOISE_TYPES, SDE_TYPES
from .base import SDEMethod

__all__ = ["LogODEMidpoint"]


class LogODEMidpoint(SDEMethod):
    """Log-ODE midpoint (Stratonovich, every noise type; needs a Lévy area)."""

    name = METHODS.log_ode_midpoint
    sde_types = (SDE_TYPES.stratonovich,)
    levy = "area"
    strong_orders = {"general": 0.5, NOISE_TYPES.diagonal: 1.0, NOISE_TYPES.scalar: 1.0,
                     NOISE_TYPES.additive: 1.0}
    evals_per_step = (2, 2)

    def step(self, sde, t, dt, y, dW, state, levy):
        f, g_dW = sde.f_and_g_prod(t, y, dW)
        tm = t + 0.5 * dt
        ym = y + 0.5 * (f * dt + g_dW)
        fm, gm_dW = sde.f_and_g_prod(tm, ym, dW)
        y1 = y + fm * dt + gm_dW
        if sde.noise_type == NOISE_TYPES.general:
            y1 = y1 + sde.dg_ga_jvp_column_sum(tm, ym, levy.A)
        return y1, state
