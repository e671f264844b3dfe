"""options={"per_sample": True}: each sample of a batch is its own problem.

Every sample is checked against a separate joint solve of that sample alone (same steps,
so values agree to rounding and the per-sample step counts are equal), against closed
forms, and gradients against the direct mode, separate solves and closed forms.
"""

from __future__ import annotations

import math

import pytest
import torch

import odeflow
from odeflow import Status

from .problems import scipy_reference, van_der_pol

F64 = torch.float64
PS = {"per_sample": True}


def _batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.rand(n, generator=g, dtype=F64) * 4.5 + 0.5
    y0 = torch.stack([torch.rand(n, generator=g, dtype=F64) * 2 + 0.5,
                      torch.zeros(n, dtype=F64)], 1)

    def f(t, y):
        assert t.shape == (n,)  # each sample's own time
        return torch.stack([y[:, 1], mu * (1 - y[:, 0] ** 2) * y[:, 1] - y[:, 0]], 1)

    return mu, y0, f


def _single(mu_b):
    return lambda t, y: torch.stack([y[1], mu_b * (1 - y[0] ** 2) * y[1] - y[0]])


def test_each_sample_matches_scipy():
    mu, y0, f = _batch(2)
    t = torch.tensor([0.0, 0.6, 1.2], dtype=F64)
    sol = odeflow.solve(f, y0, t, rtol=1e-9, atol=1e-9, options=PS)
    assert sol.ys.shape == (3, 2, 2)
    for i in range(2):
        ref = scipy_reference(van_der_pol(mu[i].item()), y0[i], 1.2, t_eval=t.numpy())
        assert (sol.ys[:, i] - ref).abs().max().item() < 1e-6


@pytest.mark.parametrize("method,tol", [("dopri5", 1e-7), ("tsit5", 1e-7), ("bosh3", 1e-5),
                                        ("dopri8", 1e-7), ("adaptive_heun", 1e-3)])
def test_each_sample_is_its_own_joint_solve(method, tol):
    """Same steps as solving the sample alone: equal values and equal step counts."""
    mu, y0, f = _batch()
    t = torch.tensor([0.0, 0.7, 2.0, 3.0], dtype=F64)
    sol = odeflow.solve(f, y0, t, rtol=tol, atol=tol, method=method, options=PS)
    ss = sol.sample_stats
    assert ss.status == [Status.SUCCESS] * 6
    for b in range(6):
        one = odeflow.solve(_single(mu[b]), y0[b], t, rtol=tol, atol=tol, method=method)
        assert (sol.ys[:, b] - one.ys).abs().max().item() < 1e-9  # rounding only
        assert ss.n_accepted[b].item() == one.stats.n_accepted
        assert ss.n_rejected[b].item() == one.stats.n_rejected
        assert ss.n_steps[b].item() == one.stats.n_steps
    assert sol.stats.n_accepted == int(ss.n_accepted.sum())
    assert sol.stats.n_steps == int(ss.n_steps.max())  # batched iterations


def test_per_sample_output_grids():
    """t of shape (B, T): own starts, ends and directions; ys[j, b] = y_b(t[b, j])."""
    k = torch.tensor([0.5, 1.0, 2.0, -0.3], dtype=F64)
    y0 = torch.tensor([[1.0], [2.0], [-1.0], [0.5]], dtype=F64)
    t = torch.tensor([[0.0, 0.5, 1.0, 3.0],
                      [1.0, 1.1, 1.2, 1.3],
                      [2.0, 1.0, 0.0, -1.0],  # backwards in time
                      [-5.0, -2.0, 0.0, 4.0]], dtype=F64)
    sol = odeflow.solve(lambda t, y: -k[:, None] * y, y0, t, rtol=1e-10, atol=1e-12,
                        options=PS)
    exact = y0 * torch.exp(-k[:, None] * (t - t[:, :1]))  # (B, T)
    assert sol.ys.shape == (4, 4, 1)
    assert ((sol.ys[..., 0] - exact.T) / exact.T).abs().max().item() < 1e-8
    assert sol.ts is t
    # Against separate solves of each row, to rounding.
    mu, y0, f = _batch(3)
    t = torch.stack([torch.linspace(0.2, 2.0, 5, dtype=F64), torch.linspace(3.0, 0.0, 5,
                     dtype=F64), torch.linspace(-1.0, 1.0, 5, dtype=F64) ** 3])
    sol = odeflow.solve(f, y0, t, rtol=1e-8, atol=1e-9, options=PS)
    for b in range(3):
        one = odeflow.solve(_single(mu[b]), y0[b], t[b], rtol=1e-8, atol=1e-9)
        assert (sol.ys[:, b] - one.ys).abs().max().item() < 1e-11
        assert sol.sample_stats.n_accepted[b].item() == one.stats.n_accepted


def test_per_sample_saves_evaluations_on_a_mixed_batch():
    mu, y0, f = _batch(20)
    t = torch.tensor([0.0, 5.0], dtype=F64)
    joint = odeflow.solve(lambda t, y: f(t.expand(20), y), y0, t, rtol=1e-6, atol=1e-6)
    each = odeflow.solve(f, y0, t, rtol=1e-6, atol=1e-6, options=PS)
    assert torch.allclose(joint.ys, each.ys, atol=1e-3)
    assert each.stats.nfe < joint.stats.nfe
    assert each.stats.n_accepted >= 20


# ------------------------------------------------------------------------------- options
def test_jump_t_and_step_t_per_sample():
    """A forcing that switches at each sample's own time: jump_t (B, 1) lands there."""
    tau = torch.tensor([0.3, 0.55, 0.8], dtype=F64)

    def f(t, y):
        return torch.where(t < tau, 1.0, -2.0)[:, None] * torch.ones_like(y)

    y0 = torch.zeros(3, 1, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    sol = odeflow.solve(f, y0, t, rtol=1e-9, atol=1e-9, options=dict(per_sample=True,
                        jump_t=tau[:, None]))
    exact = tau - 2 * (1 - tau)
    assert (sol.ys[-1, :, 0] - exact).abs().max().item() < 1e-12
    # Few steps: the jump is stepped onto, not resolved by rejections.
    assert sol.sample_stats.n_rejected.max().item() == 0
    # A shared 1-D jump_t / step_t equals the joint solve of each sample with it.
    mu, y0, f = _batch(3)
    opts = dict(jump_t=[0.9], step_t=torch.tensor([0.3, 1.7]))
    sol = odeflow.solve(f, y0, torch.tensor([0.0, 2.0], dtype=F64), rtol=1e-8, atol=1e-8,
                        options=dict(per_sample=True, **opts))
    for b in range(3):
        one = odeflow.solve(_single(mu[b]), y0[b], torch.tensor([0.0, 2.0], dtype=F64),
                            rtol=1e-8, atol=1e-8, options=opts)
        assert (sol.ys[-1, b] - one.ys[-1]).abs().max().item() < 1e-11
        assert sol.sample_stats.n_steps[b].item() == one.stats.n_steps


@pytest.mark.parametrize("opts", [dict(max_step=0.05), dict(min_step=0.1, first_step=0.1),
                                  dict(controller="pi"), dict(controller="pid"),
                                  dict(safety=0.8, ifactor=5.0, dfactor=0.3)])
def test_step_options_match_the_joint_loop(opts):
    mu, y0, f = _batch(3)
    t = torch.tensor([0.0, 1.5], dtype=F64)
    sol = odeflow.solve(f, y0, t, rtol=1e-6, atol=1e-6, options=dict(per_sample=True, **opts))
    for b in range(3):
        one = odeflow.solve(_single(mu[b]), y0[b], t, rtol=1e-6, atol=1e-6, options=opts)
        assert (sol.ys[-1, b] - one.ys[-1]).abs().max().item() < 1e-11
        assert sol.sample_stats.n_accepted[b].item() == one.stats.n_accepted
    if "max_step" in opts:
        assert sol.sample_stats.n_accepted.min().item() >= 30


def test_norm_per_sample():
    """A user norm gets the batch's scaled error and returns one value per sample."""
    mu, y0, f = _batch(3)
    t = torch.tensor([0.0, 1.5], dtype=F64)
    sol = odeflow.solve(f, y0, t, rtol=1e-6, atol=1e-6, options=dict(
        per_sample=True, norm=lambda e: e.abs().amax(dim=1)))
    for b in range(3):
        one = odeflow.solve(_single(mu[b]), y0[b], t, rtol=1e-6, atol=1e-6,
                            options=dict(norm=lambda e: e.abs().max()))
        assert (sol.ys[-1, b] - one.ys[-1]).abs().max().item() < 1e-11
        assert sol.sample_stats.n_accepted[b].item() == one.stats.n_accepted
    with pytest.raises(ValueError, match=r"options\['norm'\].*one value per sample"):
        odeflow.solve(f, y0, t, options=dict(per_sample=True, norm=lambda e: e.abs().max()))


def test_bad_input_names_the_argument():
    _, y0, f = _batch(3)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(ValueError, match=r"share the batch size"):
        odeflow.odeint(lambda t, y: y, (y0, y0[:2]), t, options=PS)
    with pytest.raises(TypeError, match=r"tuple of 2 tensors"):
        odeflow.odeint(lambda t, y: y[0], (y0, y0), t, options=PS)
    with pytest.raises(ValueError, match=r"t of shape \(4, 2\).*B = 3"):
        odeflow.solve(f, y0, torch.zeros(4, 2, dtype=F64), options=PS)
    with pytest.raises(ValueError, match=r"t\[1\] must be strictly"):
        odeflow.solve(f, y0, torch.tensor([[0.0, 1.0, 2.0], [0.0, 2.0, 1.0], [0.0, 1.0, 2.0]],
                                          dtype=F64), options=PS)
    with pytest.raises(ValueError, match="unknown option"):
        odeflow.odeint(f, y0, t, method="rk4", options=dict(per_sample=True, rtol=1e-3))
    with pytest.raises(ValueError, match=r"jump_t.*\(B, K\)"):
        odeflow.solve(f, y0, t, options=dict(per_sample=True, jump_t=torch.zeros(2, 2)))
    with pytest.raises(ValueError, match=r"func\(t, y\) must (return|have the shape)"):
        odeflow.solve(lambda t, y: y[:1], y0, t, options=PS)
    with pytest.raises(ValueError, match=r"event_fn.*\(B,\) or \(B, k\) with B = 3"):
        odeflow.solve(f, y0, t, event_fn=lambda t, y: y.sum(), options=PS)
    with pytest.raises(ValueError, match=r"with event_fn, t must be \[t0, t1\]"):
        odeflow.solve(f, y0, torch.zeros(3, 3, dtype=F64), event_fn=lambda t, y: y[:, 0],
                      options=PS)
    with pytest.raises(ValueError, match="adjoint_options.*seminorm"):
        odeflow.solve(f, y0, t, options=PS, gradient="adjoint", adjoint_params=(),
                      adjoint_options=dict(norm=lambda x: x.abs().max()))


# ------------------------------------------------------------------------------ failures
def test_a_failing_sample_does_not_fail_the_others():
    """Sample 1's func turns nan after t = 0.5: only that sample fails (NONFINITE)."""
    y0 = torch.tensor([[-1.0], [2.0], [0.5]], dtype=F64)
    k = torch.tensor([0.5, 1.0, -0.4], dtype=F64)

    def f(t, y):
        poison = torch.where((torch.arange(3) == 1) & (t > 0.5), math.nan, 0.0)
        return -k[:, None] * y + poison[:, None]

    t = torch.tensor([0.0, 0.4, 1.0], dtype=F64)
    sol = odeflow.solve(f, y0, t, options=PS, throw=False)
    st = sol.sample_stats.statuses()
    assert st == [Status.SUCCESS, Status.NONFINITE, Status.SUCCESS]
    assert sol.stats.status == Status.NONFINITE and "1 of 3 samples failed" in sol.stats.message
    exact = y0 * torch.exp(-k[:, None] * t)  # (B, T)
    assert (sol.ys[:, 0, 0] - exact[0]).abs().max() < 1e-7
    assert (sol.ys[:, 2, 0] - exact[2]).abs().max() < 1e-7
    assert torch.isnan(sol.ys[2, 1]).all() and (sol.ys[1, 1, 0] - exact[1, 1]).abs() < 1e-7
    with pytest.raises(odeflow.SolveError, match="1 of 3 samples failed") as info:
        odeflow.solve(f, y0, t, options=PS)
    assert info.value.sample_stats.codes.tolist() == [0, int(Status.NONFINITE), 0]


def test_max_num_steps_is_per_sample():
    mu, y0, f = _batch(3)
    t = torch.tensor([0.0, 3.0], dtype=F64)
    counts = odeflow.solve(f, y0, t, rtol=1e-8, atol=1e-8, options=PS).sample_stats.n_steps
    limit = int(counts.median())
    sol = odeflow.solve(f, y0, t, rtol=1e-8, atol=1e-8, throw=False,
                        options=dict(per_sample=True, max_num_steps=limit))
    st = sol.sample_stats.statuses()
    for b in range(3):
        expect = Status.SUCCESS if counts[b] <= limit else Status.MAX_STEPS_REACHED
        assert st[b] == expect


# ----------------------------------------------------------------------------- gradients
class _Field(torch.nn.Module):
    def __init__(self, batch):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.w = torch.nn.Parameter(torch.randn(2, 2, generator=g, dtype=F64) * 0.7)
        self.s = torch.nn.Parameter(torch.linspace(0.5, 1.5, batch, dtype=F64))

    def forward(self, t, y):
        return torch.tanh(y @ self.w) * self.s[:, None] - 0.2 * y * torch.cos(t)[:, None]


class _Jumping(_Field):
    """_Field plus a forcing that flips sign at each sample's own time."""

    jumps = torch.tensor([[0.5], [1.2], [1.0], [2.0]], dtype=F64)

    def forward(self, t, y):
        return super().forward(t, y) + torch.where(t[:, None] < self.jumps, 0.3, -0.3)


def _grads(mode, t, tol=1e-10, jumps=False, **kw):
    torch.manual_seed(0)
    func = (_Jumping if jumps else _Field)(t.shape[0] if t.ndim == 2 else 4)
    y0 = torch.randn(func.s.shape[0], 2, dtype=F64, generator=torch.Generator().manual_seed(2))
    y0.requires_grad_(True)
    opts = dict(PS, jump_t=_Jumping.jumps, step_t=[0.77]) if jumps else PS
    sol = odeflow.solve(func, y0, t, rtol=tol, atol=tol, gradient=mode, options=opts, **kw)
    loss = (sol.ys ** 2).sum() + sol.ys[1].sum()
    return torch.autograd.grad(loss, (y0, *func.parameters())), sol


@pytest.mark.parametrize("jumps", [False, True])
def test_gradients_checkpoint_equals_direct_adjoint_close(jumps):
    t = torch.stack([torch.linspace(0, 1 + b, 4, dtype=F64) + 0.1 * b for b in range(4)])
    t[2] = t[2].flip(0)  # one sample backwards in time
    direct, _ = _grads("direct", t, jumps=jumps)
    ckpt, sol = _grads("checkpoint", t, jumps=jumps)
    adj, sol_a = _grads("adjoint", t, jumps=jumps)
    for d, c, a in zip(direct, ckpt, adj):
        assert (d - c).abs().max().item() < 1e-10
        assert (d - a).abs().max().item() < 1e-6
    assert sol.stats.nfe_backward > 0 and sol_a.stats.nfe_backward > 0


def test_direct_gradient_matches_separate_solves_and_finite_differences():
    t = torch.tensor([0.0, 0.6, 1.2], dtype=F64)
    (g_y0, g_w, g_s), _ = _grads("direct", t)
    torch.manual_seed(0)
    func = _Field(4)
    y0 = torch.randn(4, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
    for b in range(4):
        yb = y0[b:b + 1].clone().requires_grad_(True)
        one = odeflow.solve(lambda tt, y, b=b: torch.tanh(y @ func.w) * func.s[b]
                            - 0.2 * y * torch.cos(tt), yb, t, rtol=1e-10, atol=1e-10)
        loss = (one.ys ** 2).sum() + one.ys[1].sum()
        gy, gs = torch.autograd.grad(loss, (yb, func.s))
        assert (gy[0] - g_y0[b]).abs().max().item() < 1e-9
        assert abs(gs[b].item() - g_s[b].item()) < 1e-9
    # Central differences in one parameter entry.
    eps = 1e-6
    with torch.no_grad():
        vals = []
        for sgn in (1, -1):
            func.w[0, 1] += sgn * eps
            sol = odeflow.solve(func, y0, t, rtol=1e-12, atol=1e-12, options=PS)
            vals.append(((sol.ys ** 2).sum() + sol.ys[1].sum()).item())
            func.w[0, 1] -= sgn * eps
    assert abs((vals[0] - vals[1]) / (2 * eps) - g_w[0, 1].item()) < 1e-6


@pytest.mark.parametrize("mode", ["direct", "checkpoint", "adjoint"])
def test_output_time_gradients_closed_form(mode):
    """y' = -k y: d loss / d t[b, j] of y_b(t[b, j]) = y0_b exp(-k_b (t[b, j] - t[b, 0]))."""
    k = torch.tensor([0.5, 1.0, -0.3], dtype=F64)
    y0 = torch.tensor([[1.0], [2.0], [-1.0]], dtype=F64)
    t = torch.tensor([[0.0, 0.5, 1.0], [2.0, 1.0, 0.0], [-1.0, 0.0, 2.0]], dtype=F64)

    def f(tt, y):
        return -k[:, None] * y * (1 + 0 * tt[:, None])

    def exact(tt):
        return y0 * torch.exp(-k[:, None] * (tt - tt[:, :1]))

    for grid in (t, t[0]):  # own rows; one shared row (gradient summed over samples)
        tt = grid.clone().requires_grad_(True)
        sol = odeflow.solve(f, y0, tt, rtol=1e-10, atol=1e-10, options=PS, gradient=mode,
                            adjoint_params=())
        (got,) = torch.autograd.grad((sol.ys[..., 0].T ** 2 * (1 + tt)).sum(), tt)
        te = grid.clone().requires_grad_(True)
        full = te if te.ndim == 2 else te.expand(3, -1)
        (ref,) = torch.autograd.grad((exact(full) ** 2 * (1 + full)).sum(), te)
        assert ((got - ref) / (1 + ref.abs())).abs().max().item() < 1e-8


# -------------------------------------------------------------------------------- events
def _ball(batch=5):
    g = torch.linspace(5.0, 15.0, batch, dtype=F64).requires_grad_(True)
    h0 = torch.linspace(1.0, 3.0, batch, dtype=F64).requires_grad_(True)
    v0 = torch.linspace(-1.0, 2.0, batch, dtype=F64)

    def f(t, y):
        return torch.stack([y[:, 1], -g * torch.ones_like(y[:, 1])], 1)

    def landing():  # closed form: h0 + v0 T - g T^2 / 2 = 0
        return (v0 + torch.sqrt(v0 ** 2 + 2 * g * h0)) / g

    return g, h0, v0, f, landing


@pytest.mark.parametrize("mode", ["direct", "checkpoint", "adjoint"])
def test_each_sample_stops_at_its_own_event_with_ift_gradients(mode):
    g, h0, v0, f, landing = _ball()
    y0 = torch.stack([h0, v0], 1)
    sol = odeflow.solve(f, y0, torch.tensor([0.0, math.inf], dtype=F64), event_fn=lambda t, y:
                        y[:, 0], options=PS, gradient=mode, rtol=1e-10, atol=1e-10,
                        adjoint_params=(g, h0))
    T = landing()
    assert sol.event_t.shape == (5,) and sol.ys.shape == (2, 5, 2) and sol.ts.shape == (5, 2)
    assert (sol.event_t - T).abs().max().item() < 1e-12
    assert sol.sample_stats.statuses() == [Status.EVENT] * 5 and sol.stats.status == Status.EVENT
    assert sol.event_index.tolist() == [0] * 5
    assert (sol.ys[1, :, 0]).abs().max().item() < 1e-12
    # d(sum T)/d(g, h0) and d(sum v(T))/d(g, h0) against the closed form.
    loss = sol.event_t.sum() + 0.5 * sol.ys[1, :, 1].sum()
    exact = T.sum() + 0.5 * (v0 - g * T).sum()
    got = torch.autograd.grad(loss, (g, h0))
    ref = torch.autograd.grad(exact, (g, h0))
    for a, b in zip(got, ref):
        assert (a - b).abs().max().item() < 1e-9
    # Each sample's own start time: t* = t0 + T, so d t*/d t0 = 1 and v(t*) does not move.
    t0 = torch.linspace(-1.0, 1.0, 5, dtype=F64).requires_grad_(True)
    t = torch.stack([t0, torch.full((5,), math.inf, dtype=F64)], 1)
    sol = odeflow.solve(f, y0, t, event_fn=lambda t, y: y[:, 0], options=PS, gradient=mode,
                        rtol=1e-10, atol=1e-10, adjoint_params=(g, h0))
    assert (sol.event_t - t0 - T).abs().max().item() < 1e-12
    (d_t0,) = torch.autograd.grad(sol.event_t.sum() + sol.ys[1, :, 1].sum(), t0)
    assert (d_t0 - 1).abs().max().item() < 1e-9
    # Parameters of event_fn itself: landing on a per-sample level.
    level = torch.linspace(-0.3, 0.2, 5, dtype=F64).requires_grad_(True)
    sol = odeflow.solve(f, y0, torch.tensor([0.0, math.inf], dtype=F64), event_fn=lambda t, y:
                        y[:, 0] - level, options=PS, gradient=mode, rtol=1e-10, atol=1e-10,
                        adjoint_params=(g, h0))
    T_level = (v0 + torch.sqrt(v0 ** 2 + 2 * g * (h0 - level))) / g
    got = torch.autograd.grad(sol.event_t.sum(), level)[0]
    ref = torch.autograd.grad(T_level.sum(), level)[0]
    assert (got - ref).abs().max().item() < 1e-9


@pytest.mark.parametrize("method", ["dopri5", "dopri8"])
def test_events_match_separate_event_solves_and_directions(method):
    """Nonlinear per-sample events with two values and a direction, against joint solves
    (dopri8 locates its roots by re-stepping, as the joint locator)."""
    mu, y0, f = _batch(4)
    level = torch.tensor([0.3, -0.2, 0.5, 0.0], dtype=F64)

    def ev(t, y):  # (B, 2): x crosses its level falling only; v crosses 1.5
        return torch.stack([y[:, 0] - level, y[:, 1] - 1.5], 1)

    t = torch.tensor([0.0, 20.0], dtype=F64)
    sol = odeflow.solve(f, y0, t, event_fn=ev, event_direction=[-1, 0], options=PS,
                        rtol=1e-9, atol=1e-9, method=method)
    for b in range(4):
        one = odeflow.solve(_single(mu[b]), y0[b], t, rtol=1e-9, atol=1e-9,
                            event_fn=lambda tt, y, b=b: torch.stack([y[0] - level[b],
                                                                     y[1] - 1.5]),
                            event_direction=[-1, 0], method=method)
        assert abs(sol.event_t[b].item() - one.event_t.item()) < 1e-10
        assert sol.event_index[b].item() == one.event_index
        assert (sol.ys[1, b] - one.ys[1]).abs().max().item() < 1e-9


def test_event_throw_and_samples_without_a_crossing():
    g, h0, v0, f, landing = _ball()
    y0 = torch.stack([h0, v0], 1).detach()
    ev = lambda t, y: y[:, 0]  # noqa: E731
    # Bounded search: the samples that do not land by t1 get NO_EVENT, never an error.
    t1 = 0.6
    sol = odeflow.solve(f, y0, torch.tensor([0.0, t1], dtype=F64), event_fn=ev, options=PS)
    T = landing().detach()
    hit = T < t1
    assert sol.sample_stats.codes.tolist() == [1 if h else 5 for h in hit.tolist()]
    assert torch.isnan(sol.event_t[~hit]).all() and (sol.event_t[hit] - T[hit]).abs().max() < 1e-9
    assert (sol.ts[~hit, 1] == t1).all() and sol.stats.status == Status.NO_EVENT
    assert (sol.event_index[~hit] == -1).all()
    exact_h = h0.detach() + v0 * t1 - 0.5 * g.detach() * t1 ** 2
    assert (sol.ys[1, ~hit, 0] - exact_h[~hit]).abs().max() < 1e-9
    # Unbounded search: a sample that never crosses runs out of steps; throw raises after
    # all samples finished, throw=False returns the others.
    y_up = y0.clone()
    y_up[1, 1] = 1e3
    up = lambda t, y: torch.stack([y[:, 1], torch.zeros_like(y[:, 1])], 1)  # noqa: E731
    kw = dict(event_fn=ev, options=dict(per_sample=True, max_num_steps=50))
    inf_t = torch.tensor([0.0, -math.inf], dtype=F64)  # backwards: h = h0 + v0 t
    y_up[:, 1] = torch.tensor([1.0, -1.0, 2.0, 0.5, 1.0], dtype=F64)
    with pytest.raises(odeflow.SolveError, match="1 of 5 samples failed"):
        odeflow.solve(up, y_up, inf_t, **kw)
    sol = odeflow.solve(up, y_up, inf_t, throw=False, **kw)
    assert sol.sample_stats.statuses()[1] == Status.MAX_STEPS_REACHED
    expect = -y_up[:, 0] / y_up[:, 1]
    ok = [0, 2, 3, 4]
    assert (sol.event_t[ok] - expect[ok]).abs().max() < 1e-12


def test_odeint_event_and_odeint_interfaces():
    g, h0, v0, f, landing = _ball(3)
    y0 = torch.stack([h0, v0], 1)
    event_t, ys = odeflow.odeint_event(f, y0, torch.tensor(0.0, dtype=F64), options=PS,
                                       event_fn=lambda t, y: y[:, 0], rtol=1e-10, atol=1e-10)
    assert (event_t - landing()).abs().max().item() < 1e-12 and ys.shape == (2, 3, 2)
    event_t, ys = odeflow.odeint(f, y0, torch.tensor([0.0, 1.0], dtype=F64), options=PS,
                                 event_fn=lambda t, y: y[:, 0], rtol=1e-10, atol=1e-10)
    assert (event_t - landing()).abs().max().item() < 1e-12


@pytest.mark.parametrize("preset", ["integral", "pi", "pid"])
def test_propose_on_lanes_is_propose_elementwise(preset):
    """The per-sample step-size rule is the joint one, sample by sample (one function: the
    lane operations come from the values' type)."""
    from odeflow.controllers import CONTROLLER_PRESETS, ControllerState, PIDController

    ctrl = PIDController(**CONTROLLER_PRESETS[preset])
    g = torch.Generator().manual_seed(3)
    n = 64
    err = torch.rand(n, generator=g, dtype=F64) * 3
    err[:4] = torch.tensor([0.0, math.inf, math.nan, 1.0])
    accepted = (err <= 1) & (torch.rand(n, generator=g) < 0.9)
    dt = torch.rand(n, generator=g, dtype=F64) + 0.01
    state = ControllerState(torch.rand(n, generator=g, dtype=F64) + 0.1,
                            torch.rand(n, generator=g, dtype=F64) + 0.1)
    new_dt, new_state = ctrl.propose(dt, err, accepted, 5, state)
    for i in range(n):
        ref_dt, ref_state = ctrl.propose(dt[i].item(), err[i].item(), bool(accepted[i]), 5,
                                         ControllerState(state.err_prev[i].item(),
                                                         state.err_prev2[i].item()))
        assert new_dt[i].item() == pytest.approx(ref_dt, rel=1e-14)
        assert new_state.err_prev[i].item() == pytest.approx(ref_state.err_prev, rel=1e-14)
        assert new_state.err_prev2[i].item() == pytest.approx(ref_state.err_prev2, rel=1e-14)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", ["direct", "checkpoint", "adjoint"])
def test_cuda_matches_cpu(mode):
    """Own grids, per-sample jumps, events and gradients on CUDA equal the CPU's."""
    out = {}
    for dev in ("cpu", "cuda"):
        k = torch.tensor([0.5, 1.0, -0.3], dtype=F64, device=dev, requires_grad=True)
        tau = torch.tensor([[0.3], [0.6], [0.9]], dtype=F64, device=dev)

        def f(t, y, k=k, tau=tau):
            return -k[:, None] * y + torch.where(t[:, None] < tau, 0.5, -0.5)

        y0 = torch.tensor([[1.0], [2.0], [-1.0]], dtype=F64, device=dev)
        t = torch.tensor([[0.0, 0.5, 1.0], [1.0, 0.5, 0.0], [-1.0, 0.0, 2.0]], dtype=F64,
                         device=dev)
        sol = odeflow.solve(f, y0, t, options=dict(per_sample=True, jump_t=tau),
                            gradient=mode, adjoint_params=(k,), rtol=1e-9, atol=1e-9)
        ev = odeflow.solve(f, y0, torch.tensor([0.0, math.inf], dtype=F64, device=dev),
                           event_fn=lambda t, y: y[:, 0] - 0.2, options=PS, gradient=mode,
                           adjoint_params=(k,), rtol=1e-9, atol=1e-9, throw=False)
        assert sol.ys.device.type == dev and ev.event_t.device.type == dev
        loss = sol.ys.sum() + torch.nan_to_num(ev.event_t).sum()
        out[dev] = (sol.ys.cpu(), ev.event_t.cpu(), torch.autograd.grad(loss, k)[0].cpu())
    for a, b in zip(out["cpu"], out["cuda"]):
        assert torch.allclose(a, b, atol=1e-9, equal_nan=True)


@pytest.mark.parametrize("mode", ["direct", "checkpoint"])
def test_overflowing_trial_steps_keep_gradients_finite(mode):
    """Rejected trials that overflow to inf must not turn torch.where's zero gradient into
    nan: the shared parameter's gradient equals the sum over separate solves."""
    w = torch.tensor(1.0, dtype=F64, requires_grad=True)
    g = lambda t, y: -w * y ** 3  # noqa: E731
    y0 = torch.tensor([[30.0], [1.0]], dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    opts = dict(first_step=1.0)  # the first trial of sample 0 overflows
    sol = odeflow.solve(g, y0, t, options=dict(per_sample=True, **opts), gradient=mode,
                        adjoint_params=(w,))
    (got,) = torch.autograd.grad(sol.ys[-1].sum(), w)
    ref = sum(torch.autograd.grad(odeflow.solve(g, y0[b], t, options=opts).ys[-1].sum(), w)[0]
              for b in range(2))
    assert torch.isfinite(got) and abs(got.item() - ref.item()) < 1e-12


@pytest.mark.parametrize("mode", ["checkpoint", "adjoint"])
def test_failed_samples_get_no_gradient(mode):
    w = torch.tensor(0.7, dtype=F64, requires_grad=True)

    def f(t, y):
        poison = torch.where((torch.arange(2) == 1) & (t > 0.5), math.nan, 0.0)
        return -w * y + poison[:, None]

    y0 = torch.tensor([[1.0], [2.0]], dtype=F64)
    t = torch.tensor([0.0, 0.4, 1.0], dtype=F64)
    sol = odeflow.solve(f, y0, t, options=PS, gradient=mode, adjoint_params=(w,), throw=False,
                        rtol=1e-10, atol=1e-10)
    assert sol.sample_stats.statuses()[1] == Status.NONFINITE
    (got,) = torch.autograd.grad(torch.nan_to_num(sol.ys).sum(), w)
    exact = -(t * torch.exp(-0.7 * t)).sum().item()  # sample 0 only: d/dw of e^{-w t}
    assert abs(got.item() - exact) < 1e-7


@pytest.mark.parametrize("method", ["dopri5", "kvaerno5"])
@pytest.mark.parametrize("mode", ["checkpoint", "adjoint"])
def test_a_sample_nonfinite_at_its_start_leaves_the_shared_gradient_finite(method, mode):
    # y' = -p sqrt(y): sample 0 (y0 = -1) fails at t0, where func is nan. Its zero gradient
    # terms must not meet that nan (0 * nan): evaluated at its own start state they made
    # dL/dp nan (checkpoint, explicit adjoint) and its dL/dy0 nan (checkpoint).
    p = torch.tensor(1.0, dtype=F64, requires_grad=True)
    y0 = torch.tensor([[-1.0], [2.0]], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    sol = odeflow.solve(lambda t, y: -p * torch.sqrt(y), y0, t, method=method, gradient=mode,
                        adjoint_params=(p,), options=PS, throw=False, rtol=1e-10, atol=1e-12)
    assert sol.sample_stats.statuses()[0] == Status.NONFINITE
    g_y0, g_p = torch.autograd.grad(torch.nan_to_num(sol.ys[-1]).sum(), (y0, p))
    # Sample 1 alone: sqrt(y(1)) = sqrt(2) - p/2, so dy(1)/dp = -(sqrt(2) - p/2) and
    # dy(1)/dy0 = (sqrt(2) - p/2) / sqrt(2); sample 0 gets no gradient.
    assert g_y0[0, 0] == 0.0
    assert abs(g_y0[1, 0].item() - (1 - 0.5 / math.sqrt(2))) < 1e-6
    assert abs(g_p.item() + (math.sqrt(2) - 0.5)) < 1e-6


def test_tuple_states():
    """A tuple y0 (each tensor batch first), as a CNF's (z, log p): per-component
    tolerances, the mixed norm, events and gradients, against separate solves."""
    k = torch.tensor([0.5, 1.0, 2.0], dtype=F64, requires_grad=True)

    def f(t, state):  # z' = -k z, l' = -k * sum(z) (so l = sum(z) up to its start)
        z, l = state
        dz = -k[:, None] * z
        return dz, dz.sum(1, keepdim=True)

    z0 = torch.tensor([[1.0, 2.0], [0.5, -1.0], [3.0, 0.0]], dtype=F64)
    l0 = torch.zeros(3, 1, dtype=F64)
    t = torch.tensor([[0.0, 0.5, 1.0], [0.0, 1.0, 2.0], [1.0, 0.5, 0.0]], dtype=F64)
    sol = odeflow.solve(f, (z0, l0), t, rtol=[1e-9, 1e-7], atol=1e-10, options=PS)
    z, l = sol.ys
    assert z.shape == (3, 3, 2) and l.shape == (3, 3, 1)
    exact = z0[None] * torch.exp(-k.detach()[None, :, None] * (t - t[:, :1]).T[:, :, None])
    assert ((z - exact) / (1 + exact.abs())).abs().max().item() < 1e-8
    assert (l[..., 0] - (exact.sum(-1) - z0.sum(-1))).abs().max().item() < 1e-5
    for b in range(3):
        one = odeflow.solve(lambda tt, s, b=b: (-k[b] * s[0], (-k[b] * s[0]).sum(1,
                            keepdim=True)), (z0[b:b + 1], l0[b:b + 1]), t[b],
                            rtol=[1e-9, 1e-7], atol=1e-10)
        assert (one.ys[0][:, 0] - z[:, b]).abs().max().item() < 1e-12
        assert sol.sample_stats.n_accepted[b].item() == one.stats.n_accepted
    (g,) = torch.autograd.grad(l[-1].sum(), k)
    ck = odeflow.solve(f, (z0, l0), t, rtol=1e-9, atol=1e-10, options=PS,
                       gradient="checkpoint", adjoint_params=(k,))
    (gc,) = torch.autograd.grad(ck.ys[1][-1].sum(), k)
    assert (g - gc).abs().max().item() < 1e-6
    ev = odeflow.solve(f, (z0, l0), torch.tensor([0.0, 5.0], dtype=F64), options=PS,
                       event_fn=lambda t, s: s[1][:, 0] + 0.5, rtol=1e-10, atol=1e-10)
    hit = ev.event_t.isfinite()
    assert hit.tolist() == [True, False, True]  # l falls to -0.5 only where sum(z0) > 0.5
    expect = -torch.log1p(-0.5 / z0.sum(1)) / k.detach()
    assert (ev.event_t[hit] - expect[hit]).abs().max().item() < 1e-9


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "dopri8"])
def test_dense_output_per_sample_matches_each_samples_own_dense_solve(method):
    # Each sample's dense output equals that sample's joint dense solve (same steps), on
    # shared times and on per-sample times; outside a sample's own span is an error.
    mu, y0, f = _batch(5)
    t = torch.stack([torch.linspace(0.0, 2.0 + 0.5 * b, 3, dtype=F64) for b in range(5)])
    sol = odeflow.solve(f, y0, t, rtol=1e-9, atol=1e-9, method=method, dense=True,
                        options={"per_sample": True})
    probe = torch.tensor([0.0, 0.37, 1.5, 2.0], dtype=F64)
    shared = sol.evaluate(probe)
    assert shared.shape == (4, 5, 2)
    own = torch.stack([torch.linspace(0.1, 2.0 + 0.5 * b, 4, dtype=F64) for b in range(5)])
    per = sol.evaluate(own)
    for b in range(5):
        joint = odeflow.solve(lambda tt, y, b=b: f(tt.expand(5), y.expand(5, 2))[b], y0[b],
                              t[b], rtol=1e-9, atol=1e-9, method=method, dense=True)
        assert torch.allclose(shared[:, b], joint.evaluate(probe), atol=1e-12, rtol=0)
        assert torch.allclose(per[:, b], joint.evaluate(own[b]), atol=1e-12, rtol=0)
        assert torch.allclose(sol.derivative(probe)[:, b], joint.derivative(probe),
                              atol=1e-10, rtol=0)
    assert sol.evaluate(1.0).shape == (5, 2)
    with pytest.raises(ValueError, match="outside sample 0's solved span"):
        sol.evaluate(2.2)


def test_compiled_per_sample_step_matches_eager():
    # options["compile"]: the stage loop through torch.compile gives the same solution
    # and the same evaluation count (counted outside the compiled region).
    mu, y0, f = _batch(6)
    t = torch.tensor([0.0, 1.5, 3.0], dtype=F64)
    with torch.no_grad():
        eager = odeflow.solve(f, y0, t, rtol=1e-8, atol=1e-8, options={"per_sample": True})
        comp = odeflow.solve(f, y0, t, rtol=1e-8, atol=1e-8,
                             options={"per_sample": True, "compile": True})
    assert torch.allclose(comp.ys, eager.ys, atol=1e-12, rtol=0)
    assert comp.stats.nfe == eager.stats.nfe
    with pytest.raises(ValueError, match="compile.*per_sample"):
        odeflow.solve(f, y0, t, options={"compile": True})


def test_progress_per_sample(capsys):
    mu, y0, f = _batch(4)
    t = torch.tensor([0.0, 2.0], dtype=F64)
    sol = odeflow.solve(f, y0, t, options={"per_sample": True}, progress=True)
    err = capsys.readouterr().err
    assert "per-sample solve" in err and "done=1" in err
    assert torch.isfinite(sol.ys).all()
