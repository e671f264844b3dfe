"""The forward values of the three gradient modes, float64.

``gradient="direct"`` steps under autograd, ``"adjoint"`` and ``"checkpoint"`` run their
forward without a graph. Per sample, and for the ESDIRK methods joint, every path does the
same arithmetic, so the forwards agree bit for bit. Joint explicit Runge–Kutta and
Rosenbrock solves without a graph take the fused
path: each stage sum is one ``addmv`` over a buffer of the stages (and Rosenbrock scales
by ``hγ`` before its linear solve), while under autograd the sums are elementwise; the
two round differently, by a few ulps per step, and the dynamics carry that on (≤ 6e-14
absolute here), so those are compared at 1e-12 relative.
"""

from __future__ import annotations

import pytest
import torch

import odeflow

F64 = torch.float64


class _Field(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = torch.nn.Parameter(torch.randn(3, 16, dtype=F64, generator=g) * 0.5)
        self.w2 = torch.nn.Parameter(torch.randn(16, 3, dtype=F64, generator=g) * 0.5)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.tanh(y @ self.w1) @ self.w2 - y


BITWISE_JOINT = ["kvaerno5", "trbdf2"]
CLOSE_JOINT = ["dopri5", "tsit5", "bosh3", "dopri8", "rodas5p", "rodas4"]


def _forwards(method: str, per_sample: bool) -> dict[str, torch.Tensor]:
    func = _Field()
    y0 = torch.tensor([0.3, -0.2, 0.5], dtype=F64, requires_grad=True)
    y0 = y0.expand(4, 3) * torch.tensor([[1.0], [0.5], [-1.0], [2.0]], dtype=F64) \
        if per_sample else y0
    t = torch.linspace(0.0, 2.0, 5, dtype=F64)
    options = {"per_sample": True} if per_sample else {}
    return {mode: odeflow.odeint(func, y0, t, method=method, options=options,
                                 gradient=mode,
                                 adjoint_params=None if mode == "direct"
                                 else tuple(func.parameters())).detach()
            for mode in ("direct", "adjoint", "checkpoint")}


@pytest.mark.parametrize("method", BITWISE_JOINT + CLOSE_JOINT)
def test_per_sample_forwards_agree_bit_for_bit(method):
    ys = _forwards(method, per_sample=True)
    assert torch.equal(ys["direct"], ys["adjoint"])
    assert torch.equal(ys["direct"], ys["checkpoint"])


@pytest.mark.parametrize("method", BITWISE_JOINT)
def test_joint_forwards_agree_bit_for_bit(method):
    ys = _forwards(method, per_sample=False)
    assert torch.equal(ys["direct"], ys["adjoint"])
    assert torch.equal(ys["direct"], ys["checkpoint"])


@pytest.mark.parametrize("method", CLOSE_JOINT)
def test_joint_fused_forwards_agree_to_rounding(method):
    ys = _forwards(method, per_sample=False)
    # The no-graph modes share the fused path: bit for bit between themselves.
    assert torch.equal(ys["adjoint"], ys["checkpoint"])
    torch.testing.assert_close(ys["direct"], ys["adjoint"], rtol=1e-12, atol=1e-14)
