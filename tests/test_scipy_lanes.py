"""``method="scipy_solver"`` per sample: each sample is its own SciPy solve, on its own output
times, with its own status and statistics."""

from __future__ import annotations

import math

import pytest
import torch

import odeflow
from odeflow import Status

from .problems import poisoned_decay

pytest.importorskip("scipy")

F64 = torch.float64
PS = {"per_sample": True}
GRIDS = torch.tensor([[0.0, 0.3, 1.0], [0.5, 0.9, 1.2], [2.0, 1.5, 1.0]], dtype=F64)


def _vdp_batch(n=3):
    mu = torch.tensor([0.7, 2.0, 3.3], dtype=F64)[:n]
    y0 = torch.stack([torch.linspace(0.6, 1.4, n, dtype=F64), torch.zeros(n, dtype=F64)], 1)

    def f(t, y):
        return torch.stack([y[..., 1], mu * (1 - y[..., 0] ** 2) * y[..., 1] - y[..., 0]], -1)

    def single(b):
        return lambda t, y: torch.stack([y[1], mu[b] * (1 - y[0] ** 2) * y[1] - y[0]])

    return y0, f, single


@pytest.mark.parametrize("solver", ["LSODA", "RK45", "Radau"])
def test_each_sample_is_its_own_scipy_solve(solver):
    y0, f, single = _vdp_batch()
    opts = dict(solver=solver)
    sol = odeflow.solve(f, y0, GRIDS, method="scipy_solver", rtol=1e-8, atol=1e-10,
                        options=dict(PS, **opts))
    nfe = 0
    for b in range(3):
        own = odeflow.solve(single(b), y0[b], GRIDS[b], method="scipy_solver", rtol=1e-8,
                            atol=1e-10, options=opts)
        # the same SciPy solve on the same numbers: bit for bit
        assert torch.equal(sol.ys[:, b], own.ys)
        assert int(sol.sample_stats.n_steps[b]) == own.stats.n_steps
        nfe += own.stats.nfe
    assert sol.sample_stats.status == [Status.SUCCESS] * 3
    assert sol.stats.nfe == nfe  # one batched evaluation per evaluation of a sample's solve


def test_matches_the_closed_form_on_each_samples_own_times():
    lam = torch.tensor([-1.0, 0.5, -2.0], dtype=F64)
    y0 = torch.tensor([[1.0], [2.0], [-0.5]], dtype=F64)
    sol = odeflow.solve(lambda t, y: lam[:, None] * y, y0, GRIDS, method="scipy_solver",
                        rtol=1e-10, atol=1e-12, options=dict(PS, solver="DOP853"))
    exact = (y0 * torch.exp(lam[:, None] * (GRIDS - GRIDS[:, :1]))).T
    assert torch.allclose(sol.ys[..., 0], exact, rtol=1e-8, atol=0)
    # one sample: the scalar clock, in the per-sample form
    one = odeflow.solve(lambda t, y: -y, y0[:1], GRIDS[:1], method="scipy_solver",
                        rtol=1e-10, atol=1e-12, options=PS)
    assert one.ys.shape == (3, 1, 1) and one.sample_stats.status == [Status.SUCCESS]
    assert torch.allclose(one.ys[:, 0, 0], torch.exp(-GRIDS[0]), rtol=1e-8, atol=0)


def test_a_failing_sample_does_not_fail_the_others():
    # sample 1's func turns nan after t = 0.5: the bridge stops its solve there (SciPy alone
    # would shrink the step until it underflows, or with LSODA retry forever)
    k = torch.tensor([0.5, 1.0, -0.4], dtype=F64)
    f = poisoned_decay(k)

    y0 = torch.ones(3, 1, dtype=F64)
    t = torch.tensor([0.0, 0.4, 0.8, 1.0], dtype=F64)
    opts = dict(per_sample=True, solver="Radau")
    sol = odeflow.solve(f, y0, t, method="scipy_solver", throw=False, rtol=1e-9, atol=1e-12,
                        options=opts)
    assert sol.sample_stats.status == [Status.SUCCESS, Status.NONFINITE, Status.SUCCESS]
    assert torch.isnan(sol.ys[2:, 1]).all() and abs(sol.ys[1, 1, 0].item() - math.exp(-0.4)) < 1e-8
    for b in (0, 2):
        assert torch.allclose(sol.ys[:, b, 0], torch.exp(-k[b] * t), rtol=1e-7, atol=0)
    with pytest.raises(odeflow.SolveError, match=r"1 of 3 samples failed \(samples \[1\]\)"):
        odeflow.solve(f, y0, t, method="scipy_solver", options=opts)


def test_gradients_by_the_adjoint_with_a_runge_kutta_backward():
    k = torch.tensor([0.5, 1.5, 1.0], dtype=F64, requires_grad=True)
    y0 = torch.ones(3, 1, dtype=F64)
    field = lambda t, y: -k[:, None] * y  # noqa: E731
    ys = odeflow.solve(field, y0, GRIDS, method="scipy_solver", rtol=1e-10, atol=1e-12,
                       options=PS, gradient="adjoint", adjoint_params=(k,),
                       adjoint_method="dopri5").ys
    grad = torch.autograd.grad(ys[1:].sum(), k)[0]
    span = GRIDS[:, 1:] - GRIDS[:, :1]
    exact = (-span * torch.exp(-k.detach()[:, None] * span)).sum(1)
    assert torch.allclose(grad, exact, rtol=1e-7, atol=0)
    # SciPy cannot be the backward solve (it cannot restart its state at the output times;
    # by default it is dopri5)
    with pytest.raises(ValueError, match="adjoint_method='scipy_solver' is not supported"):
        odeflow.solve(field, y0, GRIDS, method="scipy_solver", options=PS,
                      gradient="adjoint", adjoint_params=(k,), adjoint_method="scipy_solver")
    with pytest.raises(ValueError, match="neither event_fn nor dense"):
        odeflow.solve(field, y0, GRIDS, method="scipy_solver", options=PS, dense=True)
