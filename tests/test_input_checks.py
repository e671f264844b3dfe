"""No silent answers on the newer surface: each misuse or failure names its cause and fix."""

from __future__ import annotations

import math

import pytest
import torch

import odeflow
from odeflow import linalg

D = torch.float64


# --- a dense Jacobian too large for memory -------------------------------------------------

def test_large_state_with_dense_linear_solver_is_refused_before_building(monkeypatch):
    # Lower the threshold so that the test needs no memory: n = 64 in float64 is 32 KiB.
    monkeypatch.setattr(linalg, "DENSE_MAX_BYTES", 64 * 64 * 8 - 1)
    calls = []

    def func(t, y):
        calls.append(y.requires_grad)
        return -y

    with pytest.raises(ValueError, match=r"n = 64 elements.*64 x 64 Jacobian.*n <= 63 in "
                                         r"torch.float64.*linear_solver='krylov'"):
        odeflow.odeint(func, torch.ones(64, dtype=D), torch.tensor([0.0, 1.0], dtype=D),
                       method="rodas5p")
    assert not any(calls)  # no Jacobian build was started (only plain evaluations)
    # the Krylov path takes the same state
    ys = odeflow.odeint(func, torch.ones(64, dtype=D), torch.tensor([0.0, 1.0], dtype=D),
                        method="rodas5p", options=dict(linear_solver="krylov"))
    torch.testing.assert_close(ys[-1], torch.full((64,), math.exp(-1), dtype=D), rtol=1e-5,
                               atol=0)


def test_dense_size_threshold_in_float32_and_float64():
    linalg.check_dense_size(11585, torch.float64)
    linalg.check_dense_size(16384, torch.float32)
    with pytest.raises(ValueError, match="n <= 11585 in torch.float64"):
        linalg.check_dense_size(11586, torch.float64)
    with pytest.raises(ValueError, match=r"n <= 8192 per sample of a batch of 4"):
        linalg.check_dense_size(8200, torch.float32, batch=4)


# --- half precision with an implicit method ------------------------------------------------

@pytest.mark.parametrize("method", ["rodas5p", "kvaerno5", "trbdf2", "auto"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_with_implicit_method_names_method_dtype_and_fix(method, dtype):
    with pytest.raises(TypeError, match=rf"method='{method}' is implicit.*{dtype}.*float32 or "
                                        r"float64.*'dopri5'"):
        odeflow.odeint(lambda t, y: -y, torch.ones(2, dtype=dtype),
                       torch.tensor([0.0, 1.0]), method=method)


def test_half_precision_explicit_method_works_as_the_message_says():
    ys = odeflow.odeint(lambda t, y: -y, torch.ones(2, dtype=torch.float16),
                        torch.tensor([0.0, 1.0]), rtol=1e-3, atol=1e-3)
    assert ys.dtype == torch.float16
    torch.testing.assert_close(ys[-1].float(), torch.full((2,), math.exp(-1)), rtol=1e-2,
                               atol=0)


# --- a user Jacobian with NaN; GMRES that does not converge ------------------------------

def test_nan_user_jacobian_is_reported_as_the_jacobian():
    def jacobian(t, y):
        return torch.full((2, 2), float("nan"), dtype=D)

    with pytest.raises(ValueError, match=r"options\['jacobian'\] returned non-finite values "
                                         r"at t=0.0"):
        odeflow.odeint(lambda t, y: -y, torch.ones(2, dtype=D),
                       torch.tensor([0.0, 1.0], dtype=D), method="rodas5p",
                       options=dict(jacobian=jacobian))


def test_gmres_stopping_at_max_iters_is_counted():
    # A stiff, non-normal 20-dim linear system: 2 GMRES products cannot solve I - hγJ.
    n = 20
    A = -torch.diag(torch.logspace(0, 3, n, dtype=D)) + torch.diag(torch.ones(n - 1, dtype=D), 1)
    args = (lambda t, y: A @ y, torch.ones(n, dtype=D), torch.tensor([0.0, 0.05], dtype=D))
    starved = odeflow.solve(*args, method="rodas5p", throw=False,
                            options=dict(linear_solver="krylov", krylov_max_iters=2,
                                         max_num_steps=20)).stats
    assert starved.n_linear_failures > 0
    odeflow.odeint(*args, method="rodas5p", options=dict(linear_solver="krylov"))
    assert odeflow.last_stats().n_linear_failures == 0
