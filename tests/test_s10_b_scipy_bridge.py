"""The SciPy bridge's joint and per-sample solves share one path: a solve that reaches no
output time before it stops (SciPy then returns its outputs as empty lists) keeps ``y0`` at
``t0`` in both forms (the joint one raised ``AttributeError`` on the empty list), also when
SciPy is halted before its first step (RK45's first step size probes ``func`` past ``t0``;
it raised ``AttributeError``: no stopping point recorded yet)."""

from __future__ import annotations

import math

import pytest
import torch

import odeflow
from odeflow import Status

pytest.importorskip("scipy")
F64 = torch.float64
T = torch.tensor([0.0, 1.0, 2.0], dtype=F64)


def _nan_after_t0(t, y):  # finite at t0 only: LSODA's first step sees nan and is halted
    t = torch.as_tensor(t, dtype=F64).reshape(-1, *([1] * (y.ndim - 1)))
    return torch.where(t > 0, math.nan, 1.0) * y


@pytest.mark.parametrize("solver", ["LSODA", "RK45"])
def test_joint_solve_stopped_before_any_output_keeps_y0(solver):
    sol = odeflow.solve(_nan_after_t0, torch.ones(2, dtype=F64), T, method="scipy_solver",
                        options={"solver": solver}, throw=False)
    assert sol.stats.status == Status.NONFINITE
    assert sol.ys[0].tolist() == [1.0, 1.0] and bool(sol.ys[1:].isnan().all())


@pytest.mark.parametrize("solver", ["LSODA", "RK45"])
def test_per_sample_solve_stopped_before_any_output_keeps_y0(solver):
    sol = odeflow.solve(_nan_after_t0, torch.ones(2, 2, dtype=F64), T, method="scipy_solver",
                        options={"solver": solver, "per_sample": True}, throw=False)
    assert sol.sample_stats.status == [Status.NONFINITE] * 2
    assert sol.ys[0].tolist() == [[1.0, 1.0]] * 2 and bool(sol.ys[1:].isnan().all())
