"""Strong convergence orders of every SDE method, and weak orders on the mean.

Errors are measured against closed forms evaluated on the same Brownian path: geometric
Brownian motion (Itô: ``y0 exp((μ - σ²/2) T + σ W_T)``, Stratonovich: ``y0 exp(μ T + σ W_T)``)
and, for additive noise, Ornstein–Uhlenbeck ``y_T = e^{-θT}(y0 + σ ∫ e^{θs} dW_s)`` with
the stochastic integral summed on a fine grid including its I_(1,0) term. The slope of
log E|y_N - y(T)| against log dt over dt = 2⁻², ..., 2⁻⁶ (2000 paths) must be at least
the declared strong order minus 0.12 (the slopes measured when this was written are in
the comments of ``CASES``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import odeflow.sde as tsde
from odeflow.sde.methods import select

B, T = 2000, 1.0
MU, SIG, THETA = 0.3, 0.6, 1.0
DTS = (2 ** -2, 2 ** -3, 2 ** -4, 2 ** -5, 2 ** -6)
TOL = 0.12


class GBM(tsde.BaseSDE):
    def __init__(self, sde_type, noise_type="diagonal", mu=MU, sig=SIG):
        super().__init__(noise_type=noise_type, sde_type=sde_type)
        self.mu, self.sig = mu, sig

    def f(self, t, y):
        return self.mu * y

    def g(self, t, y):
        return self.sig * y if self.noise_type == "diagonal" else (self.sig * y).unsqueeze(-1)


class OU(tsde.SDEIto):
    def __init__(self):
        super().__init__("additive")

    def f(self, t, y):
        return -THETA * y

    def g(self, t, y):
        return torch.full((y.size(0), 1, 1), SIG, dtype=y.dtype)


def _gbm_exact(bm, y0, ito):
    drift = (MU - 0.5 * SIG ** 2) if ito else MU
    return y0 * torch.exp(drift * T + SIG * bm(0.0, T))


def _ou_exact(bm, y0, n=2 ** 12):
    h, acc = T / n, 0.0
    for k in range(n):
        dW, U = bm(k * h, (k + 1) * h, return_U=True)
        # ∫ e^{θs} dW over one cell, to O(h^1.5): e^{θ s_k} (dW + θ ∫ (s - s_k) dW_s).
        acc = acc + math.exp(THETA * k * h) * (dW + THETA * (h * dW - U))
    return math.exp(-THETA * T) * (y0 + SIG * acc)


def _slope(method, sde, exact, levy, options=None, d=1):
    bm = tsde.BrownianInterval(0.0, T, size=(B, 1), dtype=torch.float64, entropy=7,
                               levy_area_approximation=levy, dt=DTS[-1])
    y0 = torch.ones(B, d, dtype=torch.float64).cumsum(1)
    ref = exact(bm, y0)
    errs = [(tsde.sdeint(sde, y0, [0.0, T], bm=bm, method=method, dt=dt, options=options)[-1]
             - ref).abs().mean().item() for dt in DTS]
    return float(np.polyfit(np.log(DTS), np.log(errs), 1)[0])


ITO_GBM = (GBM("ito"), lambda bm, y0: _gbm_exact(bm, y0, True))
STRAT_GBM = (GBM("stratonovich"), lambda bm, y0: _gbm_exact(bm, y0, False))
SCALAR_GBM = (GBM("ito", "scalar"), lambda bm, y0: _gbm_exact(bm, y0, True))

CASES = {
    # id: (method, (sde, exact), levy, options, expected strong order)
    "euler-gbm": ("euler", ITO_GBM, "none", None, 0.5),                  # measured 0.47
    "milstein-ito": ("milstein", ITO_GBM, "none", None, 1.0),            # 0.94
    "milstein-ito-grad-free": ("milstein", ITO_GBM, "none", {"grad_free": True}, 1.0),  # 0.97
    "srk-gbm": ("srk", ITO_GBM, "space-time", None, 1.5),                # 1.43
    "srk-scalar": ("srk", SCALAR_GBM, "space-time", None, 1.5),          # 2 states, 1 noise
    "milstein-scalar": ("milstein", SCALAR_GBM, "none", None, 1.0),
    "milstein-strat": ("milstein", STRAT_GBM, "none", None, 1.0),        # 0.96
    "milstein-strat-grad-free": ("milstein", STRAT_GBM, "none", {"grad_free": True}, 1.0),
    "midpoint": ("midpoint", STRAT_GBM, "none", None, 1.0),              # 0.92
    "heun": ("heun", STRAT_GBM, "none", None, 1.0),                      # 0.92
    "euler_heun": ("euler_heun", STRAT_GBM, "none", None, 0.5),          # 0.96 on this problem
    "log_ode": ("log_ode", STRAT_GBM, "foster", None, 1.0),              # 0.92
    "reversible_heun": ("reversible_heun", STRAT_GBM, "none", None, 0.5),  # 0.92
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_strong_order(case):
    method, (sde, exact), levy, options, expected = CASES[case]
    declared = select(method, sde.sde_type).strong_order(sde.noise_type)
    assert declared == expected
    slope = _slope(method, sde, exact, levy, options, d=2 if sde.noise_type == "scalar" else 1)
    assert slope > expected - TOL, f"{case}: slope {slope:.3f}, declared order {expected}"
    assert slope < 2.5, f"{case}: slope {slope:.3f}"


@pytest.fixture(scope="module")
def ou_bm_and_ref():
    bm = tsde.BrownianInterval(0.0, T, size=(B, 1), dtype=torch.float64, entropy=5,
                               levy_area_approximation="space-time", dt=2 ** -12)
    y0 = torch.ones(B, 1, dtype=torch.float64)
    return bm, y0, _ou_exact(bm, y0)


@pytest.mark.parametrize("method,expected", [("euler", 1.0), ("srk", 1.5)])   # 1.03, 2.04
def test_strong_order_additive_noise(ou_bm_and_ref, method, expected):
    bm, y0, ref = ou_bm_and_ref
    sde = OU()
    assert select(method, "ito").strong_order("additive") == expected
    errs = [(tsde.sdeint(sde, y0, [0.0, T], bm=bm, method=method, dt=dt)[-1] - ref)
            .abs().mean().item() for dt in DTS]
    slope = float(np.polyfit(np.log(DTS), np.log(errs), 1)[0])
    assert slope > expected - TOL, f"{method}: slope {slope:.3f}"


def test_euler_weak_order_on_the_mean():
    # E[y_T] = e^{μT} for GBM; Euler's bias is O(dt). Same paths for every dt, so the
    # Monte Carlo noise (about 0.003 here) is shared and the bias dominates.
    mu, sig, n = 1.0, 0.2, 20000
    sde = GBM("ito", mu=mu, sig=sig)
    bm = tsde.BrownianInterval(0.0, T, size=(n, 1), dtype=torch.float64, entropy=3, dt=2 ** -5)
    y0 = torch.ones(n, 1, dtype=torch.float64)
    dts = (2 ** -1, 2 ** -2, 2 ** -3, 2 ** -4)
    means = [tsde.sdeint(sde, y0, [0.0, T], bm=bm, method="euler", dt=dt)[-1].mean().item()
             for dt in dts]
    errs = [abs(m - math.exp(mu * T)) for m in means]
    slope = float(np.polyfit(np.log(dts), np.log(errs), 1)[0])
    assert 0.8 < slope < 1.3, f"weak slope {slope:.3f}, errors {errs}"
    # The Euler mean itself is (1 + μ dt)^N exactly: check the increments' distribution.
    for dt, m in zip(dts, means):
        assert abs(m - (1 + mu * dt) ** round(T / dt)) < 0.015


WEAK_CASES = {
    # method, Itô?, Lévy area: the slope measured when this was written (dt = 2⁻²…2⁻⁵)
    "euler": ("euler", True, "none"),                    # 0.92
    "milstein-ito": ("milstein", True, "none"),          # 0.92
    "srk": ("srk", True, "space-time"),                  # 2.9
    "milstein-strat": ("milstein", False, "none"),       # 0.91
    "midpoint": ("midpoint", False, "none"),             # 1.2
    "heun": ("heun", False, "none"),                     # 1.2
    "euler_heun": ("euler_heun", False, "none"),         # 0.91
    "log_ode": ("log_ode", False, "foster"),             # 1.2
    "reversible_heun": ("reversible_heun", False, "none"),  # 1.22
}


@pytest.mark.parametrize("case", sorted(WEAK_CASES))
def test_weak_order_on_the_mean(case):
    # Weak error |E[y_N] - E[y(T)]| on GBM, estimated on the same 20000 paths as
    # |mean(y_N - y(T))| with y(T) the closed form on each path: the Monte-Carlo noise is
    # that of the difference (about strong error / √n), far below the bias here. Every
    # method has weak order 1, and a weak error never exceeds the strong one, so the slope
    # must be at least max(1, strong order) minus TOL.
    method, ito, levy = WEAK_CASES[case]
    mu, sig, n = 1.0, 0.3, 20000
    sde = GBM("ito" if ito else "stratonovich", mu=mu, sig=sig)
    bm = tsde.BrownianInterval(0.0, T, size=(n, 1), dtype=torch.float64, entropy=3,
                               levy_area_approximation=levy, dt=2 ** -5)
    y0 = torch.ones(n, 1, dtype=torch.float64)
    ref = y0 * torch.exp(((mu - 0.5 * sig ** 2) if ito else mu) * T + sig * bm(0.0, T))
    dts = (2 ** -2, 2 ** -3, 2 ** -4, 2 ** -5)
    errs = [abs((tsde.sdeint(sde, y0, [0.0, T], bm=bm, method=method, dt=dt)[-1] - ref)
                .mean().item()) for dt in dts]
    slope = float(np.polyfit(np.log(dts), np.log(errs), 1)[0])
    strong = select(method, sde.sde_type).strong_order("diagonal")
    assert slope > max(1.0, strong) - TOL, f"{case}: weak slope {slope:.3f}, errors {errs}"
