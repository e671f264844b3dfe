"""GPU checks (skipped without CUDA): device placement and host synchronisations per step."""

from __future__ import annotations

import warnings

import pytest
import torch

import odeflow

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _mlp(device):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.Tanh(),
                               torch.nn.Linear(64, 2)).to(device)


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "rk4"])
def test_cuda_matches_cpu(method):
    net = _mlp("cpu")
    y0 = torch.randn(16, 2)
    t = torch.linspace(0, 1, 5)
    opts = {"step_size": 0.1} if method == "rk4" else None
    with torch.no_grad():
        cpu = odeflow.odeint(lambda t, y: net(y), y0, t, method=method, options=opts)
        net_gpu = net.to("cuda")
        gpu = odeflow.odeint(lambda t, y: net_gpu(y), y0.cuda(), t.cuda(), method=method,
                             options=opts)
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-5)


def test_at_most_one_host_sync_per_step():
    net = _mlp("cuda")
    y0 = torch.randn(64, 2, device="cuda")
    t = torch.tensor([0.0, 1.0], device="cuda")
    with torch.no_grad():
        odeflow.odeint(lambda t, y: net(y), y0, t)  # warm-up
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                sol = odeflow.solve(lambda t, y: net(y), y0, t)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    # One per step (accept/reject) plus a constant number at setup (t, y0, f0 checks).
    assert syncs <= sol.stats.n_steps + 5, (syncs, sol.stats.n_steps)


def test_gradient_modes_on_cuda():
    net = _mlp("cuda")
    y0 = torch.randn(8, 2, device="cuda", requires_grad=True)
    t = torch.tensor([0.0, 1.0], device="cuda")
    grads = []
    func = _Wrap(net)
    for gradient in ("direct", "checkpoint", "adjoint"):
        ys = odeflow.odeint(func, y0, t, gradient=gradient, rtol=1e-6, atol=1e-6)
        (g,) = torch.autograd.grad(ys[-1].pow(2).sum(), y0)
        grads.append(g)
    assert torch.allclose(grads[0], grads[1], atol=1e-5)
    assert torch.allclose(grads[0], grads[2], atol=1e-3)


class _Wrap(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, t, y):
        return self.net(y)
