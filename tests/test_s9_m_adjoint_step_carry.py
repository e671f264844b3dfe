"""A joint adjoint's backward solve carries its step size from one output interval to the
next (issue 17: no starting-step probe per interval): one probe per backward pass, fewer
steps, the same gradient to the solve's tolerance."""

from __future__ import annotations

import torch

import odeflow
from odeflow import integrate

F64 = torch.float64


def _solve(p, **kw):
    def f(t, y):
        return torch.stack((-0.3 * y[0] * p[0] + y[1], -y[0] * p[1] - 0.2 * y[1]))
    return odeflow.solve(f, torch.tensor([1.0, 0.5], dtype=F64),
                         torch.linspace(0, 5, 21, dtype=F64), rtol=1e-8, atol=1e-10, **kw)


def test_one_starting_step_probe_per_backward_pass(monkeypatch):
    probes = []
    probe = integrate.initial_step
    monkeypatch.setattr(integrate, "initial_step", lambda *a: probes.append(1) or probe(*a))
    p = torch.tensor([0.7, 1.3], dtype=F64, requires_grad=True)
    sol = _solve(p, gradient="adjoint", adjoint_params=(p,))
    assert len(probes) == 1  # the forward's
    sol.ys.pow(2).sum().backward()
    assert len(probes) == 2  # and the first backward interval's, of 20
    adjoint = p.grad.clone()
    p.grad = None
    _solve(p).ys.pow(2).sum().backward()
    torch.testing.assert_close(adjoint, p.grad, rtol=1e-6, atol=0)


def test_a_first_step_of_the_users_is_kept_on_every_interval(monkeypatch):
    firsts = []
    run = integrate.integrate

    def spy(problem, stepper, cfg, hooks=None):
        firsts.append(cfg.first_step)
        return run(problem, stepper, cfg, hooks)
    monkeypatch.setattr(integrate, "integrate", spy)
    import odeflow.run as run_module
    monkeypatch.setattr(run_module, "integrate", spy)
    p = torch.tensor([0.7, 1.3], dtype=F64, requires_grad=True)
    sol = _solve(p, gradient="adjoint", adjoint_params=(p,),
                 adjoint_options={"first_step": 1e-3})
    sol.ys.pow(2).sum().backward()
    assert firsts[1:] == [1e-3] * 20
