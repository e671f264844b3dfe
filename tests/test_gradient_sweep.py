"""Gradients of corner combinations against closed forms (float64).

Each test here failed before the fix its docstring names; the reference is the exact
flow's derivative, so the tolerances are those of the solve (rtol = atol = 1e-10).
"""

import pytest
import torch

from odeflow import solve

DT = torch.float64


def _decay_case():
    """``dy/dt = -p t y``: ``y(t) = y0 exp(-p (t^2 - t0^2) / 2)``, with ``L = sum(ys)``."""
    p = torch.tensor(1.5, dtype=DT, requires_grad=True)
    y0 = torch.tensor([[1.0, 2.0]], dtype=DT, requires_grad=True)
    t = torch.tensor([0.1, 0.6, 1.0], dtype=DT, requires_grad=True)

    def exact(p, y0, t):
        return (y0[None] * torch.exp(-p * (t ** 2 - t[0] ** 2) / 2)[:, None, None]).sum()

    want = torch.autograd.grad(exact(p, y0, t), (p, y0, t))
    return (lambda tt, y: -p * tt[:, None] * y), p, y0, t, want


@pytest.mark.parametrize("method", ["dopri5", "rodas5p", "kvaerno5"])
@pytest.mark.parametrize("gradient", ["direct", "checkpoint", "adjoint"])
def test_one_sample_per_sample_gradients_wrt_t_y0_params(method, gradient):
    """A per-sample batch of one sample runs jointly but must give ``func`` a ``(1,)`` time
    everywhere: the time-gradient and Jacobian evaluations gave it a 0-dim one (an
    IndexError here); and its adjoint's backward solve inherited ``per_sample`` and
    refused its own state (``(a, g)`` of unequal first sizes)."""
    f, p, y0, t, want = _decay_case()
    sol = solve(f, y0, t, method=method, rtol=1e-10, atol=1e-10, gradient=gradient,
                options={"per_sample": True},
                adjoint_params=None if gradient == "direct" else [p])
    got = torch.autograd.grad(sol.ys.sum(), (p, y0, t))
    tol = 1e-6 if method == "dopri5" else 1e-5
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=tol, atol=tol)


def test_per_sample_interpolating_adjoint_with_a_parameter_graph_made_outside_func():
    """Per sample after an implicit forward, the adjoint's parameter quadrature freed the
    graph of ``w = p * p`` (built once, outside ``func``) at the first backward interval,
    so the second raised "Trying to backward through the graph a second time"."""
    p = torch.tensor(1.2, dtype=DT, requires_grad=True)
    y0 = torch.tensor([[1.0], [2.0]], dtype=DT, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=DT)
    w = p * p
    sol = solve(lambda tt, y: -w * tt[:, None] * y, y0, t, method="kvaerno5", rtol=1e-10,
                atol=1e-10, gradient="adjoint", options={"per_sample": True},
                adjoint_params=[p])
    got = torch.autograd.grad(sol.ys.sum(), (p, y0))
    exact = (y0[None] * torch.exp(-p * p * t ** 2 / 2)[:, None, None]).sum()
    want = torch.autograd.grad(exact, (p, y0))
    for g, v in zip(got, want):
        torch.testing.assert_close(g, v, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("gradient", ["direct", "checkpoint", "adjoint"])
@pytest.mark.parametrize("rows", [False, True])
def test_time_gradient_of_a_failed_sample_is_zero_and_the_others_alone(gradient, rows):
    """``throw=False`` with a sample that blows up (``y' = y^2`` from 3 fails before
    ``t = 1/3``): the time gradient multiplied its zero cotangents by ``func`` at its nan
    outputs, so a shared ``t`` got ``nan`` (and the failed sample's row ``nan``) although
    the loss reads only the others. Now they equal a batch of the others alone."""
    def grads(y0, t, keep):
        t = t.clone().requires_grad_(True)
        y0 = y0.clone().requires_grad_(True)
        sol = solve(lambda tt, y: torch.stack([y[:, 0] ** 2, -tt * y[:, 1]], -1), y0, t,
                    rtol=1e-9, atol=1e-9, gradient=gradient, throw=False,
                    options={"per_sample": True}, adjoint_params=())
        return sol, torch.autograd.grad(sol.ys[:, keep].sum(), (y0, t))

    y0 = torch.tensor([[0.5, 0.1], [3.0, 0.2], [0.7, 0.3]], dtype=DT)
    t = torch.linspace(0.0, 1.0, 4, dtype=DT)
    if rows:
        t = torch.stack([t, 1.1 * t, 0.9 * t])
    sol, (gy, gt) = grads(y0, t, [0, 2])
    assert sol.sample_stats.status[1].name != "SUCCESS"
    _, (ry, rt) = grads(y0[[0, 2]], t[[0, 2]] if rows else t, slice(None))
    torch.testing.assert_close(gy[[0, 2]], ry, rtol=1e-12, atol=1e-12)
    assert (gy[1] == 0).all()
    torch.testing.assert_close(gt[[0, 2]] if rows else gt, rt, rtol=1e-12, atol=1e-12)
    if rows:
        assert (gt[1] == 0).all()


@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_per_sample_fixed_grid_direct_gradient_after_a_sample_is_done(method):
    """Per sample on a fixed grid, a lane that had finished still evaluated ``func`` at
    ``t + inf`` (its step is infinite): ``cos(inf)`` is nan, and under ``"direct"`` its
    zero-weighted value made that sample's and the shared parameter's gradients nan. Each
    sample's gradients must be those of its own solve."""
    p = torch.tensor(0.7, dtype=DT, requires_grad=True)
    y0 = torch.tensor([[1.0], [1.5]], dtype=DT, requires_grad=True)
    t = torch.tensor([[0.1, 0.6], [0.1, 0.95]], dtype=DT)
    opts = {"step_size": 0.1}
    sol = solve(lambda tt, y: -p * y * torch.cos(tt)[:, None], y0, t, method=method,
                options={"per_sample": True, **opts})
    got_y0, got_p = torch.autograd.grad(sol.ys[-1].sum(), (y0, p))
    want_p = torch.zeros((), dtype=DT)
    for b in range(2):
        yb = y0[b].detach().clone().requires_grad_(True)
        alone = solve(lambda tt, y: -p * y * torch.cos(tt), yb, t[b], method=method,
                      options=opts)
        g_y, g_p = torch.autograd.grad(alone.ys[-1].sum(), (yb, p))
        torch.testing.assert_close(got_y0[b], g_y, rtol=1e-13, atol=1e-13)
        want_p = want_p + g_p
    torch.testing.assert_close(got_p, want_p, rtol=1e-13, atol=1e-13)
