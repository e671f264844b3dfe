"""The residual–Euler link (Chen et al. 2018, §2): a residual block ``h + f(h)`` is one
Euler step of size 1 of ``dh/dt = f(h)``, and a stack of blocks with their own parameters
is Euler on ``dh/dt = f(h, θ(t))`` with a piecewise-constant ``θ(t)``."""

import pytest
import torch
from torch import nn

from odeflow import odeint


def _mlp(seed: int, dim: int = 5) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(dim, 16), nn.Tanh(), nn.Linear(16, dim)).double()


def test_a_residual_block_is_one_euler_step_of_size_one():
    f = _mlp(0)
    h = torch.randn(8, 5, dtype=torch.float64)
    residual = h + f(h)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    euler = odeint(lambda t, y: f(y), h, t, method="euler", options=dict(step_size=1.0))[-1]
    torch.testing.assert_close(euler, residual, rtol=0, atol=1e-12)
    # and the gradients through both agree too
    g_res = torch.autograd.grad(residual.square().sum(), tuple(f.parameters()))
    euler = odeint(lambda t, y: f(y), h, t, method="euler", options=dict(step_size=1.0))[-1]
    g_eul = torch.autograd.grad(euler.square().sum(), tuple(f.parameters()))
    for a, b in zip(g_res, g_eul, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


class PiecewiseField(nn.Module):
    """``f(t, h) = f_k(h)`` for ``t`` in ``[k, k + 1)``: θ(t) piecewise constant."""

    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.calls: list[float] = []

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        k = min(int(torch.floor(t)), len(self.blocks) - 1)
        self.calls.append(float(t))
        return self.blocks[k](h)


@pytest.mark.parametrize("depth", [1, 3, 6])
def test_a_stack_of_blocks_is_euler_with_piecewise_constant_parameters(depth):
    blocks = [_mlp(seed) for seed in range(depth)]
    h0 = torch.randn(4, 5, dtype=torch.float64)
    h = h0
    for block in blocks:
        h = h + block(h)
    field = PiecewiseField(blocks)
    t = torch.arange(depth + 1, dtype=torch.float64)
    ys = odeint(field, h0, t, method="euler", options=dict(step_size=1.0))
    torch.testing.assert_close(ys[-1], h, rtol=0, atol=1e-12)
    assert field.calls == [float(k) for k in range(depth)]  # one evaluation per block
    # every intermediate output is the activation after that many blocks
    h = h0
    for k, block in enumerate(blocks):
        torch.testing.assert_close(ys[k], h, rtol=0, atol=1e-12)
        h = h + block(h)


def test_smaller_euler_steps_are_a_deeper_stack_of_scaled_blocks():
    # N blocks h + f(h)/N with one shared f = Euler with step 1/N on [0, 1]; as N grows
    # both approach the ODE solution (the ODE-Net's limit).
    f = _mlp(1).requires_grad_(False)
    h0 = torch.randn(3, 5, dtype=torch.float64)
    exact = odeint(lambda t, y: f(y), h0, torch.tensor([0.0, 1.0], dtype=torch.float64),
                   rtol=1e-10, atol=1e-12)[-1]
    errors = []
    for n in (4, 8, 16):
        h = h0
        for _ in range(n):
            h = h + f(h) / n
        t = torch.linspace(0, 1, n + 1, dtype=torch.float64)
        euler = odeint(lambda t, y: f(y), h0, t, method="euler")[-1]
        torch.testing.assert_close(euler, h, rtol=0, atol=1e-12)
        errors.append(float((h - exact).abs().max()))
    assert errors[0] > errors[1] > errors[2]  # first order: halves with the step
    assert errors[1] / errors[2] == pytest.approx(2.0, rel=0.2)
