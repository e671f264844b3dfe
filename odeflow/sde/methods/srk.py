"""Stochastic Runge–Kutta methods of strong order 1.5 for Itô SDEs (Rößler 2010).

SRI2 for diagonal and scalar noise, SRA1 for additive noise (tableaus in
:mod:`.tableaus`). Both read ``I1 = dW`` and ``I10 = U = ∫ (W(s) - W(t)) ds`` from the
Brownian motion (``levy_area_approximation`` at least ``"space-time"``); the iterated
integrals ``I11 = (I1² - h)/2`` and ``I111 = (I1³ - 3h I1)/6`` follow for diagonal noise.
Each stage evaluates ``f`` and ``g`` once (3 + 4 evaluations per SRI2 step, whose last drift
stage has weight 0; 2 + 2 for SRA1). For diagonal noise the stages are vectorised across
noise channels, which is exact when ``g_i`` depends on ``y_i`` alone (the usual diagonal case).

Reference: A. Rößler, "Runge–Kutta methods for the strong approximation of solutions of
stochastic differential equations", SIAM J. Numer. Anal. 48(3), 922–952, 2010.
"""

from __future__ import annotations

import functools
import math

import torch

from ..settings import METHODS, NOISE_TYPES, SDE_TYPES
from .base import SDEMethod, axpy
from .tableaus import SRA1, SRI2

__all__ = ["SRK"]


@functools.lru_cache(maxsize=16)
def _betas(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """SRI2's ``[β1 β2 β3 β4]`` per stage, as a (stages, 4) tensor (built once per dtype)."""
    tab = SRI2
    return torch.tensor(list(zip(tab.beta1, tab.beta2, tab.beta3, tab.beta4)), dtype=dtype,
                        device=device)


class SRK(SDEMethod):
    """Rößler's SRI2 (diagonal, scalar) and SRA1 (additive) schemes, strong order 1.5."""

    name = METHODS.srk
    sde_types = (SDE_TYPES.ito,)
    noise_types = (NOISE_TYPES.additive, NOISE_TYPES.diagonal, NOISE_TYPES.scalar)
    levy = "space-time"
    strong_orders = {"general": 1.5}
    weak_order = 1.5
    evals_per_step = (3, 4)

    def step(self, sde, t, dt, y, dW, state, levy):
        if sde.noise_type == NOISE_TYPES.additive:
            return self._additive(sde, t, dt, y, dW, levy.U), state
        return self._sri(sde, t, dt, y, dW, levy.U), state

    @staticmethod
    def _sri(sde, t, dt, y, I1, I10):
        tab = SRI2
        # dt is a float, or a (B, 1) tensor of per-sample steps (odeflow.sde.per_sample).
        sqrt_dt = math.sqrt(dt) if isinstance(dt, (int, float)) else dt.sqrt()
        # The four stochastic weights of every stage from one product: rows of betas times
        # [I1, I11/√h, I10/h, I111/h] (I11 = (I1² - h)/2, I111 = (I1³ - 3h I1)/6).
        I1sq = I1 * I1
        J = torch.stack([I1, (I1sq - dt) * (0.5 / sqrt_dt), I10 * (1 / dt),
                         I1 * (I1sq - 3 * dt) * (1 / (6 * dt))])
        weights = (_betas(J.dtype, J.device) @ J.view(4, -1)).view(-1, *I1.shape)
        gI10 = I10 * (1 / dt)   # B0 multiplies g by I10/h
        scalar = sde.noise_type == NOISE_TYPES.scalar
        fs, gs = [], []   # f(H0_j) and g(H1_j) (as (B, d) columns), unscaled
        y1 = y
        for i in range(len(tab.alpha)):
            # Stage values with one fused kernel per non-zero tableau entry (dt and √dt
            # folded into the scalar coefficients).
            H0, H1 = y, y
            for j in range(i):
                if tab.A0[i][j]:
                    H0 = axpy(H0, fs[j], tab.A0[i][j] * dt)
                if tab.A1[i][j]:
                    H1 = axpy(H1, fs[j], tab.A1[i][j] * dt)
                if tab.B0[i][j]:
                    H0 = torch.addcmul(H0, gs[j], gI10, value=tab.B0[i][j])
                if tab.B1[i][j]:
                    H1 = axpy(H1, gs[j], tab.B1[i][j] * sqrt_dt)
            later = range(i + 1, len(tab.alpha))
            used = tab.alpha[i] or any(tab.A0[k][i] or tab.A1[k][i] for k in later)
            fs.append(sde.f(t + tab.c0[i] * dt, H0) if used else None)
            g = sde.g(t + tab.c1[i] * dt, H1)
            g = g.squeeze(-1) if scalar else g
            gs.append(g)
            if tab.alpha[i]:
                y1 = axpy(y1, fs[i], tab.alpha[i] * dt)
            y1 = torch.addcmul(y1, g, weights[i])
        return y1

    @staticmethod
    def _additive(sde, t, dt, y, I1, I10):
        tab = SRA1
        n = len(tab.alpha)
        # Additive noise: g depends on t only, evaluated once per node of c1.
        g_at = {c: sde.g(t + c * dt, y) for c in sorted(set(tab.c1))}
        fs = []
        y1 = y
        for i in range(n):
            H0 = y
            for j in range(i):
                if tab.A0[i][j]:
                    H0 = H0 + tab.A0[i][j] * fs[j]
                if tab.B0[i][j]:
                    H0 = H0 + sde.prod(g_at[tab.c1[j]], tab.B0[i][j] * I10 / dt)
            fs.append(sde.f(t + tab.c0[i] * dt, H0) * dt)
            y1 = y1 + tab.alpha[i] * fs[i] + sde.prod(g_at[tab.c1[i]],
                                                       tab.beta1[i] * I1 + tab.beta2[i] * I10 / dt)
        return y1
