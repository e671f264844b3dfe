"""method="auto": explicit while non-stiff, rodas5p while stiff, switches in the statistics."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.integrate import solve_ivp

import odeflow

F64 = torch.float64


def test_a_non_stiff_problem_stays_explicit_and_matches_tsit5():
    def f(t, y):
        return torch.stack([y[1], -y[0]])

    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t = torch.linspace(0, 20, 5, dtype=F64)
    auto = odeflow.solve(f, y0, t, method="auto", rtol=1e-8, atol=1e-10)
    tsit = odeflow.solve(f, y0, t, method="tsit5", rtol=1e-8, atol=1e-10)
    assert auto.stats.switches == [] and auto.stats.n_jacobians == 0
    assert torch.equal(auto.ys, tsit.ys)  # the same steps: the test only reads the stages
    assert auto.stats.nfe == tsit.stats.nfe
    assert abs(float(auto.ys[-1, 0]) - math.cos(20.0)) < 1e-6


def _robertson(t, y):
    y1, y2, y3 = y[0], y[1], y[2]
    return torch.stack([-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2**2,
                        3e7 * y2**2])


def test_robertson_switches_to_rodas5p_and_meets_the_tolerance():
    t_end, rtol, atol = 1e4, 1e-6, 1e-10
    sol = odeflow.solve(_robertson, torch.tensor([1.0, 0.0, 0.0], dtype=F64),
                        torch.tensor([0.0, t_end], dtype=F64), method="auto", rtol=rtol,
                        atol=atol)
    ref = solve_ivp(lambda t, y: _robertson(t, torch.as_tensor(y)).numpy(), (0.0, t_end),
                    [1.0, 0.0, 0.0], method="Radau", rtol=1e-12, atol=1e-16).y[:, -1]
    ref = torch.tensor(ref)
    err = ((sol.ys[-1] - ref).abs() / (atol + rtol * ref.abs())).max()
    assert err <= 1.0
    first_t, first_method = sol.stats.switches[0]
    assert first_method == "rodas5p" and 0.0 < first_t < 1.0  # stiff within the first second
    assert sol.stats.n_jacobians > 0
    # tsit5 alone is limited by stability: h ~ 3.3 / 1e4 at the end, ~ 1e7 steps.
    with pytest.raises(odeflow.SolveError, match="max_num_steps"):
        odeflow.solve(_robertson, torch.tensor([1.0, 0.0, 0.0], dtype=F64),
                      torch.tensor([0.0, t_end], dtype=F64), method="tsit5", rtol=rtol,
                      atol=atol, options={"max_num_steps": 20 * sol.stats.n_steps})


def test_van_der_pol_switches_back_and_forth():
    mu = 200.0

    def vdp(t, y):
        return torch.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])

    y0 = torch.tensor([2.0, 0.0], dtype=F64)
    t_end = 400.0
    sol = odeflow.solve(vdp, y0, torch.tensor([0.0, t_end], dtype=F64), method="auto",
                        rtol=1e-7, atol=1e-9)
    methods = [m for _, m in sol.stats.switches]
    assert methods[:3] == ["rodas5p", "tsit5", "rodas5p"]  # the fast jumps are non-stiff
    times = [t for t, _ in sol.stats.switches]
    assert times == sorted(times)
    ref = solve_ivp(lambda t, y: [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]], (0.0, t_end),
                    [2.0, 0.0], method="Radau", rtol=1e-12, atol=1e-12).y[:, -1]
    assert abs(float(sol.ys[-1, 0]) - ref[0]) < 1e-4


def test_auto_gradients_direct_and_adjoint_agree_and_checkpoint_is_refused():
    k = torch.tensor([0.04, 3e3, 1e2], dtype=F64, requires_grad=True)

    def f(t, y):
        return torch.stack([-k[0] * y[0] + k[2] * y[1] * y[2],
                            k[0] * y[0] - k[2] * y[1] * y[2] - k[1] * y[1] ** 2,
                            k[1] * y[1] ** 2])

    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    t = torch.tensor([0.0, 0.5, 2.0], dtype=F64)
    w = torch.tensor([1.0, 1e4, 1.0], dtype=F64)
    grads = {}
    for mode in ("direct", "adjoint"):
        sol = odeflow.solve(f, y0, t, method="auto", rtol=1e-9, atol=1e-13, gradient=mode,
                            adjoint_params=(k,))
        (grads[mode],) = torch.autograd.grad((sol.ys[1:] * w).sum(), k)
    assert torch.allclose(grads["adjoint"], grads["direct"], rtol=1e-5)
    with pytest.raises(ValueError, match="checkpoint"):
        odeflow.solve(f, y0, t, method="auto", gradient="checkpoint", adjoint_params=(k,))


def test_the_buffered_no_grad_path_switches_where_the_autograd_path_does():
    # Without grad the explicit stages live in reused workspace rows: a rejected attempt
    # must not corrupt the derivative the retry starts from.
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    t = torch.tensor([0.0, 0.5, 20.0], dtype=F64)
    kw = dict(method="auto", rtol=1e-7, atol=1e-11)
    ref = odeflow.solve(_robertson, y0, t, **kw)
    with torch.no_grad():
        sol = odeflow.solve(_robertson, y0, t, **kw)
    assert sol.stats.n_rejected > 0 and len(ref.stats.switches) == 1
    assert (sol.stats.n_accepted, sol.stats.n_rejected) == (ref.stats.n_accepted,
                                                           ref.stats.n_rejected)
    ((at, method),), ((at_ref, method_ref),) = sol.stats.switches, ref.stats.switches
    assert method == method_ref == "rodas5p" and math.isclose(at, at_ref, rel_tol=1e-9)
    assert (sol.ys - ref.ys).abs().max().item() < 1e-12


def test_per_sample_dense_output_of_a_mixed_batch_is_each_samples_own():
    # One sample stays explicit, the other turns stiff: the batch's dense output, built
    # from both methods lane by lane, is each sample's own.
    mu = torch.tensor([1.0, 300.0], dtype=F64)
    y0 = torch.tensor([[2.0, 0.0], [2.0, 0.0]], dtype=F64)
    t = torch.tensor([0.0, 120.0], dtype=F64)
    kw = dict(method="auto", rtol=1e-6, atol=1e-8, dense=True)

    def vdp(m):
        return lambda t, y: torch.stack([y[..., 1], m * (1 - y[..., 0] ** 2) * y[..., 1]
                                         - y[..., 0]], -1)

    sol = odeflow.solve(vdp(mu), y0, t, options={"per_sample": True}, **kw)
    grid = torch.linspace(0.0, 120.0, 241, dtype=F64)
    got = sol.evaluate(grid)
    for b in range(2):
        own = odeflow.solve(vdp(mu[b]), y0[b], t, **kw)
        mine = [(at, m) for at, m, lane in sol.stats.switches if lane == b]
        assert [m for _, m in mine] == [m for _, m in own.stats.switches]
        assert (got[:, b] - own.evaluate(grid)).abs().max().item() < 1e-9
    assert not any(lane == 0 for *_, lane in sol.stats.switches)
    assert any(lane == 1 for *_, lane in sol.stats.switches)
