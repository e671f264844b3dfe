"""solve(..., dense=True): the solution anywhere in the span; and progress=True."""

from __future__ import annotations

import builtins
import math

import pytest
import torch

import odeflow
from odeflow import solve

F64 = torch.float64
T = torch.tensor([0.0, 0.7, 2.0], dtype=F64)
PROBE = torch.tensor([0.0, 0.13, 0.5, 0.71, 1.234, 1.999, 2.0], dtype=F64)

# (method, options, tolerance of the dense output against e^{-t})
CASES = [
    ("dopri5", {}, 1e-8), ("tsit5", {}, 1e-8), ("dopri8", {}, 1e-9), ("bosh3", {}, 1e-6),
    ("fehlberg2", {}, 1e-4), ("adaptive_heun", {}, 1e-4),
    ("euler", dict(step_size=0.01), 1e-2), ("midpoint", dict(step_size=0.01), 1e-5),
    ("rk4", dict(step_size=0.05), 1e-7), ("rk4_classic", dict(step_size=0.05), 1e-7),
    ("explicit_adams", dict(step_size=0.02), 1e-7), ("implicit_adams", dict(step_size=0.02), 1e-7),
]


@pytest.mark.parametrize("method,options,tol", CASES)
def test_dense_output_matches_the_closed_form(method, options, tol):
    rtol = 1e-7 if method in ("fehlberg2", "adaptive_heun") else 1e-10  # 2nd order: cheaper
    sol = solve(lambda t, y: -y, torch.ones(2, dtype=F64), T, method=method, options=options,
                rtol=rtol, atol=rtol * 1e-2, dense=True)
    ys = sol.evaluate(PROBE)
    assert ys.shape == (len(PROBE), 2)
    assert (ys[:, 0] - torch.exp(-PROBE)).abs().max().item() < tol
    assert sol.evaluate(1.234).shape == (2,)
    assert (sol.derivative(PROBE)[:, 1] + torch.exp(-PROBE)).abs().max().item() < 50 * tol
    # dense output is exact at the outputs it already returned
    assert torch.allclose(sol.evaluate(T), sol.ys, atol=1e-12, rtol=0)


@pytest.mark.parametrize("method,options", [("dopri5", {}), ("rk4", dict(step_size=0.1)),
                                            ("rk4", dict(step_size=0.1, interp="cubic"))])
def test_dense_changes_neither_outputs_nor_steps(method, options):
    f = lambda t, y: torch.sin(t) - y  # noqa: E731
    y0 = torch.ones(3, dtype=F64)
    plain = solve(f, y0, T, method=method, options=options)
    dense = solve(f, y0, T, method=method, options=options, dense=True)
    assert torch.equal(plain.ys, dense.ys)
    assert plain.stats.n_steps == dense.stats.n_steps
    assert plain.dense is None


@pytest.mark.parametrize("gradient", ["direct", "checkpoint", "adjoint"])
def test_dense_with_tuple_state_decreasing_time_and_gradient_modes(gradient):
    w = torch.nn.Parameter(torch.tensor(-1.0, dtype=F64))

    class F(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = w

        def forward(self, t, y):
            return (self.w * y[0], 2 * y[1])

    y0 = (torch.ones(1, dtype=F64, requires_grad=True), torch.ones(2, 2, dtype=F64))
    sol = solve(F(), y0, torch.tensor([1.0, 0.0], dtype=F64), rtol=1e-10, atol=1e-12,
                dense=True, gradient=gradient)
    a, b = sol.evaluate(torch.tensor([0.25], dtype=F64))
    assert a.shape == (1, 1) and b.shape == (1, 2, 2)
    assert a.item() == pytest.approx(math.exp(0.75), rel=1e-8)
    assert b[0, 1, 1].item() == pytest.approx(math.exp(-1.5), rel=1e-8)
    sol.ys[0][-1].sum().backward()  # the outputs still carry their gradient
    assert w.grad is not None


def test_dense_errors_name_the_problem():
    sol = solve(lambda t, y: -y, torch.ones(1, dtype=F64), T, dense=True)
    with pytest.raises(ValueError, match=r"outside the solved span \[0.0, 2.0\]"):
        sol.evaluate(2.5)
    with pytest.raises(ValueError, match="dense=True"):
        solve(lambda t, y: -y, torch.ones(1, dtype=F64), T).evaluate(1.0)
    with pytest.raises(ValueError, match="dense=True"):
        solve(lambda t, y: -y, torch.ones(1, dtype=F64), T, method="scipy_solver", dense=True)


def test_progress_draws_a_throttled_line_without_tqdm(monkeypatch, capsys):
    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name.startswith("tqdm"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    sol = solve(lambda t, y: -y, torch.ones(1, dtype=F64), T, progress=True, rtol=1e-12,
                atol=1e-12)
    err = capsys.readouterr().err
    assert "100.0%" in err and "t=2" in err
    # refreshed at most 10 times a second (plus the final draw), never once per step
    draws = err.count("\r")
    assert draws < sol.stats.n_accepted
    solve(lambda t, y: -y, torch.ones(1, dtype=F64), T)
    assert capsys.readouterr().err == ""  # off by default


def test_odeint_dense_is_solve_dense():
    dense = odeflow.odeint_dense(lambda t, y: -y, torch.ones(1, dtype=F64), 0.0, 2.0)
    sol = solve(lambda t, y: -y, torch.ones(1, dtype=F64),
                torch.tensor([0.0, 2.0], dtype=F64), dense=True)
    # The same steps by two arithmetic paths (odeint_dense runs without autograd: fused
    # BLAS stage sums; solve here with grad on: term-by-term adds), so the values agree to
    # rounding, not bit for bit: a few hundred ulp over ~20 steps, checked at 1e-12
    # (4500 ulp at 1.0), a 100x margin over what one machine measured (1e-14).
    assert torch.allclose(dense(PROBE), sol.evaluate(PROBE), rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
def test_interpolants_work_on_batches(method):
    # One step per sample, each with its own dt and theta: the batched interpolant equals
    # the per-sample scalar evaluations (values and derivatives).
    stepper = odeflow.solvers.get_method(method).build({})
    y = torch.tensor([[1.0, 2.0], [0.5, -1.0], [3.0, 0.1]], dtype=F64)
    f = lambda t, x: -x * (1 + t)  # noqa: E731
    dts = [0.1, 0.3, 0.05]
    thetas = torch.tensor([0.2, 0.7, 1.0], dtype=F64)
    rows = []
    for b, dt in enumerate(dts):
        r = stepper.step(f, 0.0, y[b], f(0.0, y[b]), dt, None, None)
        f_new = stepper.f_end(f, dt, r.y_new, r)
        rows.append((r, f_new, stepper.interpolant(0.0, dt, y[b], r.y_new, r.stages, f_new)))
    stages = [torch.stack([rows[b][0].stages[i] for b in range(3)]) for i in
              range(len(rows[0][0].stages))]
    y_new = torch.stack([r[0].y_new for r in rows])
    f_new = torch.stack([r[1] for r in rows])
    batched = stepper.interpolant(torch.zeros(3, dtype=F64), torch.tensor(dts, dtype=F64), y,
                                  y_new, stages, f_new)
    got, dgot = batched.evaluate(thetas), batched.derivative(thetas)
    for b in range(3):
        th = thetas[b].item()
        # The batched formulas sum the terms in another order than the scalar ones:
        # rounding only (values of order 1), checked with a 100x margin.
        assert torch.allclose(got[b], rows[b][2].evaluate(th), atol=1e-12, rtol=0)
        assert torch.allclose(dgot[b], rows[b][2].derivative(th), atol=1e-11, rtol=0)
