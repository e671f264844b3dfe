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


class LaneField(torch.nn.Module):
    """Per sample: a stiff linear part with the sample's own rate (negative for the sample
    solved backwards in time, where it contracts), a small network and a forcing that flips
    sign at each sample's own time (``jumps``, in the user's time)."""

    jumps = torch.tensor([[0.5], [1.2], [1.0]], dtype=F64)

    def __init__(self):
        super().__init__()
        self.net = _model()
        self.rate = torch.nn.Parameter(torch.tensor([20.0, 50.0, -80.0], dtype=F64))

    def forward(self, t, y):
        force = torch.where(t[:, None] < self.jumps, 0.3, -0.3)
        return 0.1 * self.net(y) - self.rate[:, None] * (y - torch.cos(t)[:, None]) + force


def _lane_grads(method: str, gradient: str, t: torch.Tensor, b: int | None = None):
    """Gradients of a loss on every output of the per-sample solve (``b``: of that sample
    alone, as a joint solve with its own rate and jump)."""
    func = LaneField()
    y0 = torch.tensor([[1.0, -0.5, 0.25], [0.2, 0.1, -0.3], [-1.0, 0.5, 0.0]], dtype=F64)
    y0 = (y0 if b is None else y0[b]).clone().requires_grad_(True)
    opts = dict(jump_t=LaneField.jumps, step_t=[0.77], per_sample=True)
    if b is not None:
        rate, jump, t = func.rate, float(LaneField.jumps[b, 0]), t[b]

        def one(tt, y):
            force = torch.where(tt < jump, 0.3, -0.3)
            return 0.1 * func.net(y) - rate[b] * (y - torch.cos(tt)) + force

        opts = dict(jump_t=[jump], step_t=[0.77])
    sol = odeflow.solve(func if b is None else one, y0, t, method=method, rtol=1e-8,
                        atol=1e-10, gradient=gradient, options=opts,
                        adjoint_params=tuple(func.parameters()))
    loss = (sol.ys ** 2).sum() + sol.ys[1].sum()
    return torch.autograd.grad(loss, [y0, *func.parameters()]), sol


@pytest.mark.parametrize("method", ["kvaerno5", "rodas5p"])
def test_per_sample_interpolating_adjoint_matches_direct_and_each_samples_own(method):
    # After an implicit forward the per-sample adjoint reads y from the forward dense output
    # and runs backwards in the forward's canonical time on every sample's own intervals
    # (one of them backwards in the user's time) with the samples' own jumps and step_t.
    t = torch.stack([torch.linspace(0, 1 + 0.5 * b, 4, dtype=F64) + 0.1 * b for b in range(3)])
    t[2] = t[2].flip(0)
    direct, _ = _lane_grads(method, "direct", t)
    adjoint, sol = _lane_grads(method, "adjoint", t)
    assert sol.stats.nfe_backward > 0
    for d, a in zip(direct, adjoint):  # measured: 2e-7 relative and below
        assert ((d - a).abs() / d.abs().clamp(min=1e-3)).max().item() < 1e-6
    # Each sample alone (joint interpolating adjoint, its own jump): its y0 gradient and
    # its rate's gradient; the network's gradient is the sum over the samples. (Not the
    # step counts: the network's batched and single products may round differently.)
    net = [torch.zeros_like(g) for g in adjoint[2:]]  # (parameters(): the rates first)
    for b in range(3):
        own, _ = _lane_grads(method, "adjoint", t, b)
        assert ((own[0] - adjoint[0][b]).abs() / own[0].abs().clamp(min=1e-3)).max() < 1e-6
        assert abs(own[1][b] - adjoint[1][b]) < 1e-6 * abs(own[1][b]).clamp(min=1e-3)
        net = [n + g for n, g in zip(net, own[2:])]
    for n, g in zip(net, adjoint[2:]):
        assert ((n - g).abs() / n.abs().clamp(min=1e-3)).max() < 1e-6


@pytest.mark.parametrize("adjoint_method", ["rodas5p", "rodas4"])
def test_rosenbrock_backward_of_the_interpolating_adjoint_reaches_the_span_end(adjoint_method):
    """A Rosenbrock backward solve estimates ∂/∂t of the backward dynamics by central
    differences, which read the forward dense output a little beyond the last output time:
    a finished solve's dense output reads its end there (it used to give nan, and the
    backward solve failed at its first step). Robertson's rates, float64: the gradient
    matches backprop through the same forward to 1e-6 relative (measured ~9e-9)."""
    k = torch.tensor([0.04, 3e7, 1e4], dtype=torch.float64, requires_grad=True)

    def f(t, y):
        y1, y2, y3 = y.unbind(-1)
        return torch.stack([-k[0] * y1 + k[2] * y2 * y3,
                            k[0] * y1 - k[2] * y2 * y3 - k[1] * y2 ** 2, k[1] * y2 ** 2], -1)

    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0, 10.0], dtype=torch.float64)
    kw = dict(method="rodas5p", rtol=1e-8, atol=1e-12)
    (direct,) = torch.autograd.grad(odeflow.odeint(f, y0, t, **kw)[1:, 2].sum(), k)
    ys = odeflow.odeint_adjoint(f, y0, t, adjoint_method=adjoint_method, adjoint_params=(k,),
                                **kw)
    (adjoint,) = torch.autograd.grad(ys[1:, 2].sum(), k)
    torch.testing.assert_close(adjoint, direct, rtol=1e-6, atol=0.0)
