"""The SciPy bridge returns its failure like the loop does (a failed status in the loop's
result), so the pipeline's one failure handling applies; the failure time is where SciPy
stopped, not the last output time it reached."""

import math

import pytest
import torch

import odeflow
from odeflow import SolveError, Status

pytest.importorskip("scipy")
F64 = torch.float64


def test_per_sample_failure_time_is_where_scipy_stopped():
    """Sample 0 (``y' = y²`` from 1) blows up at t = 1, sample 1 (from 0.25) at t = 4,
    after the last output time: the error names t = 1 (the last output sample 0 reached
    is 0.5), sample 1 is unaffected."""
    t = torch.tensor([0.0, 0.5, 2.0], dtype=F64)
    y0 = torch.tensor([[1.0], [0.25]], dtype=F64)
    opts = {"solver": "RK45", "per_sample": True}
    sol = odeflow.solve(lambda t, y: y * y, y0, t, method="scipy_solver", rtol=1e-9,
                        atol=1e-12, options=opts, throw=False)
    assert sol.sample_stats.status == [Status.STEP_SIZE_UNDERFLOW, Status.SUCCESS]
    assert abs(sol.ys[1, 0, 0].item() - 2.0) < 1e-6 and math.isnan(sol.ys[2, 0, 0].item())
    assert abs(sol.ys[2, 1, 0].item() - 0.5) < 1e-6
    with pytest.raises(SolveError, match="sample 0") as e:
        odeflow.solve(lambda t, y: y * y, y0, t, method="scipy_solver", options=opts)
    assert abs(e.value.t - 1.0) < 1e-4


def test_joint_failure_keeps_scipys_message_with_throw_false():
    """``throw=False`` and ``throw=True`` describe the failure alike: the time where SciPy
    stopped and SciPy's message."""
    t = torch.tensor([0.0, 0.5, 2.0], dtype=F64)
    kw = dict(method="scipy_solver", options={"solver": "Radau"})
    sol = odeflow.solve(lambda t, y: y * y, torch.ones(1, dtype=F64), t, throw=False, **kw)
    with pytest.raises(SolveError) as e:
        odeflow.solve(lambda t, y: y * y, torch.ones(1, dtype=F64), t, **kw)
    assert abs(e.value.t - 1.0) < 1e-4
    assert sol.stats.message == e.value.stats.message
    assert f"t={e.value.t!r}. SciPy said: " in sol.stats.message
