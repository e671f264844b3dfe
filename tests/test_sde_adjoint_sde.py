"""sdeint_adjoint's stochastic adjoint (odeflow.sde.adjoint_sde, Li et al. 2020).

The adjoint computes the gradient of the SDE's solution, not of its discretisation, so
at a fixed ``dt`` it differs from backpropagation through ``sdeint`` by a discretisation
error that must shrink as ``dt`` shrinks. Checked here in float64 on fixed Brownian paths:

* against backpropagation through the same forward solve at two step sizes (the gap
  shrinks), for Itô and Stratonovich SDEs, every noise type, ``y0`` and parameters;
* against central finite differences of the forward solve;
* against closed-form pathwise derivatives of geometric Brownian motion (Itô and
  Stratonovich), which test the Itô–Stratonovich corrections on their own.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import odeflow.sde as tsde

D64 = torch.float64
NOISE = ("diagonal", "scalar", "additive", "general")
# (sde_type, method); the adjoint method is torchsde's default for it: milstein for Itô
# diagonal noise, euler for other Itô noise, midpoint for Stratonovich.
CASES = [("ito", "euler", n) for n in NOISE] + [("ito", "milstein", "diagonal")] + \
        [("stratonovich", "midpoint", n) for n in NOISE]


class Toy(nn.Module):
    """A small SDE with parameters in drift and diffusion, for every noise type."""

    def __init__(self, noise_type, sde_type, d=2, m=2, seed=0):
        super().__init__()
        self.noise_type, self.sde_type = noise_type, sde_type
        gen = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(0.6 * torch.randn(d, d, generator=gen, dtype=D64))
        self.b = nn.Parameter(0.2 * torch.randn(d, generator=gen, dtype=D64))
        self.s = nn.Parameter(0.2 + 0.3 * torch.rand(d, generator=gen, dtype=D64))
        self.G = nn.Parameter(0.3 * torch.randn(d, d, m, generator=gen, dtype=D64))
        self.sigma = nn.Parameter(0.3 * torch.randn(d, m, generator=gen, dtype=D64))

    def f(self, t, y):
        return torch.tanh(y @ self.W + self.b) * (1 + 0.5 * t) - 0.3 * y

    def g(self, t, y):
        if self.noise_type == "diagonal":  # g_i depends on y_i alone
            return self.s * torch.sin(y) + 0.6  # >= 0.1: logqp divides by g
        if self.noise_type == "scalar":
            return (self.s * torch.cos(y) + 0.1).unsqueeze(-1)
        if self.noise_type == "additive":
            return self.sigma.expand(y.size(0), -1, -1) * (1 + t)
        return torch.einsum("bd,dem->bem", torch.cos(y), self.G) + 0.1 * self.sigma

    def h(self, t, y):  # prior drift, for logqp
        return -y


def _m(noise_type, d=2):
    return {"diagonal": d, "scalar": 1}.get(noise_type, 2)


def _setup(sde_type, noise_type, logqp=False, seed=0):
    d, B = 2, 3
    sde = Toy(noise_type, sde_type, d, _m(noise_type), seed=seed)
    y0 = (0.3 * torch.randn(B, d, dtype=D64, generator=torch.Generator().manual_seed(1))
          ).requires_grad_(True)
    # logqp adds a state component without noise: diagonal noise gets one more channel.
    m = _m(noise_type) + (logqp and noise_type == "diagonal")
    bm = tsde.BrownianInterval(0.0, 1.0, size=(B, m), dtype=D64, entropy=17 + seed)
    ts = [0.0, 0.3, 1.0]  # 0.3 is off the grids below: an interpolated output
    w = torch.randn(len(ts), B, d, dtype=D64, generator=torch.Generator().manual_seed(2))
    return sde, y0, ts, bm, w


def _loss(fn, sde, y0, ts, bm, w, method, dt, **kw):
    out = fn(sde, y0, ts, bm=bm, method=method, dt=dt, **kw)
    if kw.get("logqp"):
        ys, log_ratio = out
        return (ys * w).sum() + (log_ratio * torch.arange(1, 3, dtype=D64)[:, None]).sum()
    return (out * w).sum()


def _grads(fn, sde, y0, ts, bm, w, method, dt, **kw):
    inputs = (y0, *sde.parameters())
    grads = torch.autograd.grad(_loss(fn, sde, y0, ts, bm, w, method, dt, **kw), inputs,
                                allow_unused=True)
    return torch.cat([(torch.zeros_like(x) if g is None else g).reshape(-1)
                      for g, x in zip(grads, inputs)])


def _gap(case, dt, **kw):
    sde_type, method, noise_type = case
    sde, y0, ts, bm, w = _setup(sde_type, noise_type, logqp=kw.get("logqp", False))
    bp = _grads(tsde.sdeint, sde, y0, ts, bm, w, method, dt, **kw)
    adj = _grads(tsde.sdeint_adjoint, sde, y0, ts, bm, w, method, dt, **kw)
    assert bp.abs().max() > 0.1  # the test has gradients to compare
    return float((adj - bp).abs().max() / bp.abs().max())


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_gradients_approach_backprop_as_dt_shrinks(case):
    # Both gradients converge to the pathwise derivative of the solution, so their gap
    # is a discretisation error: O(dt^½) for Euler–Maruyama with multiplicative noise,
    # O(dt) for the others. From dt = 2^-4 to 2^-7 it must fall by at least a factor
    # 2.5 (order ½ predicts 2.8; measured 3.3-16x, from 3-12% to 0.5-1.7% of the largest
    # gradient entry) and end below 3%.
    coarse, fine = _gap(case, 2.0 ** -4), _gap(case, 2.0 ** -7)
    assert fine < coarse / 2.5 and fine < 0.03, (coarse, fine)


def test_logqp_gradients_approach_backprop_as_dt_shrinks():
    # log_ratio's cotangents reach y0 and the parameters through the augmented SDE's
    # extra (noise-free) component; tolerances as above (measured: 13% -> 1.2% and
    # 3.3% -> 0.34%).
    for case in (("ito", "euler", "diagonal"), ("stratonovich", "midpoint", "general")):
        coarse, fine = _gap(case, 2.0 ** -4, logqp=True), _gap(case, 2.0 ** -7, logqp=True)
        assert fine < coarse / 2.5 and fine < 0.03, (case, coarse, fine)


@pytest.mark.parametrize("case", [("ito", "milstein", "diagonal"), ("ito", "euler", "general"),
                                  ("stratonovich", "midpoint", "scalar"),
                                  ("stratonovich", "midpoint", "additive")],
                         ids=lambda c: "-".join(c))
def test_gradients_match_central_differences_on_a_fixed_path(case):
    # Central differences of the forward solve (the same Brownian path for every
    # evaluation), eps = 1e-6: truncation O(eps^2), rounding O(1e-16 / eps) ~ 1e-10. The
    # adjoint differs from them by its discretisation gap at dt = 2^-8, measured (relative
    # to the largest difference quotient) 0.8% (Itô Milstein), 1.9% (Itô Euler, general
    # noise), 1.4% and 0.8% (midpoint, scalar and additive): tolerance 3%.
    sde_type, method, noise_type = case
    sde, y0, ts, bm, w = _setup(sde_type, noise_type, seed=1)
    dt = 2.0 ** -8
    adj = _grads(tsde.sdeint_adjoint, sde, y0, ts, bm, w, method, dt)
    eps, fd, picked = 1e-6, [], []
    offset = 0
    with torch.no_grad():
        for x in (y0, *sde.parameters()):
            flat = x.view(-1)
            for i in range(0, flat.numel(), max(1, flat.numel() // 2)):
                old = flat[i].item()
                flat[i] = old + eps
                up = _loss(tsde.sdeint, sde, y0, ts, bm, w, method, dt).item()
                flat[i] = old - eps
                down = _loss(tsde.sdeint, sde, y0, ts, bm, w, method, dt).item()
                flat[i] = old
                fd.append((up - down) / (2 * eps))
                picked.append(offset + i)
            offset += flat.numel()
    fd = torch.tensor(fd, dtype=D64)
    err = (adj[picked] - fd).abs().max() / fd.abs().max()
    assert err < 0.03, (err, adj[picked], fd)


class GBM(nn.Module):
    """Geometric Brownian motion ``dy = μ y dt + σ y dW`` (Itô or Stratonovich)."""

    noise_type = "diagonal"

    def __init__(self, sde_type):
        super().__init__()
        self.sde_type = sde_type
        self.mu = nn.Parameter(torch.tensor([0.4, -0.2], dtype=D64))
        self.sigma = nn.Parameter(torch.tensor([0.5, 0.8], dtype=D64))

    def f(self, t, y):
        return self.mu * y

    def g(self, t, y):
        return self.sigma * y


@pytest.mark.parametrize("sde_type,method,adjoint_method",
                         [("ito", "milstein", None), ("ito", "euler", "euler"),
                          ("ito", "milstein", "midpoint"),
                          ("stratonovich", "midpoint", None),
                          ("stratonovich", "milstein", "milstein"),
                          ("stratonovich", "heun", "euler")])
def test_matches_closed_form_pathwise_derivatives_of_gbm(sde_type, method, adjoint_method):
    # y(T) = y0 exp((μ - σ²/2 [Itô]) T + σ W(T)), so on the path: ∂y/∂y0 = y/y0,
    # ∂y/∂μ = T y, ∂y/∂σ = (W(T) - σ T [Itô]) y. The adjoint of an Itô SDE passes through
    # the Itô–Stratonovich correction (twice with an Itô adjoint method, once with a
    # Stratonovich one: "midpoint" for the Itô SDE, "euler" for the Stratonovich one, an
    # odeflow extension). dt = 2^-9. Measured relative errors: at most 0.12% with a
    # Milstein or midpoint adjoint (tolerance 0.5%), 1.3% with Euler–Maruyama's, of strong
    # order ½ for this multiplicative noise (tolerance 3%).
    sde, T, B = GBM(sde_type), 1.0, 4
    y0 = torch.linspace(0.5, 1.5, B * 2, dtype=D64).view(B, 2).requires_grad_(True)
    bm = tsde.BrownianInterval(0.0, T, size=(B, 2), dtype=D64, entropy=5)
    ys = tsde.sdeint_adjoint(sde, y0, [0.0, T], bm=bm, method=method, dt=2.0 ** -9,
                             adjoint_method=adjoint_method)
    g_y0, g_mu, g_sigma = torch.autograd.grad(ys[-1].sum(), (y0, sde.mu, sde.sigma))
    with torch.no_grad():
        W, ito = bm(0.0, T), sde_type == "ito"
        mu, sigma = sde.mu, sde.sigma
        y = y0 * torch.exp((mu - (0.5 * sigma ** 2 if ito else 0)) * T + sigma * W)
        want = (y / y0, (T * y).sum(0), ((W - (sigma * T if ito else 0)) * y).sum(0))
    tol = 0.03 if adjoint_method == "euler" else 0.005
    for got, exp in zip((g_y0, g_mu, g_sigma), want):
        err = float((got - exp).abs().max() / exp.abs().max())
        assert err < tol, (err, got, exp)


def test_adaptive_forward_and_backward():
    # adaptive=True (forward) and adjoint_adaptive=True (backward), both at tolerances
    # 1e-4: the gap to backprop through the same adaptive forward is the two solves'
    # discretisation errors, measured 0.8%; tolerance 2%.
    sde, y0, ts, bm, w = _setup("stratonovich", "diagonal")
    kw = dict(adaptive=True, rtol=1e-4, atol=1e-4)
    bp = _grads(tsde.sdeint, sde, y0, ts, bm, w, "midpoint", 0.05, **kw)
    adj = _grads(tsde.sdeint_adjoint, sde, y0, ts, bm, w, "midpoint", 0.05,
                 adjoint_adaptive=True, adjoint_rtol=1e-4, adjoint_atol=1e-4, **kw)
    gap = float((adj - bp).abs().max() / bp.abs().max())
    assert gap < 0.02, gap
    stats = tsde.last_stats()
    assert stats.n_steps_backward > 0 and stats.nfe_backward > 0


def test_gradients_reach_only_adjoint_params_and_leave_flags_alone():
    sde, y0, ts, bm, w = _setup("ito", "diagonal")
    flags = [p.requires_grad for p in sde.parameters()]
    out = tsde.sdeint_adjoint(sde, y0, ts, bm=bm, method="milstein", dt=0.05,
                              adjoint_params=(sde.W,))
    (out * w).sum().backward()
    assert sde.W.grad is not None and sde.s.grad is None and y0.grad is not None
    assert [p.requires_grad for p in sde.parameters()] == flags
    # Nothing requires grad: a plain solve, no graph.
    ys = tsde.sdeint_adjoint(sde, y0.detach(), ts, bm=bm, method="euler", dt=0.05,
                             adjoint_params=())
    assert not ys.requires_grad


def test_adjoint_method_errors_name_what_works():
    sde, y0, ts, bm, _ = _setup("ito", "general")
    with pytest.raises(ValueError, match="adjoint_method must be one of"):
        tsde.sdeint_adjoint(sde, y0, ts, bm=bm, adjoint_method="srk")
    with pytest.raises(ValueError, match="needs method='reversible_heun'"):
        tsde.sdeint_adjoint(sde, y0, ts, bm=bm, adjoint_method="adjoint_reversible_heun")
    with pytest.raises(ValueError, match="does not support the adjoint"):
        tsde.sdeint_adjoint(sde, y0, ts, bm=bm, adjoint_method="milstein")
    sde, y0, ts, bm, _ = _setup("stratonovich", "diagonal")
    with pytest.raises(ValueError, match="grad_free"):
        tsde.sdeint_adjoint(sde, y0, ts, bm=bm, adjoint_method="milstein",
                            adjoint_options={"grad_free": True})
    with pytest.raises(ValueError, match="levy_area_approximation"):
        tsde.sdeint_adjoint(sde, y0, ts, bm=bm, adjoint_method="log_ode")
    with pytest.raises(ValueError, match="adjoint_rtol"):
        tsde.sdeint_adjoint(sde, y0, ts, bm=bm, adjoint_rtol="x")
    with pytest.warns(UserWarning, match="stochastic adjoint"):
        tsde.sdeint_adjoint(sde, y0, ts, bm=bm, method="reversible_heun", dt=0.1,
                            adjoint_method="midpoint")


@pytest.mark.parametrize("sde_type,method,noise_type,levy",
                         [("ito", "milstein", "diagonal", "none"),
                          ("stratonovich", "milstein", "scalar", "none"),
                          ("stratonovich", "log_ode", "general", "foster")])
def test_adjoint_forward_equals_sdeint_forward(sde_type, method, noise_type, levy):
    # sdeint_adjoint's forward runs without grad mode, from a y0 that requires grad:
    # Milstein's and log-ODE's inner derivatives of g must not depend on that (they did:
    # the first step's state, a view of y0 made under no_grad, gave a zero derivative).
    sde, y0, ts, _, _ = _setup(sde_type, noise_type)
    bm = tsde.BrownianInterval(0.0, 1.0, size=(y0.size(0), _m(noise_type)), dtype=D64,
                               entropy=8, levy_area_approximation=levy)
    kw = dict(bm=bm, method=method, dt=0.05)
    direct = tsde.sdeint(sde, y0, ts, **kw)
    adjoint = tsde.sdeint_adjoint(sde, y0, ts, adjoint_method="midpoint"
                                  if sde_type == "stratonovich" else None, **kw)
    torch.testing.assert_close(adjoint, direct, rtol=0, atol=0)
