"""Branches that compute results and that only unusual input reaches, against references.

Each test names the branch it reaches and checks the numbers against a closed form, the
direct-mode gradient, or a joint solve of each sample alone. Tolerances are stated with
each check.
"""

from __future__ import annotations

import math

import pytest
import torch

import odeflow
from odeflow import SolveError, Status

F64 = torch.float64
PS = {"per_sample": True}
T01 = torch.tensor([0.0, 1.0], dtype=F64)


class _Square(torch.autograd.Function):
    """``x²`` as an old-style autograd.Function: torch.func transforms refuse it (no
    ``setup_context``), so the Jacobian must fall back to plain reverse mode."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


def _riccati(k):
    """``y' = -k y²``, ``y(0) = 1``: ``y(1) = 1/(1 + k)``, ``dy(1)/dk = -1/(1 + k)²``."""
    return 1 / (1 + k), -1 / (1 + k) ** 2


# --------------------------------------------------------------------- Jacobian fallbacks
@pytest.mark.parametrize("case", ["functorch_refused", "autonomous", "user_jacobian"])
def test_rosenbrock_jacobian_paths_give_the_closed_form(case):
    """rodas5p under autograd takes J with its graph by torch.func.jacrev; a func that
    torch.func refuses falls back to reverse mode (linalg.autodiff_jacobian), an autonomous
    problem skips ∂f/∂t (linalg._functorch_jacobian without time), and with a user
    Jacobian ∂f/∂t comes from forward mode or, refused, reverse mode
    (linalg._time_derivative). Value and gradient: closed form to 1e-9."""
    k = torch.tensor(0.7, dtype=F64, requires_grad=True)
    opts = {}
    if case == "functorch_refused":
        def f(t, y):
            return -k * _Square.apply(y)
    elif case == "autonomous":
        opts = {"autonomous": True}

        def f(t, y):
            return -k * y * y
    else:
        opts = {"jacobian": lambda t, y: (-2 * k * y).reshape(1, 1)}

        def f(t, y):  # reads t (through the refused Function), so ∂f/∂t is asked for
            return -k * _Square.apply(y) + 0 * _Square.apply(t)
    sol = odeflow.solve(f, torch.tensor([1.0], dtype=F64), T01, method="rodas5p", rtol=1e-10,
                        atol=1e-12, options=opts)
    y1, dy1 = _riccati(k.item())
    assert abs(sol.ys[-1].item() - y1) < 1e-9
    if case != "user_jacobian":  # a user Jacobian carries no graph to k
        (grad,) = torch.autograd.grad(sol.ys[-1].sum(), k)
        assert abs(grad.item() - dy1) < 1e-9


# ------------------------------------------------------------------------ ESDIRK Newton
def test_esdirk_newton_nonfinite_iterate_rejects_the_step():
    """``y' = -2 √y`` from 1: ``y = (1 - t)²``. Near ``t = 1`` a Newton iterate goes
    negative and √ gives nan: the iteration fails (esdirk_newton.newton's non-finite test),
    the step shrinks, and the solution still meets the closed form (1e-8)."""
    sol = odeflow.solve(lambda t, y: -2 * torch.sqrt(y), torch.tensor([1.0], dtype=F64),
                        torch.tensor([0.0, 0.99], dtype=F64), method="kvaerno5", rtol=1e-6,
                        atol=1e-9)
    assert sol.stats.n_newton_failures > 0
    assert abs(sol.ys[-1].item() - 0.01 ** 2) < 1e-8


# ----------------------------------------------------------------------------- adjoints
def test_joint_adjoint_with_a_rosenbrock_backward_solve_uses_df_dt():
    """A time-dependent field with adjoint_method='rodas5p' (the block Jacobian's ∂f/∂t,
    adjoint_jacobian.AdjointBlockSolver): gradients equal the direct mode's to 1e-5 and
    the closed form ``dy(1)/dy0 = e^{-p}`` to 1e-6 (rtol 1e-7)."""
    p = torch.tensor(1.5, dtype=F64, requires_grad=True)

    def f(t, y):
        return -p * y + torch.sin(t)

    grads = {}
    for gradient in ("direct", "adjoint"):
        y0 = torch.tensor([1.0], dtype=F64, requires_grad=True)
        sol = odeflow.solve(f, y0, T01, gradient=gradient, adjoint_params=(p,),
                            adjoint_method="rodas5p", rtol=1e-7, atol=1e-9)
        grads[gradient] = torch.autograd.grad(sol.ys[-1].sum(), (y0, p))
    for a, b in zip(grads["direct"], grads["adjoint"]):
        assert (a - b).abs().max().item() < 1e-5
    assert abs(grads["adjoint"][0].item() - math.exp(-1.5)) < 1e-6


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("params", ["none", "unused"])
def test_interpolating_adjoint_without_used_parameters(per_sample, params):
    """After an implicit forward (kvaerno5) the adjoint reads y from the dense output.
    With no parameters, or one the field does not read, the parameter quadrature has
    nothing to add (interpolating_adjoint.LanesQuadrature.flush; the block solver's
    vjp of an output without graph): ``dy(1)/dy0 = e^{-1}`` to 1e-8, the parameter's
    gradient exactly 0."""
    q = torch.tensor(3.0, dtype=F64, requires_grad=True)
    adjoint_params = () if params == "none" else (q,)
    y0 = torch.tensor([[1.0], [0.5]], dtype=F64, requires_grad=True)
    sol = odeflow.solve(lambda t, y: -y, y0, T01, method="kvaerno5", gradient="adjoint",
                        adjoint_params=adjoint_params, rtol=1e-10, atol=1e-12,
                        options={"per_sample": per_sample})
    grads = torch.autograd.grad(sol.ys[-1].sum(), (y0, *adjoint_params))
    assert (grads[0] - math.exp(-1)).abs().max().item() < 1e-8
    if adjoint_params:
        assert grads[1].item() == 0.0


def test_per_sample_adjoint_backward_failure_names_the_backward_solve():
    """A backward solve that runs out of steps raises SolveError saying that it was the
    adjoint's backward solve, for which samples, and what to set (adjoint.py)."""
    p = torch.tensor(1.0, dtype=F64, requires_grad=True)
    y0 = torch.tensor([[1.0], [2.0]], dtype=F64, requires_grad=True)
    sol = odeflow.solve(lambda t, y: -p * y, y0, T01, gradient="adjoint", adjoint_params=(p,),
                        options=PS, adjoint_options={"max_num_steps": 2})
    assert sol.sample_stats.status == [Status.SUCCESS] * 2  # the forward is fine
    with pytest.raises(SolveError, match=r"adjoint's backward solve for samples \[0, 1\]") as e:
        sol.ys[-1].sum().backward()
    assert e.value.status == Status.MAX_STEPS_REACHED
    assert 0.0 < e.value.t < 1.0  # stopped inside the span, going backwards


# -------------------------------------------------------------------------- event times
def test_event_time_gradient_with_an_explicitly_time_dependent_event_fn():
    """``y' = 1``, ``g = y + t - 2``: the event is at ``t* = (2 - y0)/2`` and
    ``dt*/dy0 = -1/2``; g's own ∂g/∂t enters the slope (event_time.py). Exact to 1e-12."""
    y0 = torch.tensor([0.5], dtype=F64, requires_grad=True)
    event_t, _ = odeflow.odeint_event(lambda t, y: torch.ones_like(y), y0,
                                      torch.tensor(0.0, dtype=F64),
                                      event_fn=lambda t, y: y[0] + t - 2)
    assert abs(event_t.item() - 0.75) < 1e-12
    (grad,) = torch.autograd.grad(event_t, y0)
    assert abs(grad.item() + 0.5) < 1e-12


@pytest.mark.parametrize("per_sample", [False, True])
def test_event_fn_without_a_slope_warns_and_returns_the_time_without_derivative(per_sample):
    """An event_fn whose value has a graph but no derivative along the solution (its
    y-dependence detached) has ``dg/dt = 0``: a RuntimeWarning (naming the samples per
    sample), the right event time, and no gradient through it."""
    r = torch.tensor(1.0, dtype=F64, requires_grad=True)
    y0 = torch.tensor([[1.0], [2.0]] if per_sample else [1.0], dtype=F64)

    def event_fn(t, y):
        return (y[..., 0] - 0.5).detach() + 0 * r

    t = torch.tensor([0.0, 5.0], dtype=F64)
    with pytest.warns(RuntimeWarning, match="tangentially " + (r"for samples \[0, 1\]"
                                                               if per_sample else r"\(")):
        sol = odeflow.solve(lambda t, y: -torch.ones_like(y), y0, t, event_fn=event_fn,
                            options={"per_sample": per_sample})
    expect = [0.5, 1.5] if per_sample else [0.5]
    assert (sol.event_t.reshape(-1) - torch.tensor(expect, dtype=F64)).abs().max() < 1e-12
    (grad,) = torch.autograd.grad(sol.event_t.sum(), r, allow_unused=True)
    assert grad is None or grad.item() == 0.0


def test_event_direction_given_as_a_tensor():
    """event_direction as a tensor is read like the int (event_location.py): ``sin(t)``
    falls through zero at π and rises at 2π."""
    y0 = torch.tensor([0.0], dtype=F64)
    t = torch.tensor([0.1, 10.0], dtype=F64)
    found = {}
    for direction in (torch.tensor(1), 1, torch.tensor([-1]), -1):
        sol = odeflow.solve(lambda t, y: torch.cos(t).reshape(1), y0, t, rtol=1e-10,
                            atol=1e-12, event_fn=lambda t, y: torch.sin(t) - y[0] + 0 * y[0]
                            + y[0], event_direction=direction)
        found[str(direction)] = sol.event_t.item()
    assert found["tensor(1)"] == found["1"]
    assert found["tensor([-1])"] == found["-1"]
    assert abs(found["1"] - 2 * math.pi) < 1e-9
    assert abs(found["-1"] - math.pi) < 1e-9


# ---------------------------------------------------------------------- per-sample loop
def test_per_sample_step_size_underflow_fails_that_sample_only():
    """Sample 1 meets a singularity (``y' = 1/(1 - t)``'s blow-up at t = 1): it stops with
    STEP_SIZE_UNDERFLOW (integrate.py's per-lane status); sample 0 goes on, equal to its
    own joint solve (1e-12, same step count)."""
    y0 = torch.tensor([[1.0], [1.0]], dtype=F64)
    t = torch.tensor([0.0, 2.0], dtype=F64)

    def f(t, y):
        return torch.stack([-y[0], 1 / (1 - t[1]) * torch.ones_like(y[1])])

    sol = odeflow.solve(f, y0, t, options=PS, throw=False)
    assert sol.sample_stats.status == [Status.SUCCESS, Status.STEP_SIZE_UNDERFLOW]
    one = odeflow.solve(lambda t, y: -y, y0[0], t)
    assert (sol.ys[-1, 0] - one.ys[-1]).abs().item() < 1e-12
    assert sol.sample_stats.n_steps[0].item() == one.stats.n_steps
    assert math.isnan(sol.ys[-1, 1].item())


# ------------------------------------------------------------------------------ options
def test_one_element_tensor_tolerances_equal_float_tolerances():
    """rtol/atol as one-element tensors (problem._scalar_tolerance) give the same solve
    as the floats, bit for bit."""
    f = lambda t, y: torch.stack([y[1], -y[0]])  # noqa: E731
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    a = odeflow.solve(f, y0, T01, rtol=torch.tensor(1e-8, dtype=F64),
                      atol=torch.tensor([1e-9], dtype=F64))
    b = odeflow.solve(f, y0, T01, rtol=1e-8, atol=1e-9)
    assert torch.equal(a.ys, b.ys) and a.stats.n_steps == b.stats.n_steps


def test_an_option_given_as_none_is_its_default():
    """``first_step=None`` (options.validate_options) is the default: the same solve."""
    y0 = torch.tensor([1.0], dtype=F64)
    a = odeflow.solve(lambda t, y: -y, y0, T01, options={"first_step": None})
    b = odeflow.solve(lambda t, y: -y, y0, T01)
    assert torch.equal(a.ys, b.ys) and a.stats.n_steps == b.stats.n_steps


# ----------------------------------------------------------------------------- auto dense
def test_auto_per_sample_dense_derivative_is_each_samples_own():
    """method='auto' per sample: the dense derivative merges the lanes' explicit and
    Rosenbrock pieces (auto.LaneInterpolant). Each sample takes its joint solve's steps, and
    its dense derivative equals the joint solve's to 1e-9 · max|f| (the lanes' stage sums
    round otherwise than the joint ones, and 480 steps of sample 0 carry that to 1.2e-9 on
    some CPUs, with max|f| = 4.7) and the vector field at the dense solution (1e-3 · max|f|)."""
    mu = torch.tensor([1.0, 300.0], dtype=F64)
    y0 = torch.tensor([[2.0, 0.0], [2.0, 0.0]], dtype=F64)
    t = torch.tensor([0.0, 60.0], dtype=F64)
    kw = dict(method="auto", rtol=1e-6, atol=1e-8, dense=True)

    def vdp(m):
        return lambda t, y: torch.stack([y[..., 1], m * (1 - y[..., 0] ** 2) * y[..., 1]
                                         - y[..., 0]], -1)

    sol = odeflow.solve(vdp(mu), y0, t, options=PS, **kw)
    assert any(lane == 1 for *_, lane in sol.stats.switches)  # sample 1 switched
    grid = torch.linspace(0.0, 60.0, 121, dtype=F64)
    got = sol.derivative(grid)
    owns = [odeflow.solve(vdp(mu[b]), y0[b], t, **kw) for b in range(2)]
    assert sol.stats.n_accepted == sum(own.stats.n_accepted for own in owns)
    assert sol.stats.n_rejected == sum(own.stats.n_rejected for own in owns)
    for b, own in enumerate(owns):
        scale = own.derivative(grid).abs().max().item()
        assert (got[:, b] - own.derivative(grid)).abs().max().item() < 1e-9 * scale
        field = vdp(mu[b])(grid, sol.evaluate(grid)[:, b])
        assert (got[:, b] - field).abs().max().item() < 1e-3 * field.abs().max().item()


# ---------------------------------------------------------------------- failure messages
class _BreaksAfter(torch.nn.Module):
    """``y' = -1000 y`` (stiff for an explicit method) that raises once ``n`` steps ran:
    the stiffness probe after the failure then meets a raising func."""

    def __init__(self, n):
        super().__init__()
        self.n, self.steps, self.broken = n, 0, False

    def forward(self, t, y):
        if self.broken:
            raise RuntimeError("func broke")
        return -1000 * y

    def callback_accept_step(self, t, y, dt):
        self.steps += 1
        self.broken = self.steps >= self.n

    callback_reject_step = callback_accept_step


def test_stiffness_hint_never_hides_the_failure_it_explains():
    """The hint's probe calls func again; if that raises, the solve still raises its own
    SolveError, without the hint (stiffness.stiff_hint); a working func gets the hint."""
    y0, t = torch.ones(2, dtype=F64), torch.tensor([0.0, 10.0], dtype=F64)
    opts = {"max_num_steps": 300}
    with pytest.raises(SolveError, match="max_num_steps") as working:
        odeflow.solve(_BreaksAfter(10 ** 9), y0, t, options=opts)
    assert "looks stiff" in str(working.value)
    with pytest.raises(SolveError, match="max_num_steps") as broken:
        odeflow.solve(_BreaksAfter(300), y0, t, options=opts)
    assert "looks stiff" not in str(broken.value)
    assert broken.value.status == Status.MAX_STEPS_REACHED


# ---------------------------------------------------------------------------- SciPy bridge
def test_scipy_solver_with_one_output_time_returns_y0():
    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    sol = odeflow.solve(lambda t, y: -y, y0, torch.tensor([0.5], dtype=F64),
                        method="scipy_solver", options={"solver": "RK45"})
    assert torch.equal(sol.ys, y0[None])


def test_scipy_solver_failure_raises_with_the_outputs_reached():
    """``y' = y²`` from 1 blows up at t = 1: SciPy stops there (not at the last output
    time it reached, 0.5), and the error says so, keeps the outputs it reached (``y(0.5) =
    2`` to 1e-6) and SciPy's own message."""
    t = torch.tensor([0.0, 0.5, 2.0], dtype=F64)
    with pytest.raises(SolveError, match="SciPy said") as e:
        odeflow.solve(lambda t, y: y * y, torch.ones(1, dtype=F64), t,
                      method="scipy_solver", options={"solver": "RK45"})
    err = e.value
    assert err.status == Status.STEP_SIZE_UNDERFLOW
    assert abs(err.t - 1.0) < 1e-4
    assert len(err.partial_ys) == 2
    assert abs(err.partial_ys[1].item() - 2.0) < 1e-6


# ------------------------------------------------------------------- linear interpolant
def test_linear_interpolant_derivative_and_detached():
    """LinearInterpolant (fixed grids' ``interp="linear"``): its derivative is the chord's
    slope ``(y1 - y0)/dt``, joint (float dt) and per lane ((B,) dt); ``detached`` keeps the
    values without graph. The loop does not call these today (a fixed grid's dense output
    is cubic Hermite and its events take the field's slope), so they are checked here."""
    from odeflow.interp import LinearInterpolant
    y0 = torch.tensor([[1.0, 2.0], [0.0, -1.0]], dtype=F64, requires_grad=True)
    y1 = torch.tensor([[2.0, 0.0], [3.0, -1.0]], dtype=F64)
    dt = torch.tensor([0.5, 2.0], dtype=F64)
    lanes = LinearInterpolant(torch.zeros(2, dtype=F64), dt, y0, y1)
    theta = torch.tensor([0.25, 0.5], dtype=F64)
    assert torch.equal(lanes.derivative(theta), (y1 - y0) / dt[:, None])
    assert torch.allclose(lanes.evaluate(theta), y0 + theta[:, None] * (y1 - y0),
                          rtol=0, atol=1e-15)
    joint = LinearInterpolant(0.0, 0.5, y0[0], y1[0])
    assert torch.equal(joint.derivative(0.3), (y1[0] - y0[0]) / 0.5)
    kept = lanes.detached()
    assert not kept.y0.requires_grad and torch.equal(kept.y0, y0.detach())
    assert kept.y0.data_ptr() != y0.data_ptr()  # a copy: later in-place writes do not reach it
    assert torch.equal(kept.derivative(theta), lanes.derivative(theta).detach())


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_scipy_solver_failure_with_throw_false_returns_the_outputs_reached(sign):
    """throw=False: the solution holds the outputs SciPy reached (``y(±0.5) = 2`` to
    1e-6), nan after, and the failure in ``stats.status``, as for the other methods; the
    message gives where SciPy stopped (t = ±1, the blow-up) and what SciPy said."""
    t = sign * torch.tensor([0.0, 0.5, 2.0], dtype=F64)
    sol = odeflow.solve(lambda t, y: sign * y * y, torch.ones(1, dtype=F64), t,
                        method="scipy_solver", options={"solver": "RK45"}, throw=False)
    assert sol.stats.status == Status.STEP_SIZE_UNDERFLOW
    t_stop = float(sol.stats.message.split(" t=")[1].split(". ")[0])
    assert abs(t_stop - sign) < 1e-4 and "SciPy said: Required step size" in sol.stats.message
    assert sol.ys[0].item() == 1.0 and abs(sol.ys[1].item() - 2.0) < 1e-6
    assert math.isnan(sol.ys[2].item())


def test_first_step_when_func_is_not_finite_at_the_probe():
    """``y' = √(0.5 - t)`` from ``y0 = 100`` on [0, 0.4]: Hairer's starting-step probe
    lands at ``t = 1``, where f is nan. The joint solve falls back to a small first step
    as the per-sample solve does (it took nan and failed after max_num_steps): the closed
    form to 1e-6, and each lane of a per-sample solve equal to the joint one (1e-12, same
    step count)."""
    t = torch.tensor([0.0, 0.4], dtype=F64)
    exact = 100 + (2 / 3) * (0.5 ** 1.5 - 0.1 ** 1.5)
    joint = odeflow.solve(lambda t, y: torch.sqrt(0.5 - t) * torch.ones_like(y),
                          torch.tensor([100.0], dtype=F64), t, rtol=1e-10, atol=1e-10,
                          options={"max_num_steps": 1000})
    assert abs(joint.ys[-1].item() - exact) < 1e-6
    lanes = odeflow.solve(lambda t, y: torch.sqrt(0.5 - t)[:, None] * torch.ones_like(y),
                          torch.full((2, 1), 100.0, dtype=F64), t, rtol=1e-10, atol=1e-10,
                          options=PS)
    assert (lanes.ys[-1, :, 0] - joint.ys[-1]).abs().max().item() < 1e-12
    assert lanes.sample_stats.n_steps.tolist() == [joint.stats.n_steps] * 2


@pytest.mark.parametrize("method", ["dopri5", "kvaerno5"])
def test_per_sample_adjoint_when_every_sample_fails_at_t0(method):
    """``√y`` of a negative ``y0``: every sample is NONFINITE at t0 (throw=False). Failed
    samples get no gradient, so the adjoint gives zeros, after an implicit forward (no
    forward step to interpolate: it raised 'dense output needs at least one step') as
    after an explicit one."""
    p = torch.tensor(1.0, dtype=F64, requires_grad=True)
    y0 = torch.tensor([[-1.0], [-2.0]], dtype=F64, requires_grad=True)
    sol = odeflow.solve(lambda t, y: -p * torch.sqrt(y), y0, T01, method=method,
                        gradient="adjoint", adjoint_params=(p,), options=PS, throw=False)
    assert sol.sample_stats.status == [Status.NONFINITE] * 2
    g_y0, g_p = torch.autograd.grad(sol.ys.nan_to_num().sum(), (y0, p))
    assert torch.equal(g_y0, torch.zeros_like(y0)) and g_p.item() == 0.0
