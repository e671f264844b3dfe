"""Per sample, lanes that failed forward get no gradient, in every gradient mode alike."""

import math

import pytest
import torch

import odeflow
from odeflow.sensitivity import first_good_lane
from odeflow.stats import Status

F64 = torch.float64
PS = {"per_sample": True}


def test_first_good_lane():
    assert first_good_lane(torch.tensor([True, False, False])) == 1
    assert first_good_lane(torch.tensor([False, True])) == 0
    assert first_good_lane(torch.tensor([True, True])) is None


@pytest.mark.parametrize("method", ["dopri5", "kvaerno5"])
@pytest.mark.parametrize("mode", ["checkpoint", "adjoint"])
def test_every_sample_failing_at_t0_gives_zero_gradients(method, mode):
    # sqrt of a negative y0: every sample is NONFINITE at t0, so no step is recorded. The
    # checkpoint replay had nothing to replay and gave p no gradient at all (autograd.grad
    # raised "appears to not have been used in the graph"); the adjoint gave zeros.
    p = torch.tensor(1.0, dtype=F64, requires_grad=True)
    y0 = torch.tensor([[-1.0], [-2.0]], dtype=F64, requires_grad=True)
    sol = odeflow.solve(lambda t, y: -p * torch.sqrt(y), y0, torch.tensor([0.0, 1.0], dtype=F64),
                        method=method, gradient=mode, adjoint_params=(p,), options=PS,
                        throw=False)
    assert sol.sample_stats.status == [Status.NONFINITE] * 2
    g_y0, g_p = torch.autograd.grad(sol.ys.nan_to_num().sum(), (y0, p))
    assert torch.equal(g_y0, torch.zeros_like(y0)) and g_p.item() == 0.0


@pytest.mark.parametrize("mode", ["checkpoint", "adjoint"])
def test_every_sample_failing_later_gives_zero_gradients(mode):
    w = torch.tensor(0.7, dtype=F64, requires_grad=True)

    def f(t, y):
        return -w * y + torch.where(t > 0.5, math.nan, 0.0)[:, None]

    y0 = torch.tensor([[1.0], [2.0]], dtype=F64, requires_grad=True)
    sol = odeflow.solve(f, y0, torch.tensor([0.0, 0.4, 1.0], dtype=F64), options=PS,
                        gradient=mode, adjoint_params=(w,), throw=False)
    assert sol.sample_stats.status == [Status.NONFINITE] * 2
    g_y0, g_w = torch.autograd.grad(sol.ys.nan_to_num().sum(), (y0, w))
    assert torch.equal(g_y0, torch.zeros_like(y0)) and g_w.item() == 0.0
