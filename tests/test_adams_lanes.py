"""The Adams methods per sample: each lane keeps its own multistep history on its own grid,
takes exactly the steps a solve of that sample alone takes, and has the method's order."""

from __future__ import annotations

import math

import pytest
import torch

import odeflow
from odeflow import Status
from odeflow.solvers.adams import Adams, integration_weights, lane_weights

from .problems import poisoned_decay, vdp_batch

F64 = torch.float64
ADAMS = ("explicit_adams", "implicit_adams", "fixed_adams")


def test_lane_weights_are_bit_for_bit_the_joint_weights():
    g = torch.Generator().manual_seed(1)
    for k in range(1, 5):
        # an irregular increasing grid per lane: k history nodes, then the step's end
        grid = torch.cumsum(torch.rand(20, k + 1, generator=g, dtype=F64) + 0.01, 1) - 1.0
        nodes = tuple(grid[:, k - 1 - i] for i in range(k))  # newest first, as the history
        cols = lane_weights(nodes, grid[:, k - 1], grid[:, k], F64)
        for b in range(20):
            joint = integration_weights(tuple(float(x[b]) for x in nodes),
                                        float(grid[b, k - 1]), float(grid[b, k]))
            assert [float(c[b, 0]) for c in cols] == joint
    # a lane that does not step (a == b) gets zero weights, even with repeated nodes
    t = torch.zeros(2, dtype=F64)
    cols = lane_weights((t, t), t, t, F64)
    assert all(torch.equal(c, torch.zeros(2, 1, dtype=F64)) for c in cols)


# Each lane its own output grid (shorter spans idle while the others step; one row
# decreasing); with step_size, output times interpolated; without, the outputs are the grid.
GRIDS = torch.tensor([[0.0, 0.3, 1.0], [0.5, 0.9, 1.2], [2.0, 1.5, 1.0], [0.0, 0.7, 3.0]],
                     dtype=F64)


@pytest.mark.parametrize("method", ADAMS)
@pytest.mark.parametrize("opts", [dict(step_size=0.02), dict(step_size=0.02, interp="cubic"),
                                  dict(step_size=0.015, perturb=True), dict(max_order=2),
                                  dict(step_size=0.025, max_order=3)])
def test_each_sample_takes_its_own_steps(method, opts):
    if method == "implicit_adams" and "max_order" not in opts:
        opts = dict(opts, max_iters=3)
    y0, f, single = vdp_batch()
    t = GRIDS
    if "step_size" not in opts:  # no step size: each lane steps on a fine grid of its own
        s = torch.linspace(0, 1, 101, dtype=F64) ** 1.5
        t = t[:, :1] + (t[:, -1:] - t[:, :1]) * s
    sol = odeflow.solve(f, y0, t, method=method, options=dict(per_sample=True, **opts))
    for b in range(y0.shape[0]):
        own = odeflow.solve(single(b), y0[b], t[b], method=method, options=opts)
        assert int(sol.sample_stats.n_accepted[b]) == own.stats.n_accepted
        # The same steps with the same weights (bit for bit, test above); the sums differ by
        # rounding only (a fused multiply-add joint, addcmul per lane): 1e-14 relative.
        rel = (sol.ys[:, b] - own.ys).abs() / own.ys.abs().clamp(min=1.0)
        assert rel.max().item() <= 1e-14


@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams"])
@pytest.mark.parametrize("order", [2, 3, 4])
def test_convergence_order_per_sample(method, order):
    # y' = λ_b y on each lane's own interval and non-uniform grid: y = y0 exp(λ_b (t - t0)).
    lam = torch.tensor([-1.0, 0.5, -1.5], dtype=F64)
    t0 = torch.tensor([0.0, 1.0, -0.5], dtype=F64)
    t1 = torch.tensor([2.0, 2.5, 0.5], dtype=F64)
    y0 = torch.tensor([[1.0], [2.0], [-0.5]], dtype=F64)
    errors = []
    for n in (40, 80):
        s = torch.linspace(0, 1, n + 1, dtype=F64)
        s = s + 0.1 * torch.sin(math.pi * s) / math.pi  # smoothly non-uniform steps
        t = t0[:, None] + (t1 - t0)[:, None] * s
        sol = odeflow.solve(lambda tt, y: lam[:, None] * y, y0, t, method=method,
                            options=dict(per_sample=True, max_order=order))
        exact = y0[:, 0] * torch.exp(lam * (t1 - t0))
        errors.append((sol.ys[-1, :, 0] - exact).abs())
    observed = torch.log2(errors[0] / errors[1])
    assert ((observed - order).abs() < 0.2).all(), observed


def test_a_lane_at_rest_keeps_its_history_and_state():
    f = lambda t, y: -y  # noqa: E731
    for stepper in (Adams(3), Adams(3, max_iters=4)):
        y0 = torch.tensor([[1.0], [2.0]], dtype=F64, requires_grad=True)
        t, y = torch.zeros(2, dtype=F64), y0
        dt = torch.full((2,), 0.1, dtype=F64)
        state = stepper.init(y)
        for _ in range(3):  # start-up, then the Adams formula
            res = stepper.step(f, t, y, f(t, y), dt, state)
            t, y, state = t + dt, res.y_new, res.state
        rest = torch.tensor([0.1, 0.0], dtype=F64)
        f0 = f(t, y).clone()
        f0[1] = math.inf  # a lane at rest whose derivative is not finite
        res = stepper.step(f, t, y, f0, rest, state)
        assert torch.equal(res.y_new[1], y[1])  # exactly y, no nan under autograd
        for new, old in zip(res.state.times, state.times):
            assert new[1] == old[1] and new[0] != old[0]
        for new, old in zip(res.state.derivs, state.derivs):
            assert torch.equal(new[1], old[1])
        grad = torch.autograd.grad(res.y_new.sum(), y0)[0]
        assert torch.isfinite(grad).all()


def test_a_failing_sample_does_not_change_the_others():
    # sample 1's func turns nan after t = 0.5; the others keep the values of their own solves
    k = torch.tensor([0.5, 1.0, -0.4], dtype=F64)
    f = poisoned_decay(k)

    y0 = torch.ones(3, 1, dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    for method in ("explicit_adams", "implicit_adams"):
        sol = odeflow.solve(f, y0, t, method=method, throw=False,
                            options=dict(per_sample=True, step_size=0.05))
        assert sol.sample_stats.status == [Status.SUCCESS, Status.NONFINITE, Status.SUCCESS]
        for b in (0, 2):
            own = odeflow.solve(lambda tt, y, b=b: -k[b] * y, y0[b], t, method=method,
                                options=dict(step_size=0.05))
            rel = (sol.ys[:, b] - own.ys).abs() / own.ys.abs()
            assert rel.max().item() <= 1e-14  # rounding only, as above


@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams"])
def test_gradients_per_sample_are_each_samples_own(method):
    k = torch.tensor([0.5, 1.5, 1.0], dtype=F64, requires_grad=True)
    y0 = torch.ones(3, 1, dtype=F64)
    t = torch.tensor([[0.0, 0.4, 1.0], [0.2, 0.5, 0.9], [1.0, 0.5, 0.0]], dtype=F64)
    opts = dict(per_sample=True, step_size=0.01)
    grads, forward = {}, {}
    for mode in ("direct", "adjoint"):
        extra = dict(adjoint_params=(k,), adjoint_method="rk4") if mode == "adjoint" else {}
        ys = odeflow.solve(lambda tt, y: -k[:, None] * y, y0, t, method=method, options=opts,
                           gradient=mode, **extra).ys
        grads[mode], forward[mode] = torch.autograd.grad(ys[1:].sum(), k)[0], ys.detach()
    assert torch.equal(forward["direct"], forward["adjoint"])  # with and without a graph
    # d/dk of Σ_i y0 exp(-k (t_i - t_0)) (the third lane runs backwards in time)
    span = t[:, 1:] - t[:, :1]
    exact = (-span * torch.exp(-k.detach()[:, None] * span)).sum(1)
    for b in range(3):
        kb = k.detach()[b].clone().requires_grad_()
        ys = odeflow.solve(lambda tt, y, kb=kb: -kb * y, y0[b], t[b], method=method,
                           options=dict(step_size=0.01)).ys
        own = torch.autograd.grad(ys[1:].sum(), kb)[0]
        assert abs(grads["direct"][b].item() - own.item()) <= 1e-13
    # the methods' own error (order 4, h = 0.01; the adjoint's rk4 backwards): 1e-6 relative
    assert torch.allclose(grads["direct"], exact, rtol=1e-6, atol=0)
    assert torch.allclose(grads["adjoint"], exact, rtol=1e-6, atol=0)
    # Adams itself cannot be the per-sample backward (by default it takes rk4)
    with pytest.raises(ValueError, match="explicit Runge-Kutta adjoint_method"):
        odeflow.solve(lambda tt, y: -k[:, None] * y, y0, t, method=method, options=opts,
                      gradient="adjoint", adjoint_params=(k,), adjoint_method=method)


@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams"])
def test_events_and_dense_output_per_sample(method):
    # free fall from heights 1, 2 and 0.5 (upwards at 1): y = y0 + v0 t - t^2 / 2 hits zero
    g = lambda t, y: torch.stack([y[..., 1], -torch.ones_like(y[..., 0])], -1)  # noqa: E731
    y0 = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.5, 1.0]], dtype=F64)
    sol = odeflow.solve(g, y0, torch.tensor([0.0, 5.0], dtype=F64), dense=True, method=method,
                        event_fn=lambda t, y: y[..., 0],
                        options=dict(per_sample=True, step_size=0.01, interp="cubic"))
    exact = torch.tensor([math.sqrt(2), 2.0, 1 + math.sqrt(2)], dtype=F64)
    # a quadratic solution: Adams of order 4 and the cubic dense output are exact
    assert torch.allclose(sol.event_t, exact, rtol=0, atol=1e-12)
    mid = sol.evaluate(torch.tensor([0.5], dtype=F64))[0, :, 0]
    assert torch.allclose(mid, y0[:, 0] + 0.5 * y0[:, 1] - 0.125, rtol=0, atol=1e-12)
