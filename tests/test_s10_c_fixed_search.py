"""A fixed-grid event search needs ``options['step_size']`` per sample too (it ran one step
from t0 to t1, missing the events inside, or failed obscurely for an unbounded search)."""

from __future__ import annotations

import math

import pytest
import torch

import odeflow

F64 = torch.float64
YB = torch.tensor([[1.0], [2.0]], dtype=F64)


@pytest.mark.parametrize("t1", [100.0, math.inf])
@pytest.mark.parametrize("per_sample", [False, True])
def test_fixed_grid_search_without_step_size_is_refused(t1, per_sample):
    y0 = YB if per_sample else YB[0]
    with pytest.raises(ValueError, match=r"event_fn with a fixed-grid method needs "
                                         r"options\['step_size'\]"):
        odeflow.solve(lambda t, y: -y, y0, torch.tensor([0.0, t1], dtype=F64),
                      event_fn=lambda t, y: y[..., 0] - 0.5, method="rk4",
                      options={"per_sample": per_sample})


def test_fixed_grid_search_per_sample_with_step_size_matches_lone_solves():
    def solve(y0, per_sample):
        return odeflow.solve(lambda t, y: -y, y0, torch.tensor([0.0, 100.0], dtype=F64),
                             event_fn=lambda t, y: y[..., 0] - 0.5, method="rk4",
                             options={"per_sample": per_sample, "step_size": 0.01}).event_t

    lone = torch.stack([solve(y0, False) for y0 in YB])
    assert torch.allclose(solve(YB, True), lone, rtol=0, atol=1e-12)
    assert torch.allclose(lone, torch.log(YB[:, 0] / 0.5), atol=1e-3)
