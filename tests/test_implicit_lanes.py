"""Implicit methods per sample with a user Jacobian (``options["jacobian"]``), and the options
per-sample mode refuses for them (``linear_solver="krylov"``, ``compile``)."""

from __future__ import annotations

import pytest
import torch

import odeflow

from .problems import ROBERTSON_RATES as RATES
from .problems import robertson_kinetics

F64 = torch.float64
PS = {"per_sample": True}
IMPLICIT_COUNTS = ("n_newton_iters", "n_jacobians", "n_lu", "n_newton_failures")

Y0 = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.0, 0.1], [1.0, 1e-5, 0.0]], dtype=F64)


def _kinetics_jacobian(k, calls=None):
    """The closed-form Jacobian, ``(n, n)`` for one sample, ``(B, n, n)`` for a batch."""
    def jac(t, y):
        if calls is not None:
            calls.append((tuple(t.shape), tuple(y.shape)))
        y2, y3 = y[..., 1], y[..., 2]
        a, b, c = k[..., 0], k[..., 1], k[..., 2]
        zero = torch.zeros_like(y2)
        rows = [torch.stack([-a + zero, c * y3, c * y2], -1),
                torch.stack([a + zero, -c * y3 - 2 * b * y2, -c * y2], -1),
                torch.stack([zero, 2 * b * y2, zero], -1)]
        return torch.stack(rows, -2)

    return jac


@pytest.mark.parametrize("method", ["kvaerno5", "trbdf2", "rodas5p"])
def test_per_sample_user_jacobian_takes_the_steps_of_autodiff_and_of_each_sample_alone(method):
    # Sample 1 integrates backwards in time: its user Jacobian is of the user's func.
    t = torch.tensor([[0.0, 1e-2, 1.0, 40.0], [0.0, -1e-4, -5e-4, -1e-3],
                      [0.0, 1e-3, 5.0, 80.0]], dtype=F64)
    y0 = Y0.clone()
    rtol, atol = 1e-6, 1e-10
    calls: list = []
    user = odeflow.solve(robertson_kinetics(RATES), y0, t, rtol=rtol, atol=atol, method=method,
                         options=dict(PS, jacobian=_kinetics_jacobian(RATES, calls)))
    auto = odeflow.solve(robertson_kinetics(RATES), y0, t, rtol=rtol, atol=atol, method=method,
                         options=PS)
    assert calls and all(c == ((3,), (3, 3)) for c in calls)  # t (B,), y (B, n)
    assert all(s == odeflow.Status.SUCCESS for s in user.sample_stats.status)
    assert torch.equal(user.sample_stats.n_accepted, auto.sample_stats.n_accepted)
    assert torch.equal(user.sample_stats.n_rejected, auto.sample_stats.n_rejected)
    assert (user.ys - auto.ys).abs().max().item() < 1e-12
    total = dict.fromkeys(IMPLICIT_COUNTS, 0)
    for b in range(3):
        own = odeflow.solve(robertson_kinetics(RATES[b]), y0[b], t[b], rtol=rtol, atol=atol,
                            method=method, options=dict(jacobian=_kinetics_jacobian(RATES[b])))
        assert int(user.sample_stats.n_accepted[b]) == own.stats.n_accepted
        assert int(user.sample_stats.n_rejected[b]) == own.stats.n_rejected
        assert (user.ys[:, b] - own.ys).abs().max().item() < 1e-12
        for name in total:
            total[name] += getattr(own.stats, name)
    if method != "rodas5p":  # ESDIRK: the samples' own Newton iterations, Jacobians, LUs
        assert {name: getattr(user.stats, name) for name in total} == total


def test_per_sample_user_jacobian_of_a_time_dependent_func_with_rodas():
    # f depends on t (Rosenbrock needs ∂f/∂t, taken per sample beside the user's J).
    lam = torch.tensor([-1e3, -50.0, -3e3], dtype=F64)

    def f(t, y):
        return lam[:, None] * (y - torch.cos(t)[:, None])

    def jac(t, y):
        return lam[:, None, None] * torch.eye(2, dtype=F64).expand(3, 2, 2)

    t = torch.linspace(0.0, 2.0, 5, dtype=F64)
    y0 = torch.ones(3, 2, dtype=F64)
    user = odeflow.solve(f, y0, t, method="rodas5p", rtol=1e-8, atol=1e-10,
                         options=dict(PS, jacobian=jac))
    auto = odeflow.solve(f, y0, t, method="rodas5p", rtol=1e-8, atol=1e-10, options=PS)
    assert torch.equal(user.sample_stats.n_accepted, auto.sample_stats.n_accepted)
    assert (user.ys - auto.ys).abs().max().item() < 1e-12
    # y' = λ(y − cos t): the closed form, to the solve's tolerance
    lt = lam[None, :, None]
    tt = t[:, None, None]
    forced = (lam ** 2 / (lam ** 2 + 1))[None, :, None] * (torch.cos(tt) - torch.sin(tt) / lt)
    exact = forced + (1.0 - forced[:1]) * torch.exp(lt * tt)
    assert (user.ys - exact).abs().max().item() < 1e-6


@pytest.mark.parametrize("method", ["kvaerno3", "rodas4"])
def test_per_sample_user_jacobian_of_the_wrong_shape_names_the_option(method):
    with pytest.raises(ValueError, match=r"options\['jacobian'\] must return a \(3, 3, 3\)"):
        odeflow.solve(robertson_kinetics(RATES), Y0, torch.tensor([0.0, 1.0], dtype=F64),
                      method=method,
                      options=dict(PS, jacobian=lambda t, y: torch.eye(3, dtype=F64)))


@pytest.mark.parametrize("method", ["kvaerno5", "rodas5p"])
@pytest.mark.parametrize("option,pattern", [
    (dict(linear_solver="krylov"), r"options\['linear_solver'\]='krylov'.*one system"),
    (dict(compile=True), r"options\['compile'\].*per_sample.*torch.compile")])
def test_per_sample_refuses_krylov_and_compile_with_implicit_methods(method, option, pattern):
    with pytest.raises(ValueError, match=pattern):
        odeflow.solve(robertson_kinetics(RATES), Y0, torch.tensor([0.0, 1.0], dtype=F64),
                      method=method, options=dict(PS, **option))


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("method", ["kvaerno5", "trbdf2", "rodas5p", "auto"])
def test_a_parameter_that_enters_only_after_t0_gets_its_gradient(method, per_sample):
    """y' = -y + p·max(t - 1/2, 0), with p reached only once t > 1/2 (a Python branch): f at
    t0 has no graph to p and y0 needs no gradient, so only later stages see p.
    dy(1)/dp = e^(-1/2) - 1/2 in closed form; the implicit stages must carry p's gradient
    (a graph pass gated on f0 or y requiring grad loses it: f0 is the previous step's
    last stage, computed without a graph)."""
    p = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)

    def f(t, y):
        t = torch.as_tensor(t, dtype=y.dtype)
        if not bool((t > 0.5).any()):
            return -y
        ramp = (t - 0.5).clamp(min=0.0)
        return -y + p * (ramp[:, None] if ramp.dim() else ramp)

    batch = 3 if per_sample else 1
    y0 = torch.ones(batch, 1, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    ys = odeflow.odeint(f, y0, t, method=method, rtol=1e-10, atol=1e-12,
                        options={"per_sample": True} if per_sample else None)
    (grad,) = torch.autograd.grad(ys[-1].sum(), p)
    expected = batch * (torch.exp(torch.tensor(-0.5, dtype=torch.float64)) - 0.5)
    # trbdf2 is second order: its global error at this tolerance is ~1e-7 relative
    rtol = 1e-5 if method == "trbdf2" else 1e-7
    torch.testing.assert_close(grad, expected, rtol=rtol, atol=0.0)


class _NoVmapBackward(torch.autograd.Function):
    """The identity, with a backward that branches on its values: autograd cannot vmap it,
    so a Jacobian falls back from the batched pass to one backward pass per row."""

    calls = {"entered": 0, "done": 0}

    @staticmethod
    def forward(ctx, y):
        return y.clone()

    @staticmethod
    def backward(ctx, grad):
        _NoVmapBackward.calls["entered"] += 1
        if bool((grad != 0).any()):  # raises under vmap
            pass
        _NoVmapBackward.calls["done"] += 1
        return grad


@pytest.mark.parametrize("method", ["kvaerno5", "trbdf2"])
def test_per_sample_jacobian_fallback_is_found_once_per_solve(method):
    """A func whose backward cannot be vmapped costs one failed batched Jacobian per solve,
    not one per Jacobian refresh; the steps are those of the plain func."""
    kinetics = robertson_kinetics(RATES)
    t = torch.tensor([0.0, 10.0], dtype=F64)

    def opaque(tt, y):
        return kinetics(tt, _NoVmapBackward.apply(y))

    opts = PS
    calls = _NoVmapBackward.calls
    calls.update(entered=0, done=0)
    sol = odeflow.solve(opaque, Y0, t, method=method, rtol=1e-6, atol=1e-9, options=opts)
    plain = odeflow.solve(kinetics, Y0, t, method=method, rtol=1e-6, atol=1e-9, options=opts)
    assert sol.stats.n_jacobians > 2  # several refreshes
    assert calls["entered"] - calls["done"] == 1  # the one batched attempt that failed
    assert torch.equal(sol.sample_stats.n_steps, plain.sample_stats.n_steps)
    torch.testing.assert_close(sol.ys, plain.ys, rtol=0, atol=1e-12)
