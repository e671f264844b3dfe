"""The SciPy bridge returns its failure like the loop does (a failed status in the loop's
result), so the one failure handling applies (the pipeline's, and the adjoint's check of its
backward solve); the failure time is where SciPy stopped, not the last output time reached."""

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


def test_adjoint_backward_failure_after_scipy_is_the_adjoints_error():
    """A backward solve after a SciPy forward (dopri5 by default: SciPy cannot restart its
    state at output times) that fails (``func`` is nan under autograd below t = 0.5, so only
    the backward solve sees it) raises the adjoint's error, which names the backward solve,
    at the end of its last accepted step, above t = 0.5."""
    p = torch.tensor(0.5, dtype=F64, requires_grad=True)

    def f(t, y):
        if torch.is_grad_enabled() and float(t) < 0.5:
            return y * p * math.nan
        return y * p

    ys = odeflow.odeint_adjoint(f, torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                                adjoint_params=(p,), method="scipy_solver",
                                options={"solver": "RK45"})
    with pytest.raises(SolveError, match="non-finite.*adjoint's backward solve") as e:
        ys[-1].sum().backward()
    assert e.value.status == Status.NONFINITE and 0.5 <= e.value.t < 1.0
    assert "func(t0, y0)" not in str(e.value)
