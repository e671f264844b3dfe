"""Implicit methods on a vector field that reads neither ``y`` nor the parameters.

``dy/dt = cos(t)`` and ``dy/dt = 2`` have the Jacobian ``∂f/∂y = 0``: its autodiff must
give zeros instead of asking autograd for the gradient of a tensor that has none, and the
interpolating adjoint after an implicit forward must pass zero through. Checked against
the closed forms ``y0 + sin(t)`` / ``y0 + 2 t``, ``dy(T)/dy0 = 1`` and a zero gradient for a
parameter the field does not use.
"""

from __future__ import annotations

import math

import pytest
import torch

import odeflow

F64 = torch.float64
T = torch.tensor([0.0, 1.0], dtype=F64)
METHODS = ["kvaerno5", "kvaerno3", "trbdf2", "rodas5p", "rodas4", "auto"]
FIELDS = {"cos_t": (lambda t: torch.cos(t), math.sin(1.0)),
          "constant": (lambda t: torch.full_like(t, 2.0), 2.0)}


def _solve(method, field, per_sample, gradient, params=()):
    rate, _ = FIELDS[field]
    y0 = torch.tensor([[1.0], [0.5]], dtype=F64, requires_grad=True)
    if per_sample:
        def f(t, y):
            return rate(t)[:, None]
    else:
        def f(t, y):
            return rate(t).expand(2, 1)
    sol = odeflow.solve(f, y0, T, method=method, rtol=1e-6, atol=1e-6, gradient=gradient,
                        adjoint_params=params, options={"per_sample": per_sample})
    return y0, sol


@pytest.mark.parametrize("field", sorted(FIELDS))
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("method", METHODS)
def test_solution_and_gradient_of_a_field_free_of_y(method, per_sample, field):
    gradients = ["direct", "adjoint"] + ([] if method == "auto" else ["checkpoint"])
    for gradient in gradients:
        y0, sol = _solve(method, field, per_sample, gradient)
        exact = y0.detach() + FIELDS[field][1]
        assert (sol.ys[-1] - exact).abs().max().item() < 1e-4, gradient
        (grad,) = torch.autograd.grad(sol.ys[-1].sum(), y0)
        assert (grad - 1.0).abs().max().item() < 1e-12, gradient


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("method", ["kvaerno5", "rodas5p"])
def test_unused_parameter_gets_a_zero_adjoint_gradient(method, per_sample):
    q = torch.tensor(3.0, dtype=F64, requires_grad=True)
    y0, sol = _solve(method, "cos_t", per_sample, "adjoint", params=(q,))
    g_y0, g_q = torch.autograd.grad(sol.ys[-1].sum(), (y0, q))
    assert (g_y0 - 1.0).abs().max().item() < 1e-12
    assert g_q.item() == 0.0


@pytest.mark.parametrize("linear_solver", ["dense", "krylov"])
@pytest.mark.parametrize("method", ["kvaerno5", "trbdf2"])
def test_parameter_gradient_of_a_field_free_of_y(method, linear_solver):
    """``dy/dt = p cos(t)``: ``y(1) = y0 + p sin(1)``, ``dy(1)/dy0 = 1`` (1e-12) and
    ``dy(1)/dp = sin(1)`` (1e-4, the solve's tolerance), by every gradient mode; with
    Krylov the step's gradient solves with the transposed Jacobian, zero here."""
    for gradient in ("direct", "adjoint", "checkpoint"):
        p = torch.tensor(2.0, dtype=F64, requires_grad=True)
        y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
        sol = odeflow.solve(lambda t, y, p=p: p * torch.cos(t).expand(2), y0, T, method=method,
                            rtol=1e-6, atol=1e-6, gradient=gradient, adjoint_params=(p,),
                            options={"linear_solver": linear_solver})
        assert (sol.ys[-1] - y0.detach() - 2 * math.sin(1.0)).abs().max().item() < 1e-4
        g_y0, g_p = torch.autograd.grad(sol.ys[-1].sum(), (y0, p))
        assert (g_y0 - 1.0).abs().max().item() < 1e-12, gradient
        assert abs(g_p.item() - 2 * math.sin(1.0)) < 2e-4, gradient  # two components
