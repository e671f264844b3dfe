"""A per-sample fixed-grid solve that becomes non-finite reports what a joint solve of the
failing sample reports: the first output time at which it is non-finite (not the end of the
grid) and the fixed-grid advice."""

from __future__ import annotations

import pytest
import torch

import odeflow

F64 = torch.float64


def _blow_up(sign: float):
    # y' = sign * y^2: from y = 2 the solution is singular half a time unit away.
    return lambda t, y: sign * y * y


def _error(**kwargs) -> odeflow.SolveError:
    with pytest.raises(odeflow.SolveError) as info:
        odeflow.solve(**kwargs)
    return info.value


@pytest.mark.parametrize("forward", [True, False], ids=["increasing", "decreasing"])
def test_per_sample_fixed_grid_failure_names_the_first_non_finite_output(forward):
    t = torch.linspace(0.0, 1.0, 5, dtype=F64)
    if not forward:
        t = t.flip(0)
    func = _blow_up(1.0 if forward else -1.0)
    y0 = torch.tensor([[0.1], [2.0]], dtype=F64)  # sample 1 blows up, sample 0 does not
    opts = {"step_size": 0.01}
    joint = _error(func=func, y0=y0[1], t=t, method="rk4", options=opts)
    lanes = _error(func=func, y0=y0, t=t, method="rk4", options={**opts, "per_sample": True})
    assert lanes.t == joint.t and joint.t != t[-1].item()
    assert "The fixed-grid solution became non-finite by this output time" in str(lanes)
    sol = odeflow.solve(func, y0, t, method="rk4", options={**opts, "per_sample": True},
                        throw=False)
    first_nan = int((t == joint.t).nonzero())
    assert torch.isnan(sol.ys[first_nan:, 1]).all() and torch.isfinite(sol.ys[:first_nan, 1]).all()
    assert torch.isfinite(sol.ys[:, 0]).all()


def test_evaluate_without_dense_output_says_how_to_keep_one():
    sol = odeflow.solve(lambda t, y: -y, torch.ones(2, dtype=F64),
                        torch.linspace(0.0, 1.0, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"dense=True"):
        sol.evaluate(0.5)
