"""Per sample, the output times a step passed are written from one batched evaluation of the
step's dense output (``LaneClock.write_outputs``, ``(P, B)`` θ): the values must be those of
writing them pass by pass (chunks of one pass), bit for bit, for every kind of interpolant;
the checkpointed gradient replays the same outputs."""

from __future__ import annotations

import pytest
import torch

import odeflow
from odeflow import lanes

F64 = torch.float64


def _problem(dtype=F64, B=6, T=120):
    a = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=dtype)
    y0 = torch.randn(B, 2, dtype=F64, generator=torch.Generator().manual_seed(0)).to(dtype)
    grid = torch.rand(B, T, dtype=F64, generator=torch.Generator().manual_seed(1)) * 6
    grid = torch.cat([torch.zeros(B, 1, dtype=F64), torch.sort(grid, dim=1).values], 1)
    if T > 50:
        grid[2, 40:50] = grid[2, 39] + torch.arange(1, 11, dtype=F64) * 1e-4  # a cluster in a step
    return (lambda t, y: y @ a.T + 0.1 * torch.sin(t).to(dtype)[:, None]), y0, grid.to(dtype)


# Tableau (explicit and ESDIRK), Rosenbrock, cubic Hermite, linear and auto's lane interpolants
CASES = [("dopri5", {}), ("tsit5", {}), ("bosh3", {}), ("fehlberg2", {}), ("rodas5p", {}),
         ("kvaerno5", {}), ("trbdf2", {}), ("auto", {}),
         ("rk4", {"step_size": 0.5, "interp": "linear"}),
         ("rk4", {"step_size": 0.5, "interp": "cubic"})]


@pytest.mark.parametrize("method,opts", CASES)
@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_batched_passes_equal_pass_by_pass(method, opts, dtype, monkeypatch):
    f, y0, grid = _problem(dtype)
    passes = []
    write = lanes.LaneClock.write_outputs

    def spy(self, stepper, ys, n_pass, *args):
        passes.append(n_pass)
        return write(self, stepper, ys, n_pass, *args)

    def solve():
        with torch.no_grad():
            return odeflow.solve(f, y0, grid, method=method, rtol=1e-6, atol=1e-8,
                                 options={"per_sample": True, **opts}).ys

    monkeypatch.setattr(lanes.LaneClock, "write_outputs", spy)
    at_once = solve()
    assert max(passes) > 3  # steps did pass several output times
    monkeypatch.setattr(lanes, "PASS_CHUNK", 3 * y0.numel())  # chunks of 3 passes
    chunked = solve()
    monkeypatch.setattr(lanes, "PASS_CHUNK", 1)  # one pass at a time
    one_by_one = solve()
    assert torch.equal(at_once, one_by_one) and torch.equal(chunked, one_by_one)


def test_batched_passes_match_each_sample_solved_alone():
    f, y0, grid = _problem()
    with torch.no_grad():
        ys = odeflow.solve(f, y0, grid, options={"per_sample": True}).ys
        for b in (0, 2, 5):
            alone = odeflow.solve(lambda t, y: f(t.reshape(1), y[None])[0], y0[b], grid[b]).ys
            # the same steps; the dense output's sums round differently (lanes vs one vector)
            torch.testing.assert_close(ys[:, b], alone, rtol=1e-13, atol=1e-13)


def test_batched_passes_under_autograd_give_finite_difference_gradients():
    f, y0, grid = _problem(B=3, T=30)
    p = torch.tensor(0.8, dtype=F64, requires_grad=True)

    def loss(p):
        return odeflow.solve(lambda t, y: f(t, y) * p, y0, grid, rtol=1e-10, atol=1e-12,
                             options={"per_sample": True}).ys.pow(2).sum()

    (g,) = torch.autograd.grad(loss(p), p)
    eps = 1e-5
    with torch.no_grad():
        fd = (loss(p + eps) - loss(p - eps)) / (2 * eps)
    torch.testing.assert_close(g, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("method", ["dopri5", "rodas5p"])
def test_checkpoint_replays_the_batched_passes(method):
    """The replay of a checkpointed solve records each pass of a step (``(P, B)`` rows)."""
    f, y0, grid = _problem(B=4, T=80)

    def grads(gradient):
        p = torch.tensor(0.8, dtype=F64, requires_grad=True)
        x0 = y0.clone().requires_grad_(True)
        ys = odeflow.solve(lambda t, y: f(t, y) * p, x0, grid, method=method, rtol=1e-8,
                           atol=1e-10, gradient=gradient, options={"per_sample": True}).ys
        (ys * torch.linspace(0.5, 1.5, ys.shape[0], dtype=F64)[:, None, None]).sum().backward()
        return ys.detach(), p.grad, x0.grad

    direct, checkpoint = grads("direct"), grads("checkpoint")
    assert torch.equal(direct[0], checkpoint[0])
    for a, b in zip(direct[1:], checkpoint[1:]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
