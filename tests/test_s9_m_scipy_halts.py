"""The SciPy bridge stops what SciPy would not: a derivative that is no longer finite (LSODA,
the default, retries forever on ``y' = y²`` past its blow-up at ``t = 1``) and more accepted
steps than ``options["max_num_steps"]``; the outputs reached before stand."""

from __future__ import annotations

import math

import pytest
import torch

import odeflow
from odeflow import Status

F64 = torch.float64
T = torch.tensor([0.0, 0.5, 2.0], dtype=F64)


@pytest.mark.parametrize("solver", ["LSODA", "RK45", "Radau"])
def test_a_blow_up_stops_and_keeps_the_outputs_reached(solver):
    sol = odeflow.solve(lambda t, y: y * y, torch.tensor([1.0], dtype=F64), T,
                        method="scipy_solver", options={"solver": solver}, throw=False)
    assert sol.stats.status in (Status.NONFINITE, Status.STEP_SIZE_UNDERFLOW)
    assert abs(float(sol.ys[1, 0]) - 2.0) < 1e-5  # y = 1 / (1 - t)
    assert math.isnan(float(sol.ys[2, 0]))
    with pytest.raises(odeflow.SolveError) as err:
        odeflow.solve(lambda t, y: y * y, torch.tensor([1.0], dtype=F64), T,
                      method="scipy_solver", options={"solver": solver})
    assert 0.99 < err.value.t < 1.01  # (RK45 accepts a step just past the blow-up)
    assert "fixed-grid" not in str(err.value)


def test_lsoda_blow_up_is_nonfinite_per_sample_too():
    y0 = torch.tensor([[1.0], [0.1]], dtype=F64)
    sol = odeflow.solve(lambda t, y: y * y, y0, T, method="scipy_solver",
                        options={"per_sample": True}, throw=False)
    assert sol.sample_stats.status[0] == Status.NONFINITE
    assert sol.sample_stats.status[1] == Status.SUCCESS
    torch.testing.assert_close(sol.ys[:, 1, 0], 0.1 / (1 - 0.1 * T), rtol=1e-6, atol=0)
    assert abs(float(sol.ys[1, 0, 0]) - 2.0) < 1e-5 and math.isnan(float(sol.ys[2, 0, 0]))


@pytest.mark.parametrize("solver", ["LSODA", "RK45", "BDF"])
def test_max_num_steps_stops_scipy(solver):
    with pytest.raises(odeflow.SolveError) as err:
        odeflow.solve(lambda t, y: -y, torch.tensor([1.0], dtype=F64),
                      torch.tensor([0.0, 1e4], dtype=F64), method="scipy_solver",
                      options={"solver": solver, "max_num_steps": 10})
    assert err.value.status == Status.MAX_STEPS_REACHED
    assert "max_num_steps" in str(err.value) and "SciPy said" not in str(err.value)
    sol = odeflow.solve(lambda t, y: -y, torch.tensor([1.0], dtype=F64),
                        torch.tensor([0.0, 1.0], dtype=F64), method="scipy_solver",
                        options={"solver": solver, "max_num_steps": 10_000})
    torch.testing.assert_close(sol.ys[-1], torch.tensor([math.exp(-1)], dtype=F64),
                               rtol=1e-5, atol=0)
