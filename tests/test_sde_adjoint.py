"""sdeint_adjoint: reversible Heun's algebraically reversible adjoint.

Its gradients must equal backpropagation through ``sdeint(method="reversible_heun")`` on
the same Brownian motion (to rounding), agree with finite differences on a fixed path,
and its backward must hold no per-step tensors.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn

import odeflow.sde as tsde

D64 = torch.float64


class NeuralSDE(tsde.SDEStratonovich):
    """A small time-dependent Stratonovich SDE with parameters in drift and diffusion."""

    def __init__(self, noise_type="diagonal", d=3, m=3, seed=0):
        super().__init__(noise_type=noise_type)
        gen = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(0.5 * torch.randn(d, d, generator=gen, dtype=D64))
        self.b = nn.Parameter(0.1 * torch.randn(d, generator=gen, dtype=D64))
        self.s = nn.Parameter(0.1 + 0.4 * torch.rand(d, generator=gen, dtype=D64))
        self.G = nn.Parameter(0.2 * torch.randn(d, d, m, generator=gen, dtype=D64))
        self.sigma = nn.Parameter(0.2 * torch.randn(d, m, generator=gen, dtype=D64))

    def f(self, t, y):
        return torch.tanh(y @ self.W + self.b) * (1 + 0.3 * t)

    def g(self, t, y):
        if self.noise_type == "diagonal":
            return self.s * torch.sin(y) + 0.1
        if self.noise_type == "additive":
            return self.sigma.expand(y.size(0), -1, -1) * (1 + t)
        if self.noise_type == "scalar":
            return (self.s * torch.cos(y)).unsqueeze(-1)
        return torch.einsum("bd,dem->bem", torch.cos(y), self.G)


def _noise(noise_type, d):
    return {"diagonal": d, "scalar": 1}.get(noise_type, 2)


def _grads(fn, sde, y0, ts, bm, dt, weights, **kwargs):
    out = fn(sde, y0, ts, bm=bm, method="reversible_heun", dt=dt, **kwargs)
    ys = out[0] if isinstance(out, tuple) else out
    loss = (ys * weights).sum()
    if kwargs.get("extra"):  # the final solver state's cotangents too
        loss = loss + sum((s * s).sum() for s in out[-1])
    if kwargs.get("logqp"):
        loss = loss + (out[1] ** 2).sum()
    grads = torch.autograd.grad(loss, (y0, *sde.parameters()), allow_unused=True)
    return ys.detach(), [torch.zeros_like(p) if g is None else g
                         for g, p in zip(grads, (y0, *sde.parameters()))]


def _compare(noise_type, ts, dt, **kwargs):
    d, B = 3, 4
    sde = NeuralSDE(noise_type, d, _noise(noise_type, d))
    y0 = torch.randn(B, d, dtype=D64, generator=torch.Generator().manual_seed(1),
                     requires_grad=True)
    bm = tsde.BrownianInterval(ts[0], ts[-1], size=(B, _noise(noise_type, d)), dtype=D64,
                               entropy=7)
    weights = torch.randn(len(ts), B, d, dtype=D64, generator=torch.Generator().manual_seed(2))
    ys_bp, g_bp = _grads(tsde.sdeint, sde, y0, ts, bm, dt, weights, **kwargs)
    ys_adj, g_adj = _grads(tsde.sdeint_adjoint, sde, y0, ts, bm, dt, weights, **kwargs)
    torch.testing.assert_close(ys_adj, ys_bp, rtol=0, atol=0)  # the same forward solve
    worst = max(float((a - b).abs().max() / (1 + b.abs().max())) for a, b in zip(g_adj, g_bp))
    assert worst < 1e-10, worst
    assert any(float(g.abs().max()) > 1e-3 for g in g_bp[1:])  # the test has gradients
    return worst


@pytest.mark.parametrize("noise_type", ["diagonal", "general", "scalar", "additive"])
def test_gradients_equal_backprop_through_reversible_heun(noise_type):
    # Output times on and off the grid (0.13, 0.77 are interpolated), grid of 0.05.
    _compare(noise_type, [0.0, 0.13, 0.5, 0.77, 1.0], 0.05)


@pytest.mark.parametrize("dt", [0.1, 0.07, 0.3])
def test_gradients_equal_backprop_for_grids_that_do_not_divide_the_span(dt):
    # 0.07 and 0.3: the last step is shorter/stretched; 0.3 puts several outputs in one step.
    _compare("diagonal", [0.2, 0.25, 0.31, 0.9, 1.1], dt)


def test_gradients_of_extra_state_and_logqp_equal_backprop():
    _compare("general", [0.0, 0.4, 1.0], 0.1, extra=True)

    class WithPrior(NeuralSDE):
        def h(self, t, y):
            return -y

    d, B = 3, 4
    sde = WithPrior("diagonal", d, d)
    y0 = torch.randn(B, d, dtype=D64, requires_grad=True)
    ts = [0.0, 0.35, 1.0]
    # logqp adds a state component (without noise): diagonal noise has d + 1 channels
    bm = tsde.BrownianInterval(0.0, 1.0, size=(B, d + 1), dtype=D64, entropy=3)
    w = torch.randn(len(ts), B, d, dtype=D64)
    _, g_bp = _grads(tsde.sdeint, sde, y0, ts, bm, 0.1, w, logqp=True)
    _, g_adj = _grads(tsde.sdeint_adjoint, sde, y0, ts, bm, 0.1, w, logqp=True)
    for a, b in zip(g_adj, g_bp):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_gradients_match_finite_differences_on_a_fixed_path():
    sde = NeuralSDE("general", 2, 2, seed=3)
    y0 = torch.tensor([[0.3, -0.2], [0.1, 0.5]], dtype=D64, requires_grad=True)
    ts = [0.0, 0.45, 1.0]
    bm = tsde.BrownianInterval(0.0, 1.0, size=(2, 2), dtype=D64, entropy=11)
    w = torch.randn(3, 2, 2, dtype=D64, generator=torch.Generator().manual_seed(5))

    def loss():
        ys = tsde.sdeint_adjoint(sde, y0, ts, bm=bm, method="reversible_heun", dt=0.05)
        return (ys * w).sum()

    grads = torch.autograd.grad(loss(), (y0, sde.W, sde.G))
    eps = 1e-6
    with torch.no_grad():
        for tensor, grad in zip((y0, sde.W, sde.G), grads):
            flat, gflat = tensor.view(-1), grad.reshape(-1)
            for i in range(0, flat.numel(), max(1, flat.numel() // 4)):
                old = flat[i].item()
                flat[i] = old + eps
                up = loss().item()
                flat[i] = old - eps
                down = loss().item()
                flat[i] = old
                fd = (up - down) / (2 * eps)
                # central differences: truncation O(eps^2) + rounding O(1e-16 / eps)
                assert abs(fd - gflat[i].item()) < 1e-7 * (1 + abs(fd)), (i, fd, gflat[i])


class _Saved:
    """Bytes of the tensors autograd holds for backward (saved-tensor hooks), and their peak.

    Each saved tensor is packed in a box; the box lives as long as the graph keeps it, so
    ``live`` is what the graphs hold at any moment (the adjoint's own graph in its backward
    included: the hooks are active while it runs).
    """

    def __init__(self):
        self.live = self.peak = 0

    def pack(self, x):
        nbytes = x.numel() * x.element_size()
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        return _Box(x, self, nbytes)

    def _free(self, nbytes):
        self.live -= nbytes

    @staticmethod
    def unpack(box):
        return box.x


class _Box:
    def __init__(self, x, owner, nbytes):
        self.x = x
        weakref.finalize(self, owner._free, nbytes)


class _Sampled(NeuralSDE):
    """Counts the live state-shaped tensors (``gc.get_objects``) every 50th drift evaluation."""

    def __init__(self):
        super().__init__("diagonal", 4, 4)
        self.sampling, self.calls, self.most_tensors = False, 0, 0

    def f(self, t, y):
        self.calls += 1
        if self.sampling and self.calls % 50 == 0:
            live = sum(1 for o in gc.get_objects()
                       if type(o) is torch.Tensor and o.shape == y.shape)
            self.most_tensors = max(self.most_tensors, live)
        return super().f(t, y)


def _memory(fn, n_steps, count_tensors=True):
    """(peak bytes autograd saved, most live tensors during the backward) of one solve."""
    sde = _Sampled()
    y0 = torch.full((8, 4), 0.3, dtype=D64, requires_grad=True)
    bm = tsde.BrownianInterval(0.0, 1.0, size=(8, 4), dtype=D64, entropy=1)
    saved = _Saved()
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
        ys = fn(sde, y0, [0.0, 0.5, 1.0], bm=bm, method="reversible_heun", dt=1.0 / n_steps)
        gc.collect()
        sde.sampling = count_tensors
        ys.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in (sde.W, sde.s))
    return saved.peak, sde.most_tensors


def test_backward_memory_does_not_grow_with_the_number_of_steps():
    # Two measures, for 100 and 1000 steps: (1) the peak bytes of the tensors autograd
    # holds for a backward (saved-tensor hooks; the adjoint's per-step VJP graphs
    # included), with backprop through sdeint as the contrast; (2) the number of live
    # tensors of the state's shape (gc.get_objects, sampled every 50th drift evaluation)
    # during the adjoint's backward: a list of per-step states or increments would add
    # hundreds.
    small, tensors_small = _memory(tsde.sdeint_adjoint, 100)
    large, tensors_large = _memory(tsde.sdeint_adjoint, 1000)
    assert large == small, (small, large)
    # (a few either way: which of a step's temporaries are alive when sampled)
    assert tensors_large <= tensors_small + 4, (tensors_small, tensors_large)
    bp_small, _ = _memory(tsde.sdeint, 100, count_tensors=False)
    bp_large, _ = _memory(tsde.sdeint, 1000, count_tensors=False)
    assert bp_large > 8 * bp_small and bp_small > 20 * small, (small, bp_small, bp_large)
    print(f"saved for backward: adjoint {small} B (100 steps) / {large} B (1000 steps); "
          f"backprop {bp_small} B / {bp_large} B; live tensors in the adjoint's backward "
          f"{tensors_small} / {tensors_large}")


def test_errors_name_what_works():
    sde = NeuralSDE("diagonal")
    y0 = torch.ones(2, 3, dtype=D64)
    with pytest.raises(NotImplementedError, match="adaptive"):
        tsde.sdeint_adjoint(sde, y0, [0.0, 1.0], method="reversible_heun", adaptive=True)
    with pytest.raises(NotImplementedError, match="adaptive"):
        tsde.sdeint_adjoint(sde, y0, [0.0, 1.0], method="reversible_heun",
                            adjoint_adaptive=True)
    with pytest.raises(ValueError, match="needs method='reversible_heun'"):
        tsde.sdeint_adjoint(sde, y0, [0.0, 1.0], method="heun",
                            adjoint_method="adjoint_reversible_heun")
    with pytest.raises(ValueError, match="adjoint_options"):
        tsde.sdeint_adjoint(sde, y0, [0.0, 1.0], method="reversible_heun",
                            adjoint_options={"x": 1})
    with pytest.raises(ValueError, match="unexpected arguments"):
        tsde.sdeint_adjoint(sde, y0, [0.0, 1.0], method="reversible_heun", adjiont_params=())
    with pytest.raises(NotImplementedError, match="adjoint_method of sdeint_adjoint"):
        tsde.sdeint(sde, y0, [0.0, 1.0], method="adjoint_reversible_heun")

    class Plain:  # not an nn.Module: adjoint_params must be given
        noise_type, sde_type = "diagonal", "stratonovich"

        def f(self, t, y):
            return -y

        def g(self, t, y):
            return 0.1 * y

    with pytest.raises(ValueError, match="adjoint_params"):
        tsde.sdeint_adjoint(Plain(), y0, [0.0, 1.0], method="reversible_heun")
    y0g = y0.clone().requires_grad_(True)
    ys = tsde.sdeint_adjoint(Plain(), y0g, [0.0, 1.0], method="reversible_heun", dt=0.1,
                             adjoint_params=())
    ys[-1].sum().backward()
    assert y0g.grad is not None and torch.isfinite(y0g.grad).all()
    # One output time: no steps, y0 itself.
    assert tsde.sdeint_adjoint(sde, y0, [0.0], method="reversible_heun").shape == (1, 2, 3)


def test_matches_torchsde_sdeint_adjoint_on_a_shared_brownian_motion():
    torchsde = pytest.importorskip("torchsde")
    # dt = 2**-4 and outputs on the grid: torchsde's own forward and backward grids then
    # coincide (for other dt its adjoint retraces slightly different steps and is inexact).
    for noise_type in ("diagonal", "general"):
        d, B = 3, 4
        m = _noise(noise_type, d)
        sde = NeuralSDE(noise_type, d, m)
        y0 = torch.randn(B, d, dtype=D64, requires_grad=True)
        ts = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=D64)
        bm = tsde.BrownianInterval(0.0, 1.0, size=(B, m), dtype=D64, entropy=5)
        w = torch.randn(len(ts), B, d, dtype=D64)
        ys_ours, g_ours = _grads(tsde.sdeint_adjoint, sde, y0, ts, bm, 0.0625, w)
        ys_theirs, g_theirs = _grads(torchsde.sdeint_adjoint, sde, y0, ts, bm, 0.0625, w)
        torch.testing.assert_close(ys_ours, ys_theirs, rtol=1e-12, atol=1e-12)
        for a, b in zip(g_ours, g_theirs):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_a_drift_without_graph_is_handled():
    # f(t, y) = 0 (a fresh tensor without grad_fn, as torchsde's ExScalar Stratonovich
    # problem has): the reversible backward must skip it in its vector-Jacobian product.
    class ZeroDrift(NeuralSDE):
        def f(self, t, y):
            return torch.zeros_like(y)

    sde = ZeroDrift("scalar", 3, 1)
    y0 = torch.full((2, 3), 0.2, dtype=D64, requires_grad=True)
    bm = tsde.BrownianInterval(0.0, 1.0, size=(2, 1), dtype=D64, entropy=2)
    w = torch.randn(3, 2, 3, dtype=D64, generator=torch.Generator().manual_seed(0))
    _, g_bp = _grads(tsde.sdeint, sde, y0, [0.0, 0.5, 1.0], bm, 0.1, w)
    _, g_adj = _grads(tsde.sdeint_adjoint, sde, y0, [0.0, 0.5, 1.0], bm, 0.1, w)
    for a, b in zip(g_adj, g_bp):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
