"""options={"per_sample": True}: independent step sizes for the samples of a batch."""

from __future__ import annotations

import pytest
import torch

import odeflow

from .problems import scipy_reference, van_der_pol

F64 = torch.float64


def _batch(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.rand(n, generator=g, dtype=F64) * 4.5 + 0.5
    y0 = torch.stack([torch.rand(n, generator=g, dtype=F64) * 2 + 0.5,
                      torch.zeros(n, dtype=F64)], 1)

    def f(t, y):
        assert t.shape == (n,)  # each sample's own time
        return torch.stack([y[:, 1], mu * (1 - y[:, 0] ** 2) * y[:, 1] - y[:, 0]], 1)

    return mu, y0, f


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_each_sample_matches_scipy(method):
    mu, y0, f = _batch()
    t = torch.tensor([0.0, 1.3, 4.0], dtype=F64)
    sol = odeflow.solve(f, y0, t, rtol=1e-9, atol=1e-9, method=method,
                        options={"per_sample": True})
    assert sol.ys.shape == (3, 12, 2)
    for i in range(12):
        ref = scipy_reference(van_der_pol(mu[i].item()), y0[i], 4.0, t_eval=t.numpy())
        assert (sol.ys[:, i] - ref).abs().max().item() < 1e-6


def test_per_sample_saves_evaluations_on_a_mixed_batch():
    mu, y0, f = _batch(40)
    t = torch.tensor([0.0, 10.0], dtype=F64)
    joint = odeflow.solve(lambda t, y: f(t.expand(40), y), y0, t, rtol=1e-7, atol=1e-7)
    each = odeflow.solve(f, y0, t, rtol=1e-7, atol=1e-7, options={"per_sample": True})
    assert torch.allclose(joint.ys, each.ys, atol=1e-4)
    assert each.stats.nfe < joint.stats.nfe
    # Statistics count sample-steps: every sample takes at least one accepted step.
    assert each.stats.n_accepted >= 40


def test_per_sample_gradient_direct():
    _, y0, f = _batch(4)
    y0 = y0.clone().requires_grad_(True)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    ys = odeflow.odeint(f, y0, t, rtol=1e-10, atol=1e-10, options={"per_sample": True})
    (g,) = torch.autograd.grad(ys[-1].sum(), y0)
    ref = odeflow.odeint(lambda t, y: f(t.expand(4), y), y0, t, rtol=1e-10, atol=1e-10)
    (g_ref,) = torch.autograd.grad(ref[-1].sum(), y0)
    assert torch.allclose(g, g_ref, atol=1e-6)


def test_per_sample_rejects_unsupported_combinations():
    _, y0, f = _batch(3)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(ValueError, match="per_sample"):
        odeflow.odeint(f, (y0, y0), t, options={"per_sample": True})
    with pytest.raises(ValueError, match="per_sample"):
        odeflow.odeint(f, y0, t, gradient="checkpoint", options={"per_sample": True})
    with pytest.raises(ValueError, match="unknown option"):
        odeflow.odeint(f, y0, t, method="rk4", options={"per_sample": True})
