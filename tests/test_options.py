"""torchdiffeq's options, callbacks and the step-size controllers."""

from __future__ import annotations

import math

import pytest
import torch

import odeflow
from odeflow.controllers import PIDController

from .problems import exp_rate, van_der_pol

F64 = torch.float64


def test_first_step_and_max_step_are_honoured():
    steps = []

    class F(torch.nn.Module):
        def forward(self, t, y):
            return -y

        def callback_accept_step(self, t0, y0, dt):
            steps.append(float(dt))

    odeflow.odeint(F(), torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                   options={"first_step": 1e-3, "max_step": 0.05})
    assert steps[0] == pytest.approx(1e-3)
    assert max(steps) <= 0.05 + 1e-15


def test_min_step_forces_progress():
    sol = odeflow.solve(van_der_pol(1.0), torch.tensor([2.0, 0.0], dtype=F64),
                        torch.tensor([0.0, 2.0], dtype=F64), rtol=1e-12, atol=1e-12,
                        options={"min_step": 0.1})
    assert sol.stats.n_steps <= 21 and sol.stats.n_rejected == 0


def test_callbacks_are_called_with_user_structure():
    calls = {"step": 0, "accept": 0, "reject": 0}

    class F(torch.nn.Module):
        def forward(self, t, y):
            return torch.stack([y[1], 5 * (1 - y[0] ** 2) * y[1] - y[0]])

        def callback_step(self, t0, y0, dt):
            assert isinstance(t0, torch.Tensor) and y0.shape == (2,)
            calls["step"] += 1

        def callback_accept_step(self, t0, y0, dt):
            calls["accept"] += 1

        def callback_reject_step(self, t0, y0, dt):
            calls["reject"] += 1

    sol = odeflow.solve(F(), torch.tensor([2.0, 0.0], dtype=F64),
                        torch.tensor([0.0, 5.0], dtype=F64), rtol=1e-6, atol=1e-6)
    assert calls["step"] == sol.stats.n_steps
    assert calls["accept"] == sol.stats.n_accepted
    assert calls["reject"] == sol.stats.n_rejected > 0


def test_step_t_and_jump_t_are_landed_on():
    visited = []

    class F(torch.nn.Module):
        def forward(self, t, y):
            # A jump in the forcing at t = 0.5.
            return torch.where(t < 0.5, torch.ones_like(y), -torch.ones_like(y))

        def callback_accept_step(self, t0, y0, dt):
            visited.append(float(t0 + dt))

    ys = odeflow.odeint(F(), torch.zeros(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                        options={"jump_t": torch.tensor([0.5]), "step_t": [0.25]})
    assert 0.5 in [pytest.approx(v, abs=1e-15) for v in visited]
    assert 0.25 in [pytest.approx(v, abs=1e-15) for v in visited]
    # y = t up to 0.5, then 1 - t: exact because every step is smooth.
    assert ys[-1].item() == pytest.approx(0.0, abs=1e-12)


def test_jump_t_reduces_work_on_a_discontinuity():
    def f(t, y):
        return torch.where(t < 0.5, torch.ones_like(y), -torch.ones_like(y))

    y0, t = torch.zeros(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    odeflow.odeint(f, y0, t, rtol=1e-10, atol=1e-10)
    without = odeflow.last_stats().nfe
    odeflow.odeint(f, y0, t, rtol=1e-10, atol=1e-10, options={"jump_t": [0.5]})
    assert odeflow.last_stats().nfe < without


@pytest.mark.parametrize("perturb, expected", [(False, 2.0), (True, 1.0)])
def test_perturb_evaluates_on_the_right_side_of_grid_points(perturb, expected):
    # f is 1 at t < 1 and 2 from t = 1 on; one euler step from t=0 to 1 then 1 to 2.
    def f(t, y):
        return torch.where(t < 1.0, torch.ones_like(y), 2 * torch.ones_like(y))

    ys = odeflow.odeint(f, torch.zeros(1, dtype=F64), torch.tensor([1.0, 0.0], dtype=F64),
                        method="euler", options={"perturb": perturb})
    # Backwards from t=1: the step's first stage is at t=1, just below it with perturb.
    assert ys[-1].item() == pytest.approx(-expected)


def test_grid_constructor_and_cubic_interp():
    prob = exp_rate()
    t = torch.tensor([0.0, 0.333, 1.0], dtype=F64)

    def grid(func, y0, t):
        return torch.linspace(float(t[0]), float(t[-1]), 101, dtype=F64)

    lin = odeflow.odeint(prob.func, prob.y0, t, method="rk4", options={"grid_constructor": grid})
    cub = odeflow.odeint(prob.func, prob.y0, t, method="rk4",
                         options={"grid_constructor": grid, "interp": "cubic"})
    exact = prob.y_exact(t)
    assert odeflow.last_stats().n_steps == 100
    err_lin = (lin[1] - exact[1]).abs().item()
    err_cub = (cub[1] - exact[1]).abs().item()
    assert err_cub < 1e-8 < err_lin


def test_bad_grid_constructor():
    with pytest.raises(ValueError, match="grid from t\\[0\\]"):
        odeflow.odeint(lambda t, y: -y, torch.ones(1), torch.tensor([0.0, 1.0]), method="rk4",
                       options={"grid_constructor": lambda f, y, t: torch.tensor([0.0, 0.5])})


def test_custom_norm_receives_user_structure():
    seen = []

    def norm(x):
        seen.append(tuple(p.shape for p in x))
        return max(p.abs().max() for p in x)

    odeflow.odeint(lambda t, s: (-s[0], -s[1]), (torch.ones(2, 2), torch.ones(3)),
                   torch.tensor([0.0, 1.0]), options={"norm": norm})
    assert seen and all(s == ((2, 2), (3,)) for s in seen)


@pytest.mark.parametrize("controller", ["integral", "pi", "pid",
                                        PIDController(beta1=0.6, beta2=-0.2)])
def test_controllers_reach_the_tolerance(controller):
    f, y0 = van_der_pol(5.0), torch.tensor([2.0, 0.0], dtype=F64)
    t = torch.tensor([0.0, 10.0], dtype=F64)
    from .problems import scipy_reference

    ref = scipy_reference(f, y0, 10.0, t_eval=[0.0, 10.0])[-1]
    sol = odeflow.solve(f, y0, t, rtol=1e-8, atol=1e-8, options={"controller": controller})
    assert (sol.ys[-1] - ref).abs().max().item() < 1e-5
    assert sol.stats.status == odeflow.Status.SUCCESS


def test_pid_rejects_fewer_steps_than_integral_on_van_der_pol():
    f, y0 = van_der_pol(20.0), torch.tensor([2.0, 0.0], dtype=F64)
    t = torch.tensor([0.0, 40.0], dtype=F64)
    rejected = {}
    for name in ("integral", "pid"):
        sol = odeflow.solve(f, y0, t, rtol=1e-6, atol=1e-6, options={"controller": name})
        rejected[name] = sol.stats.n_rejected
    assert rejected["pid"] < rejected["integral"], rejected


def test_controller_proposal_rules():
    c = PIDController()
    dt, _ = c.propose(0.1, 0.0, True, 5, c.init())
    assert dt == pytest.approx(1.0)  # ifactor on a zero error
    dt, _ = c.propose(0.1, 1e6, False, 5, c.init())
    assert dt == pytest.approx(0.02)  # dfactor floor on rejection
    dt, _ = c.propose(0.1, 0.9, True, 5, c.init())
    assert dt >= 0.1  # accepted steps never shrink (torchdiffeq's rule)
    dt, _ = c.propose(0.1, math.nan, False, 5, c.init())
    assert dt == pytest.approx(0.02)


def test_initial_step_matches_hairer_on_a_known_case():
    from odeflow.controllers import initial_step
    from odeflow.norms import rms_norm

    y0 = torch.tensor([1.0], dtype=F64)
    f0 = -y0

    def f(t, y):
        return -y

    h = initial_step(f, 0.0, y0, f0, 4, 1e-6, 1e-6, rms_norm)
    # d0 = d1 = 1/(2e-6) -> h0 = 0.01; d2 = 0 -> h1 = (0.01/d1)^(1/5); h = min(1, h1)
    d1 = 1 / 2e-6
    assert h == pytest.approx(min(100 * 0.01, (0.01 / d1) ** 0.2))
