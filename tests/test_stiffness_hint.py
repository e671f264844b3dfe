"""An explicit solve that runs into stiffness says so, and names the methods to try."""

from __future__ import annotations

import warnings

import pytest
import torch

import odeflow

F64 = torch.float64


def _robertson(t, y):
    k1, k2, k3 = 0.04, 3e7, 1e4
    return torch.stack([-k1 * y[0] + k3 * y[1] * y[2],
                        k1 * y[0] - k2 * y[1] ** 2 - k3 * y[1] * y[2], k2 * y[1] ** 2])


def test_a_stiff_explicit_solve_warns_early_and_its_error_names_implicit_methods():
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    t = torch.tensor([0.0, 1e5], dtype=F64)
    with pytest.warns(RuntimeWarning, match=r"after 5000 steps.*looks stiff.*'auto'"):
        with pytest.raises(odeflow.SolveError, match=r"looks stiff.*method='rodas5p'"):
            odeflow.odeint(_robertson, y0, t, rtol=1e-6, atol=1e-10,
                           options=dict(max_num_steps=5200))


def test_a_long_non_stiff_solve_gets_no_stiffness_warning():
    # 5000+ accuracy-limited steps of an oscillator: h·ρ stays far below the boundary.
    t = torch.tensor([0.0, 2000.0], dtype=F64)
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = odeflow.solve(lambda t, y: torch.stack([y[1], -y[0]]), y0, t, rtol=1e-9,
                            atol=1e-9)
    assert sol.stats.n_steps > 5000
    with pytest.raises(odeflow.SolveError) as info:
        odeflow.solve(lambda t, y: torch.stack([y[1], -y[0]]), y0, t, rtol=1e-9, atol=1e-9,
                      options=dict(max_num_steps=100))
    assert "stiff" not in str(info.value).split("Raise")[1].replace("a stiff problem may", "")
