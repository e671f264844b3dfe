"""One loop for joint and per-sample solves: every family per sample, each sample taking
exactly the steps a solve of that sample alone takes, and the capabilities that used to be
joint-only (fixed grids, complex states, callbacks, dense output with events)."""

from __future__ import annotations

import math

import pytest
import torch

import odeflow
from odeflow import Status

from .problems import ROBERTSON_RATES as RATES
from .problems import robertson_kinetics, vdp_batch

F64 = torch.float64
PS = {"per_sample": True}


@pytest.mark.parametrize("method,tol", [("dopri5", 1e-8), ("bosh3", 1e-6), ("tsit5", 1e-7),
                                        ("rodas5p", 1e-6), ("rodas4", 1e-6),
                                        ("kvaerno5", 1e-6), ("kvaerno3", 1e-6),
                                        ("trbdf2", 1e-6), ("auto", 1e-6)])
def test_every_adaptive_family_takes_each_samples_own_steps(method, tol):
    y0, f, single = vdp_batch()
    t = torch.tensor([0.0, 0.4, 1.5], dtype=F64)
    sol = odeflow.solve(f, y0, t, rtol=tol, atol=tol, method=method, options=PS)
    for b in range(y0.shape[0]):
        own = odeflow.solve(single(b), y0[b], t, rtol=tol, atol=tol, method=method)
        assert int(sol.sample_stats.n_accepted[b]) == own.stats.n_accepted
        assert int(sol.sample_stats.n_rejected[b]) == own.stats.n_rejected
        # the same steps: the values differ by rounding only (batched vs joint kernels)
        assert (sol.ys[:, b] - own.ys).abs().max().item() < 1e-9


IMPLICIT_COUNTS = ("n_newton_iters", "n_jacobians", "n_lu", "n_newton_failures")


def _radau(k, t, y0):
    from scipy.integrate import solve_ivp

    f = robertson_kinetics(k)
    sol = solve_ivp(lambda s, y: f(s, torch.as_tensor(y)).numpy(), (float(t[0]), float(t[-1])),
                    y0.tolist(), method="Radau", rtol=1e-10, atol=1e-16, t_eval=t.numpy())
    assert sol.success
    return torch.as_tensor(sol.y.T)


@pytest.mark.parametrize("method,bound", [("kvaerno5", 2.0), ("kvaerno3", 2.0),
                                          ("trbdf2", 50.0)])
def test_implicit_families_take_each_samples_own_steps_and_newton_work(method, bound):
    # Each sample its own output grid (the shorter ones idle while the others step).
    t = torch.tensor([[0.0, 1e-2, 1.0, 40.0], [0.0, 0.1, 3.0, 10.0], [0.0, 1e-3, 5.0, 80.0]],
                     dtype=F64)
    y0 = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.0, 0.1], [1.0, 1e-5, 0.0]], dtype=F64)
    rtol, atol = 1e-6, 1e-10
    sol = odeflow.solve(robertson_kinetics(RATES), y0, t, rtol=rtol, atol=atol, method=method,
                        options=PS)
    total = dict.fromkeys(IMPLICIT_COUNTS, 0)
    for b in range(3):
        own = odeflow.solve(robertson_kinetics(RATES[b]), y0[b], t[b], rtol=rtol, atol=atol,
                            method=method)
        assert int(sol.sample_stats.n_accepted[b]) == own.stats.n_accepted
        assert int(sol.sample_stats.n_rejected[b]) == own.stats.n_rejected
        assert (sol.ys[:, b] - own.ys).abs().max().item() < 1e-12
        for name in total:
            total[name] += getattr(own.stats, name)
        # accurate per sample: SciPy's Radau at rtol 1e-10, in units of the tolerance
        ref = _radau(RATES[b], t[b], y0[b])
        err = ((sol.ys[:, b] - ref).abs() / (atol + rtol * ref.abs())).max().item()
        assert err < bound, (b, err)
    # the same Newton iterations, Jacobians, LUs and failures as the samples alone
    assert {name: getattr(sol.stats, name) for name in total} == total
    assert total["n_jacobians"] < total["n_lu"] < total["n_newton_iters"]


def test_auto_switches_per_sample_as_each_sample_alone():
    # van der Pol with mu from 100 to 300: each sample turns stiff, and back, at its own times.
    mu = torch.tensor([200.0, 100.0, 300.0], dtype=F64)
    y0 = torch.tensor([[2.0, 0.0], [1.5, 0.0], [2.0, 0.5]], dtype=F64)
    t = torch.tensor([0.0, 50.0, 200.0], dtype=F64)
    rtol, atol = 1e-7, 1e-9

    def vdp(m):
        return lambda t, y: torch.stack([y[..., 1], m * (1 - y[..., 0] ** 2) * y[..., 1]
                                         - y[..., 0]], -1)

    sol = odeflow.solve(vdp(mu), y0, t, rtol=rtol, atol=atol, method="auto", options=PS)
    n_back = 0
    for b in range(3):
        own = odeflow.solve(vdp(mu[b]), y0[b], t, rtol=rtol, atol=atol, method="auto")
        assert int(sol.sample_stats.n_accepted[b]) == own.stats.n_accepted
        assert int(sol.sample_stats.n_rejected[b]) == own.stats.n_rejected
        assert (sol.ys[:, b] - own.ys).abs().max().item() < 1e-12
        mine = [(m, tt) for tt, m, lane in sol.stats.switches if lane == b]
        assert [m for m, _ in mine] == [m for _, m in own.stats.switches]
        # at the same steps (their sizes differ by the error estimates' rounding)
        assert all(math.isclose(at, at_own, rel_tol=1e-7)
                   for (_, at), (at_own, _) in zip(mine, own.stats.switches))
        n_back += sum(m == "tsit5" for m, _ in mine)
        ref = _vdp_radau(float(mu[b]), y0[b], t)
        assert (sol.ys[:, b] - ref).abs().max().item() < 2e-4
    assert n_back >= 1  # some sample switched back to the explicit method


def _vdp_radau(mu, y0, t):
    from scipy.integrate import solve_ivp

    sol = solve_ivp(lambda s, y: [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]],
                    (float(t[0]), float(t[-1])), y0.tolist(), method="Radau", rtol=1e-10,
                    atol=1e-12, t_eval=t.numpy())
    assert sol.success
    return torch.as_tensor(sol.y.T)


@pytest.mark.parametrize("mode", ["direct", "checkpoint"])
def test_esdirk_per_sample_gradients_are_each_samples_own(mode):
    # Backprop through the per-lane Newton (implicit-function theorem per lane) and the
    # checkpointed replay give each sample the gradient of its own solve.
    rates = torch.tensor([[0.04, 3e3, 1e2], [0.05, 2e3, 2e2]], dtype=F64)
    t = torch.tensor([0.0, 0.2, 0.6], dtype=F64)
    y0 = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.0, 0.1]], dtype=F64)
    w = torch.tensor([1.0, 1e3, 1.0], dtype=F64)
    k = rates.clone().requires_grad_(True)
    sol = odeflow.solve(robertson_kinetics(k), y0, t, method="kvaerno3", gradient=mode, options=PS,
                        adjoint_params=(k,), rtol=1e-6, atol=1e-10)
    (got,) = torch.autograd.grad((sol.ys * w).sum(), k)
    for b in range(2):
        kb = rates[b].clone().requires_grad_(True)
        own = odeflow.solve(robertson_kinetics(kb), y0[b], t, method="kvaerno3", gradient=mode,
                            adjoint_params=(kb,), rtol=1e-6, atol=1e-10)
        (ref,) = torch.autograd.grad((own.ys * w).sum(), kb)
        assert int(sol.sample_stats.n_accepted[b]) == own.stats.n_accepted
        assert ((got[b] - ref).abs() / ref.abs()).max().item() < 1e-10


@pytest.mark.parametrize("method", ["kvaerno5", "rodas5p"])
def test_interpolating_adjoint_per_sample_after_an_implicit_forward(method):
    # Moderately stiff kinetics, a rate set per sample: the adjoint (a backwards per sample,
    # y from the forward dense output) against per-sample backprop and finite differences.
    rates = torch.tensor([[0.04, 3e3, 1e2], [0.05, 2e3, 2e2]], dtype=F64)
    t = torch.tensor([0.0, 0.3, 1.0], dtype=F64)
    w = torch.tensor([1.0, 1e3, 1.0], dtype=F64)
    y0 = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.0, 0.1]], dtype=F64)
    tol = dict(rtol=1e-7, atol=1e-10)
    grads = {}
    for mode in ("adjoint", "direct"):
        k = rates.clone().requires_grad_(True)
        y = y0.clone().requires_grad_(True)
        sol = odeflow.solve(robertson_kinetics(k), y, t, method=method, gradient=mode, options=PS,
                            adjoint_params=(k,), **tol)
        grads[mode] = torch.autograd.grad((sol.ys * w).sum(), (k, y))
        if mode == "adjoint":
            assert sol.stats.nfe_backward > 0
    for got, ref in zip(grads["adjoint"], grads["direct"]):  # measured: 1e-7 and below
        assert ((got - ref).abs() / ref.abs().clamp(min=1e-3)).max().item() < 1e-6
    # central differences of the loss in one rate of each sample
    for b in range(2):
        loss = []
        for sign in (1, -1):
            k = rates.clone()
            k[b, 0] *= 1 + sign * 1e-5
            ys = odeflow.solve(robertson_kinetics(k), y0, t, method="kvaerno5", options=PS,
                               rtol=1e-10, atol=1e-14).ys
            loss.append(float((ys * w).sum()))
        fd = (loss[0] - loss[1]) / (2e-5 * float(rates[b, 0]))
        assert abs(grads["adjoint"][0][b, 0].item() - fd) < 1e-6 * abs(fd)


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_fixed_grids_per_sample_with_own_output_grids(method):
    y0, f, single = vdp_batch(3)
    t = torch.tensor([[0.0, 0.3, 1.0], [0.5, 0.9, 1.2], [2.0, 1.5, 1.0]], dtype=F64)
    opts = dict(per_sample=True, step_size=0.05)
    sol = odeflow.solve(f, y0, t, method=method, options=opts)
    for b in range(3):
        own = odeflow.solve(single(b), y0[b], t[b], method=method, options=dict(step_size=0.05))
        assert int(sol.sample_stats.n_accepted[b]) == own.stats.n_accepted
        assert (sol.ys[:, b] - own.ys).abs().max().item() < 1e-12


def test_complex_states_per_sample():
    w = torch.tensor([1.0, 2.0, -0.5], dtype=F64)
    y0 = torch.ones(3, 2, dtype=torch.complex128)
    t = torch.linspace(0, 1, 5, dtype=F64)
    sol = odeflow.solve(lambda t, y: 1j * w[:, None] * y, y0, t, rtol=1e-10, atol=1e-12,
                        options=PS)
    exact = torch.exp(1j * w[None, :, None] * t[:, None, None]) * y0
    assert sol.ys.dtype == torch.complex128
    assert (sol.ys - exact).abs().max().item() < 1e-8


def test_callbacks_are_called_per_sample():
    y0, f, _ = vdp_batch(3)
    seen = {"step": 0, "accept": 0}

    class Field(torch.nn.Module):
        def forward(self, t, y):
            return f(t, y)

        def callback_step(self, t, y, dt):
            assert t.shape == (3,) and y.shape == (3, 2) and dt.shape == (3,)
            seen["step"] += 1

        def callback_accept_step(self, t, y, dt):
            seen["accept"] += 1

    sol = odeflow.solve(Field(), y0, torch.tensor([0.0, 1.0], dtype=F64), options=PS)
    assert seen["step"] == sol.stats.n_steps and 0 < seen["accept"] <= sol.stats.n_steps


@pytest.mark.parametrize("per_sample", [False, True])
def test_dense_output_together_with_events(per_sample):
    # Free fall from 1 with v = 0: y = 1 - t^2 / 2 hits zero at sqrt(2).
    g = lambda t, y: torch.stack([y[..., 1], -torch.ones_like(y[..., 0])], -1)  # noqa: E731
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    if per_sample:
        y0 = y0.expand(2, 2).clone()
    sol = odeflow.solve(g, y0, torch.tensor([0.0, 5.0], dtype=F64), dense=True,
                        event_fn=lambda t, y: y[..., 0], options=PS if per_sample else None)
    assert torch.allclose(sol.event_t, torch.full_like(sol.event_t, math.sqrt(2)), atol=1e-9)
    mid = sol.evaluate(torch.tensor([0.5, 1.0], dtype=F64))
    expected = 1 - torch.tensor([0.5, 1.0], dtype=F64) ** 2 / 2
    got = mid[..., 0] if not per_sample else mid[:, 0, 0]
    assert torch.allclose(got, expected, atol=1e-12)
    beyond = sol.evaluate(torch.tensor(3.0, dtype=F64))  # past the event: no value
    assert torch.isnan(beyond).all()


def test_dense_output_beyond_a_failure_is_nan():
    # y' = y^2 from 1 blows up at t = 1: the solve fails there; throw=False keeps the rest.
    f = lambda t, y: y * y  # noqa: E731
    t = torch.tensor([0.0, 0.5, 0.8, 1.5], dtype=F64)
    sol = odeflow.solve(f, torch.ones(1, dtype=F64), t, dense=True, throw=False,
                        options=dict(max_num_steps=200))
    assert sol.stats.status != Status.SUCCESS
    assert abs(sol.evaluate(0.5).item() - 2.0) < 1e-5
    assert torch.isnan(sol.evaluate(1.2)).all() and torch.isnan(sol.ys[-1]).all()
    # per sample: only the failing sample's later values are nan
    y0 = torch.tensor([[1.0], [0.1]], dtype=F64)
    sol = odeflow.solve(f, y0, t, dense=True, throw=False,
                        options=dict(per_sample=True, max_num_steps=200))
    later = sol.evaluate(1.2)
    assert torch.isnan(later[0]).all() and abs(later[1].item() - 0.1 / (1 - 0.12)) < 1e-6


def test_progress_counts_the_solves_steps(capsys):
    y0, f, _ = vdp_batch(3)
    sol = odeflow.solve(f, y0, torch.tensor([0.0, 1.0], dtype=F64), options=PS, progress=True)
    err = capsys.readouterr().err
    assert f"steps={sol.stats.n_steps}" in err.strip().splitlines()[-1]
    assert "\r" not in err  # not a terminal: plain lines


def test_zero_sample_batch_names_y0():
    with pytest.raises(ValueError, match=r"y0.*at least one sample"):
        odeflow.solve(lambda t, y: -y, torch.ones(0, 2, dtype=F64),
                      torch.tensor([0.0, 1.0], dtype=F64), options=PS)


def test_sample_stats_hold_status_values():
    y0, f, _ = vdp_batch(2)
    sol = odeflow.solve(f, y0, torch.tensor([0.0, 1.0], dtype=F64), options=PS)
    assert all(isinstance(s, Status) for s in sol.sample_stats.status)
    assert sol.sample_stats.codes.tolist() == [0, 0]


@pytest.mark.parametrize("mode", ["checkpoint", "adjoint"])
def test_fixed_grid_per_sample_gradients(mode):
    k = torch.tensor([0.5, 1.5], dtype=F64, requires_grad=True)
    y0 = torch.ones(2, 1, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)

    class Decay(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.k = torch.nn.Parameter(k.detach().clone())

        def forward(self, t, y):
            return -self.k[:, None] * y

    ref_model, model = Decay(), Decay()
    opts = dict(per_sample=True, step_size=0.01)
    ys = odeflow.solve(ref_model, y0, t, method="rk4", options=opts).ys
    ys[-1].sum().backward()
    ys = odeflow.solve(model, y0, t, method="rk4", options=opts, gradient=mode).ys
    ys[-1].sum().backward()
    tol = 1e-12 if mode == "checkpoint" else 1e-6
    assert torch.allclose(model.k.grad, ref_model.k.grad, atol=tol, rtol=0)
    assert torch.allclose(ref_model.k.grad, -torch.exp(-k.detach()), atol=1e-8)


def test_one_sample_per_sample_is_its_joint_solve_in_the_per_sample_form():
    # A batch of one runs on the scalar clock: the steps of its joint solve, with func, the
    # results, sample_stats, events and dense output all in the per-sample form.
    y0, f, single = vdp_batch(2)
    t = torch.tensor([[0.0, 0.5, 1.5]], dtype=F64)
    seen = []

    def f1(tt, y):
        seen.append(tuple(tt.shape))
        return f(tt, y.expand(2, 2))[:1]

    one = odeflow.solve(f1, y0[:1], t, rtol=1e-8, atol=1e-8, options=PS, dense=True)
    own = odeflow.solve(single(0), y0[0], t[0], rtol=1e-8, atol=1e-8)
    assert set(seen) == {(1,)}  # func sees t of shape (B,) = (1,)
    assert one.ys.shape == (3, 1, 2) and torch.equal(one.ys[:, 0], own.ys)
    assert one.sample_stats.status == [Status.SUCCESS]
    assert one.sample_stats.n_accepted.tolist() == [own.stats.n_accepted]
    assert one.evaluate(torch.tensor([[0.25]], dtype=F64)).shape == (1, 1, 2)
    ev = odeflow.solve(lambda tt, y: f(tt, y.expand(2, 2))[:1], y0[:1],
                       torch.tensor([0.0, 10.0], dtype=F64), options=PS,
                       event_fn=lambda tt, y: y[:, 0])
    assert ev.event_t.shape == (1,) and ev.ts.shape == (1, 2) and ev.event_index.tolist() == [0]
    assert ev.sample_stats.status == [Status.EVENT]
    none = odeflow.solve(lambda tt, y: -y, torch.ones(1, 1, dtype=F64),
                         torch.tensor([0.0, 1.0], dtype=F64), options=PS,
                         event_fn=lambda tt, y: y[:, 0] + 1)
    assert torch.isnan(none.event_t).all() and none.sample_stats.status == [Status.NO_EVENT]
