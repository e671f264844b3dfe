"""Per sample, the adjoint after an Adams or SciPy forward runs by default (its backward
solve takes ``rk4`` on the same grid, or ``dopri5``: the per-sample adjoint integrates its
parameter gradient over Runge–Kutta stages); a joint solve keeps the forward's method.
Gradients against the closed form of ``y' = -k y`` on each sample's own span."""

from __future__ import annotations

import pytest
import torch

import odeflow
from odeflow.solvers import get_method

F64 = torch.float64


@pytest.mark.parametrize("method,options,tol", [
    ("explicit_adams", {"step_size": 0.01}, 1e-7),  # order 4 at h = 0.01: ~3e-9 measured
    ("implicit_adams", {"step_size": 0.01}, 1e-7),
    ("scipy_solver", {}, 1e-8),
])
def test_per_sample_adjoint_after_a_multistep_or_scipy_forward(method, options, tol):
    k = torch.tensor([0.5, 1.5, 1.0], dtype=F64, requires_grad=True)
    y0 = torch.ones(3, 1, dtype=F64, requires_grad=True)
    t = torch.stack([torch.linspace(0, 1, 5, dtype=F64), torch.linspace(0, 2, 5, dtype=F64),
                     torch.linspace(0.5, 1.5, 5, dtype=F64)])
    ys = odeflow.solve(lambda t, y: -k[:, None] * y, y0, t, method=method, rtol=1e-10,
                       atol=1e-12, options={"per_sample": True, **options},
                       gradient="adjoint", adjoint_params=(k,)).ys
    ys[-1].sum().backward()
    span = t[:, -1] - t[:, 0]
    torch.testing.assert_close(k.grad, -span * torch.exp(-k.detach() * span), rtol=0, atol=tol)
    torch.testing.assert_close(y0.grad[:, 0], torch.exp(-k.detach() * span), rtol=0, atol=tol)


def test_the_defaults_are_declared_by_the_method_spec():
    assert get_method("explicit_adams").adjoint_default(per_sample=True) == "rk4"
    assert get_method("scipy_solver").adjoint_default(per_sample=True) == "dopri5"
    assert get_method("explicit_adams").adjoint_default() is None  # joint: Adams backward
    assert get_method("dopri5").adjoint_default(per_sample=True) is None
    assert get_method("rodas5p").adjoint_default(per_sample=True) == "kvaerno5"
