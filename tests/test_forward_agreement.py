"""The forward values of the three gradient modes agree bit for bit, float64.

``gradient="direct"`` steps under autograd, ``"adjoint"`` and ``"checkpoint"`` run their
forward without a graph. Every path does the same arithmetic: joint explicit Runge–Kutta
and Rosenbrock steps sum their stages with one ``addmv`` in both (over a reused buffer
without a graph, over the stages stacked anew under autograd), so the forwards are equal,
not merely close.
"""

from __future__ import annotations

import pytest
import torch

import odeflow

F64 = torch.float64


class _Field(torch.nn.Module):
    def __init__(self, time_dependent: bool = False) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = torch.nn.Parameter(torch.randn(3, 16, dtype=F64, generator=g) * 0.5)
        self.w2 = torch.nn.Parameter(torch.randn(16, 3, dtype=F64, generator=g) * 0.5)
        self.time_dependent = time_dependent

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = torch.tanh(y @ self.w1) @ self.w2 - y
        # t enters Rosenbrock's ∂f/∂t terms and every stage time
        return out + torch.sin(3 * t)[..., None] * y if self.time_dependent else out


METHODS = ["dopri5", "tsit5", "bosh3", "dopri8", "fehlberg2", "adaptive_heun", "rodas5p",
           "rodas4", "kvaerno5", "trbdf2", "rk4"]


def _forwards(method: str, per_sample: bool, time_dependent: bool = False
              ) -> dict[str, torch.Tensor]:
    func = _Field(time_dependent)
    y0 = torch.tensor([0.3, -0.2, 0.5], dtype=F64, requires_grad=True)
    y0 = y0.expand(4, 3) * torch.tensor([[1.0], [0.5], [-1.0], [2.0]], dtype=F64) \
        if per_sample else y0
    t = torch.linspace(0.0, 2.0, 5, dtype=F64)
    options = {"per_sample": True} if per_sample else {}
    if method == "rk4":
        options["step_size"] = 0.15  # outputs between grid points are interpolated
    return {mode: odeflow.odeint(func, y0, t, method=method, options=options,
                                 gradient=mode,
                                 adjoint_params=None if mode == "direct"
                                 else tuple(func.parameters())).detach()
            for mode in ("direct", "adjoint", "checkpoint")}


@pytest.mark.parametrize("time_dependent", [False, True])
@pytest.mark.parametrize("per_sample", [False, True], ids=["joint", "per_sample"])
@pytest.mark.parametrize("method", METHODS)
def test_forwards_agree_bit_for_bit(method, per_sample, time_dependent):
    ys = _forwards(method, per_sample, time_dependent)
    assert torch.equal(ys["direct"], ys["adjoint"])
    assert torch.equal(ys["direct"], ys["checkpoint"])


@pytest.mark.parametrize("per_sample", [False, True], ids=["joint", "per_sample"])
@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams", "fixed_adams", "auto",
                                    "scipy_solver"])
def test_multistep_and_switching_forwards_agree_bit_for_bit(method, per_sample):
    # gradient="checkpoint" refuses these (it replays single steps); the adjoint takes an
    # explicit Runge–Kutta method for its backward solve.
    func = _Field(time_dependent=True)
    y0 = torch.tensor([0.3, -0.2, 0.5], dtype=F64, requires_grad=True)
    if per_sample:
        y0 = y0.expand(4, 3) * torch.tensor([[1.0], [0.5], [-1.0], [2.0]], dtype=F64)
    t = torch.linspace(0.0, 2.0, 5, dtype=F64)
    options = {"per_sample": True} if per_sample else {}
    options.update({"fixed_adams": {"step_size": 0.1},
                    "scipy_solver": {"solver": "RK45"}}.get(method, {}))
    direct = odeflow.odeint(func, y0, t, method=method, options=options).detach()
    with torch.no_grad():
        plain = odeflow.odeint(func, y0, t, method=method, options=options)
    adjoint = odeflow.odeint_adjoint(func, y0, t, method=method, options=options,
                                     adjoint_method="dopri5").detach()
    assert torch.equal(direct, plain)
    assert torch.equal(direct, adjoint)


@pytest.fixture
def buffered_sums(monkeypatch):
    """Stage sums under autograd over the per-step buffer of detached copies (``graph_sum``),
    the path states of ``GRAPH_SUM_MIN`` elements or more take, at this test's small size."""
    from odeflow.solvers import explicit_rk, rosenbrock

    monkeypatch.setattr(explicit_rk, "GRAPH_SUM_MIN", 0)
    monkeypatch.setattr(rosenbrock, "GRAPH_SUM_MIN", 0)


@pytest.mark.parametrize("method", ["dopri5", "dopri8", "fehlberg2", "rodas5p", "rk4"])
def test_buffered_stage_sums_agree_bit_for_bit(method, buffered_sums):
    ys = _forwards(method, per_sample=False, time_dependent=True)
    assert torch.equal(ys["direct"], ys["adjoint"])
    assert torch.equal(ys["direct"], ys["checkpoint"])


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "rodas5p"])
def test_buffered_stage_sums_gradients(method, buffered_sums):
    # graph_sum writes its own backward: check it against finite differences, and its
    # double backward too (float64; gradcheck's default tolerances, atol 1e-5, rtol 1e-3).
    a = torch.tensor([[0.1, -0.4, 0.2], [0.3, 0.0, -0.5], [-0.2, 0.6, 0.1]], dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)

    def solve(y0, w):
        def f(t, y):
            return torch.tanh(y @ (a * w)) - 0.3 * y + 0.1 * torch.sin(t)
        return odeflow.odeint(f, y0, t, method=method, rtol=1e-8, atol=1e-10)

    y0 = torch.tensor([0.3, -0.2, 0.5], dtype=F64, requires_grad=True)
    w = torch.tensor(1.3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(solve, (y0, w))
    assert torch.autograd.gradgradcheck(solve, (y0, w))
