"""The Rosenbrock methods rodas5p and rodas4: orders, stiff accuracy, dense output, options.

Numerical references: closed forms, and SciPy's Radau at rtol 1e-12 for Robertson. Orders
are measured on fixed step sequences through the stepper itself (the slope of log error
against log step must be within 0.3 of the claimed order).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import odeflow
from odeflow.lanes import SharedClock
from odeflow.linalg import DenseSolver, gmres
from odeflow.problem import CountedFunc, StateLayout
from odeflow.solvers.rosenbrock import Rosenbrock
from odeflow.solvers.rosenbrock_tableaus import ROSENBROCK_TABLEAUS

F64 = torch.float64
METHODS = ("rodas5p", "rodas4")
DENSE_ORDER = {"rodas5p": 4, "rodas4": 3}


def _counted(func, n: int, dtype=F64) -> CountedFunc:
    layout = StateLayout(False, (torch.Size([n]),), (n,), False, dtype, dtype,
                         torch.device("cpu"))
    return CountedFunc(func, layout, SharedClock([0.0, 1.0], 1.0, dtype, torch.device("cpu")))


def _riccati(t, y):
    """y' = -2 t y², y(0) = 1: y = 1 / (1 + t²). Non-autonomous, so ∂f/∂t is exercised."""
    return -2.0 * t * y * y


def _riccati_exact(t: float) -> float:
    return 1.0 / (1.0 + t * t)


def _fixed_solve(method: str, n_steps: int, t_end: float = 2.0) -> tuple[float, list]:
    stepper = Rosenbrock(ROSENBROCK_TABLEAUS[method], DenseSolver())
    f = _counted(_riccati, 1)
    y = torch.ones(1, dtype=F64)
    state = stepper.init(y)
    h = t_end / n_steps
    t = 0.0
    mids = []
    with torch.no_grad():
        ws = stepper.workspace(y)
        for _ in range(n_steps):
            res = stepper.step(f, t, y, f(t, y), h, state, ws)
            mids.append(abs(float(stepper.interpolate(y, res.y_new, h, res.stages, None, 0.5,
                                                      ws)) - _riccati_exact(t + h / 2)))
            y, t = res.y_new, t + h
            state = res.state
    return abs(float(y) - _riccati_exact(t_end)), mids


@pytest.mark.parametrize("method", METHODS)
def test_measured_order_matches_the_claimed_order(method):
    order = ROSENBROCK_TABLEAUS[method].order
    errs = [_fixed_solve(method, n)[0] for n in (40, 80, 160)]
    slopes = [math.log2(a / b) for a, b in zip(errs, errs[1:])]
    assert all(abs(s - order) < 0.3 for s in slopes), (errs, slopes)


@pytest.mark.parametrize("method", METHODS)
def test_dense_output_order(method):
    # Global error of the dense output inside steps: O(h^min(p, q)) with q the dense order.
    q = DENSE_ORDER[method]
    errs = [max(_fixed_solve(method, n)[1]) for n in (20, 40, 80)]
    slopes = [math.log2(a / b) for a, b in zip(errs, errs[1:])]
    assert all(s > q - 0.3 for s in slopes), (errs, slopes)


@pytest.mark.parametrize("method", METHODS)
def test_stiffly_accurate_and_consistent_tableau(method):
    tab = ROSENBROCK_TABLEAUS[method]
    s = tab.stages
    # The last stage input plus its increment is the solution: m = a_s + e_s.
    assert tab.m == tuple(list(tab.a[-1]) + [1.0])
    assert all(len(r) == i for i, r in enumerate(tab.a)) and len(tab.C) == s
    # Stage times are the row sums of the α-matrix, recovered as a @ Γ^{-1}... the
    # transformed a_ij satisfy c_i = Σ_j α_ij; for these methods every c_i is in [0, 1].
    assert all(0.0 <= c <= 1.0 for c in tab.c)
    assert tab.c[-1] == 1.0 and tab.d[-1] == 0.0


def _linear_stiff():
    # Eigenvalues -1e6 and -1 (eigenvectors (1, 1) and (1, -1)).
    lam = torch.tensor([-1e6, -1.0], dtype=F64)
    V = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=F64)
    A = V @ torch.diag(lam) @ torch.linalg.inv(V)
    y0 = torch.tensor([1.0, 0.0], dtype=F64)

    def exact(t: float) -> torch.Tensor:
        return V @ (torch.exp(lam * t) * torch.linalg.solve(V, y0))
    return A, y0, exact


@pytest.mark.parametrize("method", METHODS)
def test_stiff_linear_system_to_tolerance_in_few_steps(method):
    A, y0, exact = _linear_stiff()
    t = torch.tensor([0.0, 0.5, 5.0], dtype=F64)
    sol = odeflow.solve(lambda t, y: A @ y, y0, t, method=method, rtol=1e-8, atol=1e-10)
    for i, ti in enumerate(t.tolist()):
        assert torch.allclose(sol.ys[i], exact(ti), rtol=1e-6, atol=1e-8)
    # An explicit method would need ~ 1.7e6 steps for stability; this needs a few hundred.
    assert sol.stats.n_steps < 1000
    assert sol.stats.n_jacobians == sol.stats.n_accepted
    assert sol.stats.n_lu == sol.stats.n_steps  # one LU per attempt, J reused on rejection


def robertson(t, y, k=(0.04, 3e7, 1e4)):
    """Robertson's chemical kinetics (Hairer & Wanner II, Section IV.1)."""
    k1, k2, k3 = k
    y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
    return torch.stack([-k1 * y1 + k3 * y2 * y3, k1 * y1 - k3 * y2 * y3 - k2 * y2 * y2,
                        k2 * y2 * y2], dim=-1)


def _robertson_np(t, y):
    return robertson(t, torch.as_tensor(y)).numpy()


@pytest.fixture(scope="module")
def robertson_reference():
    t_eval = [0.0, 1.0, 1e3, 1e5]
    ref = solve_ivp(_robertson_np, (0.0, 1e5), [1.0, 0.0, 0.0], method="Radau", rtol=1e-12,
                    atol=1e-16, t_eval=t_eval)
    return torch.tensor(t_eval, dtype=F64), torch.tensor(ref.y.T)


@pytest.mark.parametrize("method", METHODS)
def test_robertson_against_scipy_radau(method, robertson_reference):
    t, ref = robertson_reference
    rtol, atol = 1e-6, 1e-10
    sol = odeflow.solve(robertson, torch.tensor([1.0, 0.0, 0.0], dtype=F64), t,
                        method=method, rtol=rtol, atol=atol)
    err = ((sol.ys - ref).abs() / (atol + rtol * ref.abs())).amax(-1)
    # The final time (the benchmark's criterion) within tolerance; interior outputs come from
    # the dense output and carry the global error, which may exceed the local tolerance a
    # little (rodas5p: 1.24 at t = 1e3).
    assert err[-1] <= 1.0, err
    assert err.max() <= 2.0, err
    # Mass is conserved by the method (a linear invariant: exact up to rounding).
    assert torch.allclose(sol.ys.sum(-1), torch.ones(4, dtype=F64), atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_dense_solution_and_events(method):
    # y' = -y + sin t: closed form; the event sin-crossing of y - 0.3 located on the dense
    # output of the implicit steps.
    def f(t, y):
        return -y + torch.sin(t)

    def exact(t):
        return 1.5 * math.exp(-t) + 0.5 * (math.sin(t) - math.cos(t))

    y0 = torch.tensor([1.0], dtype=F64)
    sol = odeflow.solve(f, y0, torch.tensor([0.0, 5.0], dtype=F64), method=method,
                        rtol=1e-9, atol=1e-11, dense=True)
    for tq in (0.123, 1.7, 3.3, 4.99):
        assert abs(float(sol.evaluate(tq)) - exact(tq)) < 1e-7
        d = float(sol.derivative(tq))
        assert abs(d - (-exact(tq) + math.sin(tq))) < 1e-6
    ev = odeflow.solve(f, y0, torch.tensor([0.0, 5.0], dtype=F64), method=method, rtol=1e-9,
                       atol=1e-11, event_fn=lambda t, y: y[0] - 0.3)
    t_ev = float(ev.event_t)
    assert abs(exact(t_ev) - 0.3) < 1e-7


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-8)])
def test_tuple_states_and_float32(dtype, tol):
    def f(t, state):
        x, v = state
        return v, -1000.0 * (x - torch.cos(t)) - 10.0 * v

    y0 = (torch.zeros(2, dtype=dtype), torch.zeros(2, dtype=dtype))
    t = torch.linspace(0, 1, 5, dtype=dtype)
    sol = odeflow.solve(f, y0, t, method="rodas5p", rtol=tol, atol=tol)
    ref = odeflow.solve(f, tuple(s.double() for s in y0), t.double(), method="dopri5",
                        rtol=1e-10, atol=1e-12)
    assert sol.ys[0].dtype == dtype
    assert torch.allclose(sol.ys[0].double(), ref.ys[0], atol=50 * tol)


def test_user_jacobian_and_krylov_agree_with_autodiff():
    A, y0, _ = _linear_stiff()
    t = torch.tensor([0.0, 0.37, 1.0], dtype=F64)  # 0.37: from the dense output
    base = odeflow.solve(lambda t, y: A @ y, y0, t, method="rodas5p", rtol=1e-8, atol=1e-10)
    user = odeflow.solve(lambda t, y: A @ y, y0, t, method="rodas5p", rtol=1e-8, atol=1e-10,
                         options={"jacobian": lambda t, y: A, "autonomous": True})
    kry = odeflow.solve(lambda t, y: A @ y, y0, t, method="rodas5p", rtol=1e-8, atol=1e-10,
                        options={"linear_solver": "krylov", "krylov_tol": 1e-12})
    # The same J by two arithmetic paths (autodiff vs the user's): LU and steps agree to
    # rounding; 1e-10 is 100x what one machine measured, far below the rtol of 1e-8.
    assert torch.allclose(user.ys, base.ys, rtol=1e-10, atol=1e-12)
    assert torch.allclose(kry.ys, base.ys, rtol=1e-7, atol=1e-9)
    assert kry.stats.n_linear_iters > 0
    # The user's Jacobian replaces autodiff's call of func (and ∂f/∂t is skipped).
    assert user.stats.nfe == base.stats.nfe - base.stats.n_jacobians


def test_gmres_solves_a_nonsymmetric_system():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(60, 60, generator=g, dtype=F64) * 0.2 + 4 * torch.eye(60, dtype=F64)
    b = torch.randn(60, generator=g, dtype=F64)
    x, iters = gmres(lambda v: A @ v, b, tol=1e-11, restart=8, max_iters=500)
    assert torch.linalg.vector_norm(A @ x - b) <= 1e-10 * torch.linalg.vector_norm(b)
    assert 0 < iters <= 500


def test_gmres_solves_a_complex_system():
    # Complex A: the Arnoldi basis needs the conjugating inner product (torch.dot, which
    # does not conjugate, made GMRES diverge here: residual 1e10 x ||b||).
    g = torch.Generator().manual_seed(1)
    n = 40
    A = (torch.eye(n, dtype=F64) + 0.05 * torch.randn(n, n, generator=g, dtype=F64)
         + 0.05j * torch.randn(n, n, generator=g, dtype=F64))
    b = torch.randn(n, generator=g, dtype=F64) + 1j * torch.randn(n, generator=g, dtype=F64)
    for restart in (n, 7):  # one cycle; several restarted cycles
        x, iters = gmres(lambda v: A @ v, b, tol=1e-11, restart=restart, max_iters=500)
        assert torch.linalg.vector_norm(A @ x - b) <= 1e-10 * torch.linalg.vector_norm(b)
        assert torch.allclose(x, torch.linalg.solve(A, b), rtol=1e-9, atol=1e-10)
        assert 0 < iters < 500


def test_gmres_returns_a_nonfinite_iterate_for_a_nonfinite_product():
    # No exception (torch's least-squares solvers assert on nan input): the implicit step
    # sees the non-finite solve and shrinks the step. One product, then the cycle ends.
    x, iters = gmres(lambda v: v * math.nan, torch.ones(3, dtype=F64))
    assert iters == 1 and not torch.isfinite(x).any()
    x, iters = gmres(lambda v: v, torch.tensor([1.0, math.inf, 0.0], dtype=F64))
    assert iters == 0 and not torch.isfinite(x).all()  # not a silent x = 0


def test_krylov_solves_are_reproducible():
    # The same solve twice gives the same bits (LAPACK's default least-squares driver,
    # which GMRES used per iteration, differed from call to call in the last bits, and a
    # stiff solve amplified that to 1e-11).
    A, y0, _ = _linear_stiff()
    t = torch.tensor([0.0, 1.0], dtype=F64)
    runs = [odeflow.solve(lambda t, y: A @ y + 0.1 * torch.sin(y), y0, t, method=m,
                          rtol=1e-7, atol=1e-9, options={"linear_solver": "krylov"}).ys
            for m in ("rodas5p", "kvaerno5") for _ in range(4)]
    assert all(torch.equal(r, runs[0]) for r in runs[1:4])
    assert all(torch.equal(r, runs[4]) for r in runs[5:])


def test_krylov_and_dense_agree_on_a_complex_stiff_system():
    g = torch.Generator().manual_seed(2)
    n = 12
    A = (-torch.diag(torch.logspace(0, 3, n, dtype=F64)) + 1j * torch.diag(
        torch.linspace(-5, 5, n, dtype=F64)) + 0.3 * torch.randn(n, n, generator=g, dtype=F64)
         ).to(torch.complex128)
    y0 = torch.ones(n, dtype=torch.complex128)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    exact = torch.stack([torch.linalg.matrix_exp(A * float(s)) @ y0 for s in t])
    for method in ("rodas5p", "kvaerno5"):
        dense = odeflow.solve(lambda t, y: A @ y, y0, t, method=method, rtol=1e-8, atol=1e-10)
        kry = odeflow.solve(lambda t, y: A @ y, y0, t, method=method, rtol=1e-8, atol=1e-10,
                            options={"linear_solver": "krylov", "krylov_tol": 1e-12})
        # Both within the tolerance's reach of the matrix exponential, and of each other.
        assert torch.allclose(dense.ys, exact, rtol=1e-6, atol=1e-7), method
        assert torch.allclose(kry.ys, exact, rtol=1e-6, atol=1e-7), method
        assert torch.allclose(kry.ys, dense.ys, rtol=1e-7, atol=1e-8), method
        assert kry.stats.n_linear_failures == 0


def test_bad_jacobian_options_are_named():
    y0 = torch.ones(2, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(ValueError, match=r"options\['jacobian'\] must return a \(2, 2\)"):
        odeflow.solve(lambda t, y: -y, y0, t, method="rodas5p",
                      options={"jacobian": lambda t, y: torch.eye(3)})
    with pytest.raises(ValueError, match="linear_solver"):
        odeflow.solve(lambda t, y: -y, y0, t, method="rodas5p",
                      options={"linear_solver": "cholesky"})
    with pytest.raises(ValueError, match="jacobian"):
        odeflow.solve(lambda t, y: -y, y0, t, method="dopri5",
                      options={"jacobian": lambda t, y: -torch.eye(2)})
    # Checked when solve is called, for the backward solve's options too.
    with pytest.raises(ValueError, match=r"options\['krylov_tol'\] must be a number in"):
        odeflow.solve(lambda t, y: -y, y0, t, method="rodas5p",
                      options={"linear_solver": "krylov", "krylov_tol": 5.0})
    with pytest.raises(ValueError, match=r"options\['max_newton_iters'\]"):
        odeflow.solve(lambda t, y: -y, y0, t, method="kvaerno5",
                      options={"max_newton_iters": 0})
    with pytest.raises(TypeError, match=r"options\['autonomous'\]"):
        odeflow.solve(lambda t, y: -y, y0, t, method="rodas5p", options={"autonomous": "yes"})
    lin = torch.nn.Linear(2, 2).double()
    with pytest.raises(ValueError, match="adjoint_options: options\\['linear_solver'\\]"):
        odeflow.solve(lambda t, y: lin(y), y0, t, method="rodas5p", gradient="adjoint",
                      adjoint_params=tuple(lin.parameters()),
                      adjoint_options={"linear_solver": "qr"})


def test_jump_t_restarts_the_jacobian_on_each_side():
    # y' = -1000 (y - u(t)), u a unit step at t = 1: the solution relaxes to u fast.
    def f(t, y):
        return -1000.0 * (y - (t >= 1.0).to(y.dtype))

    y0 = torch.zeros(1, dtype=F64)
    t = torch.tensor([0.0, 1.0, 2.0], dtype=F64)
    sol = odeflow.solve(f, y0, t, method="rodas5p", rtol=1e-8, atol=1e-10,
                        options={"jump_t": [1.0]})
    assert abs(float(sol.ys[1])) < 1e-8  # stays at 0 up to the jump
    assert abs(float(sol.ys[2]) - (1 - math.exp(-1000.0))) < 1e-7


def _kinetics_loss(theta: torch.Tensor, method: str, gradient: str, **kw) -> torch.Tensor:
    k = torch.exp(theta)

    def f(t, y):
        return robertson(t, y, (k[0], k[1], k[2]))

    t = torch.tensor([0.0, 0.5, 2.0], dtype=F64)
    sol = odeflow.solve(f, torch.tensor([1.0, 0.0, 0.0], dtype=F64), t, method=method,
                        rtol=1e-8, atol=1e-12, gradient=gradient, adjoint_params=(k,), **kw)
    w = torch.tensor([1.0, 1e4, 1.0], dtype=F64)  # y2 is ~1e-5: weight it up
    return (sol.ys[1:] * w).sum()


@pytest.mark.parametrize("gradient", ["direct", "checkpoint", "adjoint"])
def test_kinetics_gradient_against_central_differences(gradient):
    theta0 = torch.log(torch.tensor([0.04, 3e3, 1e2], dtype=F64))  # stiff but short
    theta = theta0.clone().requires_grad_(True)
    loss = _kinetics_loss(theta, "rodas5p", gradient)
    (grad,) = torch.autograd.grad(loss, theta)
    fd = torch.zeros(3, dtype=F64)
    eps = 1e-5
    with torch.no_grad():
        for i in range(3):
            e = torch.zeros(3, dtype=F64)
            e[i] = eps
            fd[i] = (_kinetics_loss(theta0 + e, "rodas5p", "direct")
                     - _kinetics_loss(theta0 - e, "rodas5p", "direct")) / (2 * eps)
    assert torch.allclose(grad, fd, rtol=1e-5, atol=1e-8), (grad, fd)


def test_scipy_reference_helper_is_sane():
    # Guards the reference itself: SciPy's Radau conserves mass on Robertson too.
    ref = solve_ivp(_robertson_np, (0.0, 10.0), [1.0, 0.0, 0.0], method="Radau", rtol=1e-10,
                    atol=1e-14)
    assert abs(ref.y[:, -1].sum() - 1.0) < 1e-10
    assert np.all(ref.y[:, -1] >= -1e-14)


def _batched_kinetics(k: torch.Tensor):
    def f(t, y):
        k1, k2, k3 = k[:, 0], k[:, 1], k[:, 2]
        y1, y2, y3 = y[:, 0], y[:, 1], y[:, 2]
        return torch.stack([-k1 * y1 + k3 * y2 * y3, k1 * y1 - k3 * y2 * y3 - k2 * y2 * y2,
                            k2 * y2 * y2], -1)
    return f


def test_per_sample_rosenbrock_matches_each_samples_own_solve():
    g = torch.Generator().manual_seed(1)
    k = torch.tensor([0.04, 3e7, 1e4], dtype=F64) * (0.5 + 1.5 * torch.rand(4, 3, generator=g,
                                                                              dtype=F64))
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=F64).expand(4, 3).clone()
    t = torch.tensor([0.0, 1.0, 1e3], dtype=F64)
    sol = odeflow.solve(_batched_kinetics(k), y0, t, method="rodas5p", rtol=1e-6, atol=1e-10,
                        options={"per_sample": True})
    assert sol.stats.n_jacobians == sol.stats.n_steps == sol.stats.n_lu  # one per iteration
    for b in range(4):
        kb = tuple(float(v) for v in k[b])
        own = odeflow.solve(lambda t, y, kb=kb: robertson(t, y, kb), y0[b], t, method="rodas5p",
                            rtol=1e-6, atol=1e-10)
        # Same method and controller, each sample its own steps: the same accepted steps.
        assert int(sol.sample_stats.n_accepted[b]) == own.stats.n_accepted
        assert torch.allclose(sol.ys[:, b], own.ys, rtol=1e-9, atol=1e-15)


def test_per_sample_rosenbrock_gradients_and_unsupported_combinations():
    k = torch.tensor([[0.04, 3e3, 1e2], [0.05, 2e3, 2e2]], dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=F64).expand(2, 3).clone()
    t = torch.tensor([0.0, 0.5, 2.0], dtype=F64)
    w = torch.tensor([1.0, 1e4, 1.0], dtype=F64)
    grads = {}
    for mode in ("direct", "checkpoint"):
        sol = odeflow.solve(_batched_kinetics(k), y0, t, method="rodas5p", rtol=1e-6,
                            atol=1e-10, gradient=mode, adjoint_params=(k,),
                            options={"per_sample": True})
        (grads[mode],) = torch.autograd.grad((sol.ys * w).sum(), k)
    assert torch.allclose(grads["checkpoint"], grads["direct"], rtol=1e-8)
    # the per-sample interpolating adjoint needs a backward method without df/dt terms
    with pytest.raises(ValueError, match="gradient='adjoint' with options"):
        odeflow.solve(_batched_kinetics(k), y0, t, method="rodas5p", gradient="adjoint",
                      adjoint_method="rodas5p", adjoint_params=(k,),
                      options={"per_sample": True})


def test_stiff_event_time_gradient_agrees_in_every_mode():
    # The time y3 reaches 0.02 in a stiff kinetics model, differentiated w.r.t. the rates.
    k = torch.tensor([0.04, 3e3, 1e2], dtype=F64, requires_grad=True)

    def f(t, y):
        return robertson(t, y, (k[0], k[1], k[2]))

    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    grads = {}
    for mode in ("direct", "checkpoint", "adjoint"):
        sol = odeflow.solve(f, y0, torch.tensor([0.0, 100.0], dtype=F64), method="rodas5p",
                            rtol=1e-9, atol=1e-13, event_fn=lambda t, y: y[2] - 0.02,
                            gradient=mode, adjoint_params=(k,))
        (grads[mode],) = torch.autograd.grad(sol.event_t + sol.ys[-1, 0], k)
    assert torch.allclose(grads["checkpoint"], grads["direct"], rtol=1e-8)
    assert torch.allclose(grads["adjoint"], grads["direct"], rtol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_l_stable_and_a_stable(method):
    # One step on y' = J y with J exact: y_new = R(hJ) y0, R the stability function.
    stepper = Rosenbrock(ROSENBROCK_TABLEAUS[method], DenseSolver())
    # L-stability: R(z) -> 0 as z -> -inf.
    lam = -1e12
    f = _counted(lambda t, y: lam * y, 1)
    y0 = torch.ones(1, dtype=F64)
    with torch.no_grad():
        res = stepper.step(f, 0.0, y0, f(0.0, y0), 1.0, stepper.init(y0), None)
    assert abs(float(res.y_new)) < 1e-9
    # A-stability on the imaginary axis: |R(i w)| <= 1 (a rotation must not grow).
    for w in (0.1, 1.0, 10.0, 1e3, 1e6):
        rot = torch.tensor([[0.0, w], [-w, 0.0]], dtype=F64)
        g = _counted(lambda t, y, rot=rot: rot @ y, 2)
        y = torch.tensor([1.0, 0.0], dtype=F64)
        with torch.no_grad():
            res = stepper.step(g, 0.0, y, g(0.0, y), 1.0, stepper.init(y), None)
        assert float(torch.linalg.vector_norm(res.y_new)) <= 1.0 + 1e-12, w


def test_krylov_solves_a_large_system_without_a_dense_jacobian():
    # 20,000 decoupled-plus-coupled equations: a dense Jacobian would be 20,000^2 * 8 bytes =
    # 3.2 GB; the Krylov path stores a few vectors. Decay rates spread over [1, 100] with a
    # weak nonlinear coupling; the reference is dopri5 at a tight tolerance.
    n = 20_000
    rates = torch.logspace(0, 2, n, dtype=F64)

    def f(t, y):
        return -rates * y + 0.1 * torch.tanh(torch.roll(y, 1))

    y0 = torch.cos(torch.arange(n, dtype=F64))
    t = torch.tensor([0.0, 1.0], dtype=F64)
    threads = torch.get_num_threads()
    # Thousands of small vector operations: one thread (several threads on a busy box spin
    # against each other and make this 15x slower).
    torch.set_num_threads(1)
    try:
        sol = odeflow.solve(f, y0, t, method="rodas5p", rtol=1e-6, atol=1e-9,
                            options={"linear_solver": "krylov", "autonomous": True})
        ref = odeflow.solve(f, y0, t, method="dopri5", rtol=1e-10, atol=1e-12)
    finally:
        torch.set_num_threads(threads)
    assert torch.allclose(sol.ys[-1], ref.ys[-1], rtol=1e-4, atol=1e-7)
    assert sol.stats.n_linear_iters > 0


def test_per_sample_rosenbrock_dense_output_and_events():
    # y' = -1000 k (y - cos t), y(0) = 0: y rises to 0.5 at t = ln 2 / (1000 k) (the
    # transient, cos t ≈ 1 there), then follows cos t + sin t / (1000 k) + O(1e-6).
    k = torch.tensor([[1.0], [2.0], [5.0]], dtype=F64)

    def f(t, y):
        return -1000.0 * k * (y - torch.cos(t)[:, None])

    y0 = torch.zeros(3, 1, dtype=F64)
    sol = odeflow.solve(f, y0, torch.tensor([0.0, 2.0], dtype=F64), method="rodas5p",
                        rtol=1e-8, atol=1e-10, options={"per_sample": True}, dense=True)
    for tq in (0.5, 1.3):
        lag = math.sin(tq) / (1000.0 * k[:, 0])
        got = sol.evaluate(torch.tensor(tq, dtype=F64))[:, 0]
        assert torch.allclose(got, math.cos(tq) + lag, atol=2e-6)
    ev = odeflow.solve(f, y0, torch.tensor([0.0, 3.0], dtype=F64), method="rodas5p",
                       rtol=1e-10, atol=1e-12, options={"per_sample": True},
                       event_fn=lambda t, y: y[:, 0] - 0.5)
    expected = math.log(2.0) / (1000.0 * k[:, 0])
    assert torch.allclose(ev.event_t, expected, rtol=2e-3)
