"""The loop's fast paths give what the general forms give: the joint initial step in Python
floats against its tensor form (bit for bit), and the float64 per-sample stages (kept
scaled by each lane's step) against each sample's own solve (the same steps)."""

from __future__ import annotations

import math
import random

import torch

import odeflow
from odeflow.controllers import initial_step, starting_step
from odeflow.norms import max_norm, rms_norm


def _tensor_form(func, t0, y0, f0, order, rtol, atol, norm):
    def probe(h0):
        h = float(h0)
        return func(t0 + h, torch.add(y0, f0, alpha=h))

    return float(starting_step(probe, y0, f0, order, rtol, atol, norm))


def test_joint_initial_step_is_the_tensor_forms_bit_for_bit():
    rnd, g = random.Random(0), torch.Generator().manual_seed(0)
    for _ in range(400):
        dtype = rnd.choice([torch.float32, torch.float64])
        m = rnd.choice([1, 3, 10])
        y0 = (torch.randn(m, generator=g, dtype=torch.float64) * 10 ** rnd.uniform(-8, 8)
              ).to(dtype)
        a = (torch.randn(m, m, generator=g, dtype=torch.float64) * 10 ** rnd.uniform(-6, 6)
             ).to(dtype)
        scale = rnd.choice([1.0, 0.0, math.inf])  # also f0 = 0 and a non-finite f

        def func(t, y, a=a, scale=scale):
            return (y @ a + math.sin(t)) * scale

        f0 = func(0.0, y0)
        args = (0.3, y0, f0, rnd.choice([2, 3, 4, 7]), 10 ** rnd.uniform(-10, -2),
                10 ** rnd.uniform(-12, -2), rnd.choice([rms_norm, max_norm]))
        want, got = _tensor_form(func, *args), initial_step(func, *args)
        assert got == want or (math.isnan(got) and math.isnan(want)), (got, want)


def test_float64_per_sample_steps_are_each_samples_own():
    g = torch.Generator().manual_seed(1)
    mu = 0.5 + 4.5 * torch.rand(12, generator=g, dtype=torch.float64)
    y0 = torch.stack((0.5 + 2 * torch.rand(12, generator=g, dtype=torch.float64),
                      torch.zeros(12, dtype=torch.float64)), -1)

    def vdp(m):
        def f(t, y):
            x, v = y.unbind(-1)
            return torch.stack((v, m * (1 - x * x) * v - x), -1)
        return f

    t = torch.tensor([0.0, 1.5, 6.0], dtype=torch.float64)
    for method in ("dopri5", "tsit5", "bosh3", "fehlberg2"):
        sol = odeflow.solve(vdp(mu), y0, t, rtol=1e-7, atol=1e-7, method=method,
                            options={"per_sample": True})
        for b in range(12):
            own = odeflow.solve(vdp(mu[b]), y0[b], t, rtol=1e-7, atol=1e-7, method=method)
            assert int(sol.sample_stats.n_accepted[b]) == own.stats.n_accepted
            assert int(sol.sample_stats.n_rejected[b]) == own.stats.n_rejected
            assert (sol.ys[:, b] - own.ys).abs().max().item() < 1e-9
