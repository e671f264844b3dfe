"""The adjoint's backward pass is one solve from the last output time to the first, landing on
every output time between, where the state jumps (``a`` gains ``∂L/∂y(t_i)``, the plain
adjoint's ``y`` starts again from the forward's): one loop run and one starting-step probe
per backward pass, joint and per sample, for every family (sensitivity/adjoint.py)."""

from __future__ import annotations

import pytest
import torch

import odeflow
from odeflow import integrate
from odeflow import run as run_module
from odeflow.config import loop_config
from odeflow.problem import make_problem
from odeflow.solvers import get_method

F64 = torch.float64


def _f(p):
    def f(t, y):
        x, v = y.unbind(-1)
        return torch.stack((-0.3 * x * p[0] + v, -x * p[1] - 0.2 * v + 0.1 * torch.sin(t)), -1)
    return f


def _spy(monkeypatch):
    """Counts the loop runs and the starting-step probes."""
    calls = {"runs": 0, "probes": 0}
    loop, probe = integrate.integrate, integrate.initial_step

    def counted_loop(*a, **kw):
        calls["runs"] += 1
        return loop(*a, **kw)

    def counted_probe(*a):
        calls["probes"] += 1
        return probe(*a)
    monkeypatch.setattr(run_module, "integrate", counted_loop)
    monkeypatch.setattr(integrate, "initial_step", counted_probe)
    return calls


def _grads(p, y0, t, **kw):
    sol = odeflow.solve(_f(p), y0, t, rtol=1e-9, atol=1e-11, **kw)
    return torch.autograd.grad(sol.ys.pow(2).sum(), (p, y0))


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3", "rodas5p", "kvaerno5"])
def test_joint_backward_is_one_solve_and_agrees_with_backprop(monkeypatch, method):
    p = torch.tensor([0.7, 1.3], dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    t = torch.linspace(0, 5, 21, dtype=F64)
    direct = _grads(p, y0, t, method=method)
    calls = _spy(monkeypatch)
    sol = odeflow.solve(_f(p), y0, t, rtol=1e-9, atol=1e-11, method=method,
                        gradient="adjoint", adjoint_params=(p,))
    assert calls == {"runs": 1, "probes": 1}
    adjoint = torch.autograd.grad(sol.ys.pow(2).sum(), (p, y0))
    assert calls == {"runs": 2, "probes": 2}  # not one per output interval (20)
    for a, d in zip(adjoint, direct):  # both within the solves' tolerance of the truth
        torch.testing.assert_close(a, d, rtol=1e-6, atol=0)


@pytest.mark.parametrize("method", ["dopri5", "rodas5p", "kvaerno3"])
def test_per_sample_backward_is_one_solve_on_each_samples_own_times(monkeypatch, method):
    """Each sample's gradient is that of its own lone solve (its own output times)."""
    g = torch.Generator().manual_seed(3)
    B, T = 4, 9
    t = torch.cat([torch.zeros(B, 1, dtype=F64),
                   torch.sort(torch.rand(B, T - 1, generator=g, dtype=F64) * 4, 1).values
                   + 0.01 * torch.arange(1, T, dtype=F64)], 1)
    y0 = torch.randn(B, 2, generator=g, dtype=F64).requires_grad_(True)
    p = torch.tensor([0.7, 1.3], dtype=F64, requires_grad=True)
    calls = _spy(monkeypatch)
    sol = odeflow.solve(_f(p), y0, t, rtol=1e-9, atol=1e-11, method=method, gradient="adjoint",
                        adjoint_params=(p,), options={"per_sample": True})
    adjoint = torch.autograd.grad(sol.ys.pow(2).sum(), (p, y0))
    assert calls["runs"] == 2 and calls["probes"] == 2
    dp = torch.zeros_like(p)
    for b in range(B):
        yb = y0[b].detach().clone().requires_grad_(True)
        gp, gy = _grads(p, yb, t[b], method=method)
        dp += gp
        torch.testing.assert_close(adjoint[1][b], gy, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(adjoint[0], dp, rtol=1e-6, atol=1e-9)


def test_decreasing_times_and_a_loss_on_some_outputs_only():
    p = torch.tensor([0.7, 1.3], dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    t = torch.linspace(3, -2, 11, dtype=F64)

    def grads(**kw):
        ys = odeflow.solve(_f(p), y0, t, rtol=1e-9, atol=1e-11, **kw).ys
        return torch.autograd.grad(ys[[2, 7]].sum() + ys[-1].pow(2).sum(), (p, y0))
    for a, d in zip(grads(gradient="adjoint", adjoint_params=(p,)), grads()):
        torch.testing.assert_close(a, d, rtol=1e-6, atol=0)


def test_a_first_step_of_the_users_starts_the_backward_solve(monkeypatch):
    firsts = []
    loop = integrate.integrate

    def spy(problem, stepper, cfg, hooks=None):
        firsts.append(cfg.first_step)
        return loop(problem, stepper, cfg, hooks)
    monkeypatch.setattr(run_module, "integrate", spy)
    p = torch.tensor([0.7, 1.3], dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    sol = odeflow.solve(_f(p), y0, torch.linspace(0, 5, 21, dtype=F64), gradient="adjoint",
                        adjoint_params=(p,), adjoint_options={"first_step": 1e-3})
    sol.ys.pow(2).sum().backward()
    assert firsts == [None, 1e-3]


def test_fixed_grid_restarts_at_step_t():
    """A fixed grid lands on each ``step_t`` time and starts its ``step_size`` grid again
    from there (so a backward rk4 solve takes each output interval's own grid)."""
    def problem(t, **opts):
        return make_problem(lambda t, y: -y, torch.ones(2, 1, dtype=F64), t, 1e-6, 1e-6,
                            {"per_sample": True, "step_size": 0.4, **opts})
    spec = get_method("rk4")
    t = torch.tensor([[0.0, 2.0], [1.0, 2.0]], dtype=F64)
    grid = loop_config(problem(t, step_t=[0.5, 1.5]), spec, None).stops
    expect = [[0.4, 0.5, 0.9, 1.3, 1.5, 1.9, 2.0], [1.4, 1.5, 1.9, 2.0]]
    for row, want in zip(grid, expect):
        assert row[torch.isfinite(row)].tolist() == pytest.approx(want, abs=1e-15)
    joint = make_problem(lambda t, y: -y, torch.ones(1, dtype=F64), t[0], 1e-6, 1e-6,
                         {"step_size": 0.4, "step_t": [0.5, 1.5]})
    assert loop_config(joint, spec, None).stops == pytest.approx(expect[0], abs=1e-15)


def test_fixed_grid_adjoint_takes_each_intervals_own_grid():
    """rk4 with a step size: the backward solve's grid restarts at each output time (the
    intervals here are not multiples of h); adjoint and backprop through the forward's grid
    are both O(h^4) from the exact gradient."""
    p = torch.tensor([0.7, 1.3], dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.35, 1.0, 1.1, 2.0], dtype=F64)
    kw = dict(method="rk4", options={"step_size": 0.01})
    direct = _grads(p, y0, t, **kw)
    adjoint = _grads(p, y0, t, gradient="adjoint", adjoint_params=(p,), **kw)
    for a, d in zip(adjoint, direct):
        torch.testing.assert_close(a, d, rtol=1e-8, atol=0)


def test_scipy_forward_adjoint_defaults_to_dopri5_and_names_the_limit():
    pytest.importorskip("scipy")
    p = torch.tensor([0.7, 1.3], dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    t = torch.linspace(0, 2, 5, dtype=F64)
    kw = dict(method="scipy_solver", options={"solver": "RK45"})
    direct = _grads(p, y0, t, method="dopri5")
    adjoint = _grads(p, y0, t, gradient="adjoint", adjoint_params=(p,), **kw)
    for a, d in zip(adjoint, direct):
        torch.testing.assert_close(a, d, rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="adjoint_method='scipy_solver' is not supported"):
        odeflow.solve(_f(p), y0, t, gradient="adjoint", adjoint_params=(p,),
                      adjoint_method="scipy_solver", **kw)


def test_an_output_time_on_a_jump_restarts_the_derivative_on_the_backward_side():
    """``func`` jumps at t = 1 (``t >= 1``), an output time and a ``jump_t``: after the
    backward solve's state jump there, the derivative it starts from is evaluated one-sided,
    on the side it goes on to (t < 1; never at t = 1 itself, the other branch), and the
    gradient is backprop's."""
    p = torch.tensor(0.7, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0], dtype=F64)
    seen: list[float] = []

    def f(t, y):
        seen.append(float(t))
        return -p * y * (1.0 + (t >= 1.0).to(y.dtype))

    def solve(**kw):
        return odeflow.solve(f, y0, t, rtol=1e-10, atol=1e-12, options={"jump_t": [1.0]}, **kw)
    sol = solve(gradient="adjoint", adjoint_params=(p,))
    seen.clear()
    adjoint = torch.autograd.grad(sol.ys.pow(2).sum(), (p, y0))
    assert seen and 1.0 not in seen  # (the backward's evaluations)
    direct = torch.autograd.grad(solve().ys.pow(2).sum(), (p, y0))
    for a, d in zip(adjoint, direct):
        torch.testing.assert_close(a, d, rtol=1e-7, atol=0)
