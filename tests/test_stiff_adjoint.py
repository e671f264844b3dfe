"""Adjoints that involve an implicit method: the block Jacobian of the augmented system
(explicit forward, implicit backward) and the interpolating adjoint (implicit forward)."""

from __future__ import annotations

import pytest
import torch

import odeflow

F64 = torch.float64


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 3)).double()


class Field(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _model()

    def forward(self, t, y):
        return self.net(y) - 5.0 * y


def _grads(method: str, gradient: str, **kw) -> list[torch.Tensor]:
    func = Field()
    y0 = torch.tensor([1.0, -0.5, 0.25], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.3, 1.0], dtype=F64)
    sol = odeflow.solve(func, y0, t, method=method, rtol=1e-9, atol=1e-11,
                        gradient=gradient, **kw)
    loss = (sol.ys[1:] ** 2).sum()
    return list(torch.autograd.grad(loss, [y0, *func.parameters()]))


@pytest.mark.parametrize("adjoint_method,adjoint_rtol,tol", [("kvaerno5", 1e-9, 1e-5),
                                                            ("rodas5p", 1e-6, 1e-3)])
def test_explicit_forward_with_an_implicit_backward_solve(adjoint_method, adjoint_rtol, tol):
    # The backward Jacobian is block diagonal (adjoint_jacobian.py): exact enough for
    # kvaerno5's Newton iteration; rodas5p loses order with it (so it is checked at a looser
    # tolerance, where it stays fast).
    ref = _grads("dopri5", "direct")
    got = _grads("dopri5", "adjoint", adjoint_method=adjoint_method, adjoint_rtol=adjoint_rtol,
                 adjoint_atol=adjoint_rtol * 1e-2)
    for a, b in zip(got, ref):
        assert torch.allclose(a, b, rtol=tol, atol=tol * 1e-3)


@pytest.mark.parametrize("method", ["rodas5p", "kvaerno5", "trbdf2"])
def test_implicit_forward_adjoint_matches_direct(method):
    ref = _grads(method, "direct")
    got = _grads(method, "adjoint")
    for a, b in zip(got, ref):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


def test_interpolating_adjoint_with_seminorm_and_krylov():
    ref = _grads("rodas5p", "direct")
    got = _grads("rodas5p", "adjoint", adjoint_options={"norm": "seminorm"})
    for a, b in zip(got, ref):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    krylov = {"linear_solver": "krylov", "krylov_tol": 1e-12}
    got = _grads("rodas5p", "adjoint", options=krylov)
    for a, b in zip(got, ref):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    # GMRES is not differentiated step by step: a clear error, never a silent zero path.
    for mode in ("direct", "checkpoint"):
        with pytest.raises(ValueError, match="krylov"):
            _grads("rodas5p", mode, options=krylov)
