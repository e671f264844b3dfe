"""A per-sample event search on a fixed grid without an end time (``odeint_event``'s default
t1 = inf): the grid is built up to ``max_num_steps`` steps (the search cannot take more),
not over an infinite span (config.py). It crashed building ~1e301 grid points before."""

from __future__ import annotations

import math

import pytest
import torch

import odeflow

F64 = torch.float64


def test_unbounded_per_sample_fixed_grid_search_finds_each_samples_event():
    y0 = torch.tensor([[1.0], [2.0]], dtype=F64)
    kw = dict(event_fn=lambda t, y: y[..., 0] - 0.5, method="rk4",
              options={"per_sample": True, "step_size": 0.01})
    t_event, _ = odeflow.odeint_event(lambda t, y: -y, y0, torch.tensor(0.0, dtype=F64), **kw)
    bounded = odeflow.solve(lambda t, y: -y, y0, torch.tensor([0.0, 10.0], dtype=F64), **kw)
    assert torch.equal(t_event, bounded.event_t)  # the same grid, the same location
    # y = y0 exp(-t) crosses 0.5 at log(2 y0); the crossing is located on the grid's linear
    # interpolant (options["interp"]), within h^2/8 max|y''| = 1.25e-5 y of the exact time
    exact = torch.log(2 * y0[:, 0])
    assert (t_event - exact).abs().max().item() < 2.5e-5


def test_unbounded_per_sample_fixed_grid_search_without_a_crossing_stops_at_max_steps():
    y0 = torch.tensor([[1.0], [2.0]], dtype=F64)
    with pytest.raises(odeflow.SolveError, match="max_num_steps") as e:
        odeflow.odeint_event(lambda t, y: -y, y0, torch.tensor(0.0, dtype=F64),
                             event_fn=lambda t, y: y[..., 0] + 1.0, method="rk4",
                             options={"per_sample": True, "step_size": 0.01,
                                      "max_num_steps": 50})
    assert math.isclose(e.value.t, 0.5, rel_tol=1e-12)  # 50 steps of 0.01
