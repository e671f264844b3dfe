"""torchdiffeq's public behaviour, as odeflow's own tests (issue: "drop-in for real").

Each behaviour torchdiffeq users rely on is checked here against closed forms; the
torchdiffeq suite itself runs against odeflow with ``tools/torchdiffeq_suite.py``.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import odeflow
from odeflow import SolveError, Status, odeint, odeint_adjoint, odeint_dense, odeint_event, solve

F64 = torch.float64


class Lin(nn.Module):
    """dy/dt = w y with a learnable w."""

    def __init__(self, w: float = -1.0):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=F64))

    def forward(self, t, y):
        return self.w * y


# ----------------------------------------------------------------------- events and t
@pytest.mark.parametrize("interface", ["odeint", "odeint_adjoint"])
def test_event_ignores_all_of_t_but_its_first_element(interface):
    # y = e^{-t} reaches 0.01 at ln 100 = 4.6, far beyond t[1] = 1: torchdiffeq goes on.
    f = Lin()
    y0 = torch.tensor([1.0], dtype=F64)
    t = torch.tensor([0.0, 1.0, 2.0], dtype=F64)
    fn = odeint if interface == "odeint" else odeint_adjoint
    event_t, ys = fn(f, y0, t, event_fn=lambda t, y: y[0] - 0.01, rtol=1e-10, atol=1e-12)
    assert event_t.item() == pytest.approx(math.log(100.0), rel=1e-9)
    assert ys.shape == (2, 1)
    # A decreasing t searches backwards: y = e^{-t} from y(0) = 1 reaches 100 at -ln 100.
    event_t, _ = fn(f, y0, -t, event_fn=lambda t, y: y[0] - 100.0, rtol=1e-10, atol=1e-12)
    assert event_t.item() == pytest.approx(-math.log(100.0), rel=1e-9)


@pytest.mark.parametrize("method,options,tol", [
    ("euler", dict(step_size=0.01), 1e-12),  # exact for a linear solution
    ("rk4", dict(step_size=0.05, interp="cubic"), 1e-12),
    ("midpoint", dict(step_size=0.05, interp="cubic"), 1e-12),
    ("explicit_adams", dict(step_size=0.05), 1e-12),
    ("implicit_adams", dict(step_size=0.05, interp="cubic"), 1e-12),
])
def test_events_on_fixed_grids_free_fall(method, options, tol):
    # Height h = 1 - t²/2 (dh/dt = v, dv/dt = -1) hits 0 at sqrt(2); each method's
    # interpolant is exact (or nearly) for the quadratic height within a step.
    def f(t, y):
        return torch.stack([y[1], -torch.ones_like(y[1])])

    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    event_t, ys = odeint_event(f, y0, torch.tensor(0.0, dtype=F64), event_fn=lambda t, y: y[0],
                               method=method, options=options)
    if method in ("euler", "explicit_adams"):
        # Euler's height is not the exact parabola; check against its own closed form:
        # the located time is where the step's interpolant crosses zero.
        assert abs(ys[-1, 0].item()) < 1e-12
    else:
        assert event_t.item() == pytest.approx(math.sqrt(2.0), abs=tol)
        assert ys[-1, 1].item() == pytest.approx(-math.sqrt(2.0), abs=1e-10)


def test_fixed_grid_event_on_sine_matches_closed_form_both_directions():
    f = lambda t, y: torch.cos(t).reshape(1)  # noqa: E731  y = sin t
    y0 = torch.zeros(1, dtype=F64)
    opts = dict(step_size=0.01, interp="cubic")
    event_t, _ = odeint(f, y0, torch.tensor([0.0, 0.1], dtype=F64), method="rk4", options=opts,
                        event_fn=lambda t, y: y[0] - 0.5)
    assert event_t.item() == pytest.approx(math.pi / 6, abs=1e-9)
    event_t, _ = odeint(f, y0, torch.tensor([0.0, -1.0], dtype=F64), method="rk4", options=opts,
                        event_fn=lambda t, y: y[0] + 0.5)
    assert event_t.item() == pytest.approx(-math.pi / 6, abs=1e-9)


@pytest.mark.parametrize("gradient", ["direct", "checkpoint", "adjoint"])
def test_fixed_grid_event_time_gradient(gradient):
    # Free fall from height h: t* = sqrt(2 h) under unit gravity, dt*/dh = 1/sqrt(2 h).
    h = torch.tensor(2.0, dtype=F64, requires_grad=True)

    def f(t, y):
        return torch.stack([y[1], -torch.ones_like(y[1])])

    y0 = torch.stack([h, torch.zeros((), dtype=F64)])
    sol = solve(f, y0, torch.tensor([0.0, math.inf], dtype=F64), event_fn=lambda t, y: y[0],
                method="rk4", options=dict(step_size=0.1, interp="cubic"), gradient=gradient,
                adjoint_params=())
    assert sol.event_t.item() == pytest.approx(2.0, abs=1e-12)
    (dh,) = torch.autograd.grad(sol.event_t, h)
    assert dh.item() == pytest.approx(1 / math.sqrt(4.0), rel=1e-9)


# -------------------------------------------------------------------- first crossing
def _falling_line(t, y):  # y = 1 - t
    return -torch.ones_like(y)


@pytest.mark.parametrize("method,options", [
    ("euler", dict(step_size=1.0)), ("rk4", dict(step_size=1.0, interp="cubic")),
    ("dopri5", dict(first_step=1.0)), ("tsit5", dict(first_step=1.0)),
])
def test_event_zero_at_step_end_does_not_hide_an_earlier_crossing(method, options):
    # event_fn crosses zero at t = 0.5, then is forced to 0 from t = 0.8 on: a single step
    # [0, 1] ends on an exact zero, but the first crossing is at 0.5.
    def event_fn(t, y):
        return torch.where(t < 0.8, y[0] - 0.5, torch.zeros_like(y[0]))

    y0 = torch.ones(1, dtype=F64)
    sol = solve(_falling_line, y0, torch.tensor([0.0, 3.0], dtype=F64), event_fn=event_fn,
                method=method, options=options)
    assert sol.stats.n_accepted == 1
    assert sol.event_t.item() == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("method,options", [
    ("rk4", dict(step_size=1.0, interp="cubic")), ("dopri5", dict(first_step=1.0)),
])
def test_event_that_crosses_twice_in_one_step_stops_at_the_first_root(method, options):
    # y = (t - 0.3)(t - 0.7): dy/dt = 2t - 1, y(0) = 0.21; both roots lie in the step [0, 1].
    f = lambda t, y: (2 * t - 1).reshape(1)  # noqa: E731
    y0 = torch.tensor([0.21], dtype=F64)
    sol = solve(f, y0, torch.tensor([0.0, 5.0], dtype=F64), event_fn=lambda t, y: y[0],
                method=method, options=options)
    assert sol.stats.n_accepted == 1
    assert sol.event_t.item() == pytest.approx(0.3, abs=1e-12)
    assert "falling" in sol.stats.message


def test_event_exactly_at_step_end_is_found_there():
    y0 = torch.ones(1, dtype=F64)
    sol = solve(_falling_line, y0, torch.tensor([0.0, 3.0], dtype=F64),
                event_fn=lambda t, y: y[0], method="euler", options=dict(step_size=0.25))
    assert sol.event_t.item() == pytest.approx(1.0, abs=1e-14)


def test_dopri8_event_is_as_accurate_as_the_method():
    # dopri8 has no interpolant of its order: the root is refined by re-stepping.
    f = lambda t, y: torch.cos(t).reshape(1)  # noqa: E731
    event_t, ys = odeint_event(f, torch.zeros(1, dtype=F64), torch.tensor(0.0, dtype=F64),
                               event_fn=lambda t, y: y[0] - 0.9, method="dopri8",
                               rtol=1e-12, atol=1e-14)
    assert event_t.item() == pytest.approx(math.asin(0.9), abs=1e-11)


# ------------------------------------------------------------------------- callbacks
class Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(-0.5))
        self.calls = {"fwd": [], "adj": []}

    def forward(self, t, y):
        return self.w * y

    def callback_step(self, t, y, dt):
        self.calls["fwd"].append((float(t), float(dt)))

    def callback_step_adjoint(self, t, y, dt):
        self.calls["adj"].append((float(t), float(dt)))


@pytest.mark.parametrize("method", ["euler", "rk4", "explicit_adams", "implicit_adams"])
def test_fixed_grid_callback_step_runs_once_per_step_forward_and_backward(method):
    f = Counting()
    ys = odeint_adjoint(f, torch.ones(2), torch.tensor([0.0, 1.0]), method=method,
                        options=dict(step_size=0.1))
    assert len(f.calls["fwd"]) == 10
    assert f.calls["fwd"][0][0] == 0.0 and f.calls["fwd"][0][1] == pytest.approx(0.1)
    ys.sum().backward()
    assert len(f.calls["adj"]) == 10
    # The backward solve runs from 1 back to 0: user times, negative steps.
    assert f.calls["adj"][0][0] == pytest.approx(1.0) and f.calls["adj"][0][1] < 0


def test_callbacks_a_method_cannot_honour_warn():
    f = Counting()
    f.callback_accept_step = lambda t, y, dt: None
    with pytest.warns(UserWarning, match="callback_accept_step"):
        odeint(f, torch.ones(2), torch.tensor([0.0, 1.0]), method="rk4")
    g = Counting()
    with pytest.warns(UserWarning, match="callback_step"):
        with torch.no_grad():
            odeint(g, torch.ones(2), torch.tensor([0.0, 1.0]), method="scipy_solver")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an adaptive method honours all three
        odeint(f, torch.ones(2), torch.tensor([0.0, 1.0]), method="dopri5")


# ----------------------------------------------------------------------- scipy_solver
def test_scipy_solver_with_grad_returns_the_solution_and_warns():
    f = Lin(-1.0)
    y0 = torch.ones(1, dtype=F64, requires_grad=True)
    t = torch.linspace(0, 1, 3, dtype=F64)
    with pytest.warns(UserWarning, match="odeint_adjoint"):
        ys = odeint(f, y0, t, method="scipy_solver", rtol=1e-10, atol=1e-12)
    assert not ys.requires_grad
    assert ys[-1].item() == pytest.approx(math.exp(-1.0), rel=1e-8)


# ----------------------------------------------------------------- fixed-grid options
@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4", "explicit_adams",
                                    "implicit_adams"])
def test_perturb_evaluates_on_the_one_sided_points(method):
    for dtype in (torch.float32, F64):
        times: list[float] = []

        def f(t, y, times=times):
            times.append(t.item())
            return -y

        odeint(f, torch.ones(2, dtype=dtype), torch.tensor([0.0, 1.0], dtype=dtype),
               method=method, options=dict(step_size=0.5, perturb=True))
        grid = (0.0, 0.5, 1.0)
        assert not any(t in grid for t in times)
        after = [torch.nextafter(torch.tensor(g, dtype=dtype), torch.tensor(2.0, dtype=dtype))
                 .item() for g in grid[:2]]
        assert all(a in times for a in after)  # each step starts just after its grid point
        if method not in ("euler", "midpoint"):  # stages at the step's end: just before it
            before = torch.nextafter(torch.tensor(0.5, dtype=dtype),
                                     torch.tensor(-1.0, dtype=dtype)).item()
            assert before in times


def test_grid_constructor_receives_the_users_t():
    seen = []

    def constructor(func, y0, t):
        seen.append(t.tolist())
        return torch.linspace(float(t[0]), float(t[-1]), 11)

    x0 = torch.tensor(1.0, requires_grad=True)
    xs = odeint_adjoint(lambda t, x: x, x0, torch.tensor([1.0, 0.0]), method="euler",
                        options=dict(grid_constructor=constructor), adjoint_params=())
    # Euler with 10 steps of -0.1 from x(1) = 1: x(0) = 0.9^10.
    assert xs[1].item() == pytest.approx(0.9**10, rel=1e-6)
    xs[1].backward()
    assert x0.grad.item() == pytest.approx(0.9**10, rel=1e-6)
    assert seen == [[1.0, 0.0], [0.0, 1.0]]  # forward decreasing; backward from 0 to 1


def test_zero_is_a_valid_min_step_and_negative_is_not():
    y0 = torch.ones(1, dtype=F64)
    t = torch.linspace(0, 1, 3, dtype=F64)
    ys = odeint(lambda t, y: -y, y0, t, options=dict(min_step=0, max_step=math.inf))
    assert ys[-1].item() == pytest.approx(math.exp(-1), rel=1e-6)
    with pytest.raises(ValueError, match="min_step.*non-negative"):
        odeint(lambda t, y: -y, y0, t, options=dict(min_step=-1.0))


# ----------------------------------------------------------------------- odeint_dense
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3", "dopri8"])
def test_odeint_dense_matches_the_closed_form(method):
    dense = odeint_dense(lambda t, y: -y, torch.ones(3, dtype=F64), 0.0, 2.0, method=method,
                         rtol=1e-10, atol=1e-12)
    t = torch.tensor([0.0, 0.3, 1.1, 2.0], dtype=F64)
    ys = dense(t)
    assert ys.shape == (4, 3)
    tol = 1e-5 if method == "bosh3" else 1e-8
    assert torch.allclose(ys[:, 0], torch.exp(-t), atol=tol, rtol=0)
    assert dense.derivative(1.1)[0].item() == pytest.approx(-math.exp(-1.1), abs=tol * 10)
    with pytest.raises(ValueError, match="outside the solved span"):
        dense(2.5)


def test_odeint_dense_tuple_state_and_decreasing_time():
    dense = odeint_dense(lambda t, y: (-y[0], 2 * y[1]), (torch.ones(1, dtype=F64),
                         torch.ones(2, dtype=F64)), 1.0, 0.0, rtol=1e-10, atol=1e-12)
    a, b = dense(torch.tensor(0.5, dtype=F64))
    assert a.item() == pytest.approx(math.exp(0.5), rel=1e-8)
    assert b[1].item() == pytest.approx(math.exp(-1.0), rel=1e-8)


# --------------------------------------------------------------- a failed solve keeps
def _blows_up_after(t_fail: float):
    def f(t, y):
        if t > t_fail:
            return y * float("nan")
        return -y
    return f


def test_throw_false_keeps_the_outputs_reached():
    t = torch.linspace(0, 3, 7, dtype=F64)
    sol = solve(_blows_up_after(1.6), torch.ones(1, dtype=F64), t, throw=False,
                rtol=1e-10, atol=1e-12)
    assert sol.stats.status == Status.NONFINITE
    reached = t <= 1.5
    assert torch.allclose(sol.ys[reached, 0], torch.exp(-t[reached]), rtol=1e-8)
    assert torch.isnan(sol.ys[~reached]).all()
    assert sol.stats.nfe > 0 and odeflow.last_stats().nfe == sol.stats.nfe


@pytest.mark.parametrize("gradient", ["direct", "checkpoint", "adjoint"])
def test_failed_solve_stats_are_complete(gradient):
    calls = []
    f = Lin(-1.0)
    f.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(SolveError) as info:
        solve(f, torch.ones(1, dtype=F64), torch.linspace(0, 10, 3, dtype=F64),
              options=dict(max_num_steps=3), gradient=gradient)
    stats = info.value.stats
    assert stats.status == Status.MAX_STEPS_REACHED
    assert stats.nfe == len(calls) > 0 and stats.n_steps == 3
    assert odeflow.last_stats().nfe == len(calls)
    sol = solve(f, torch.ones(1, dtype=F64), torch.linspace(0, 10, 3, dtype=F64),
                options=dict(max_num_steps=3), gradient=gradient, throw=False)
    assert sol.stats.nfe > 0 and sol.ys[0, 0].item() == 1.0 and torch.isnan(sol.ys[-1]).all()


def test_fixed_grid_failure_keeps_the_finite_outputs():
    t = torch.linspace(0, 3, 4, dtype=F64)
    sol = solve(_blows_up_after(1.5), torch.ones(1, dtype=F64), t, method="euler",
                options=dict(step_size=0.01), throw=False)
    assert sol.stats.status == Status.NONFINITE
    assert torch.isfinite(sol.ys[:2]).all() and torch.isnan(sol.ys[2:]).all()


# --------------------------------------------------------------------- clear errors
def test_meta_device_inputs_are_named():
    with pytest.raises(ValueError, match="y0 is on the 'meta' device"):
        odeint(lambda t, y: -y, torch.ones(2, device="meta"), torch.linspace(0, 1, 3))
    with pytest.raises(ValueError, match="t is on the 'meta' device"):
        odeint(lambda t, y: -y, torch.ones(2), torch.linspace(0, 1, 3, device="meta"))


def test_invalid_adjoint_options_fail_at_the_call():
    f = Lin()
    args = (f, torch.ones(1, dtype=F64), torch.linspace(0, 1, 3, dtype=F64))
    with torch.no_grad():  # even when no backward will ever run
        with pytest.raises(ValueError, match="adjoint_options.*max_num_steps"):
            odeint_adjoint(*args, adjoint_options=dict(max_num_steps=0))
        with pytest.raises(ValueError, match="adjoint_options.*unknown option"):
            odeint_adjoint(*args, adjoint_options=dict(bogus=1))
        with pytest.raises(TypeError, match="adjoint_options.*norm"):
            odeint_adjoint(*args, adjoint_options=dict(norm="fast"))


def test_backward_solve_failure_names_the_backward_solve():
    f = Lin()
    ys = odeint_adjoint(f, torch.ones(1, dtype=F64), torch.linspace(0, 1, 3, dtype=F64),
                        adjoint_options=dict(max_num_steps=1))
    with pytest.raises(SolveError, match="backward solve.*adjoint_options"):
        ys.sum().backward()


def test_user_adjoint_norm_gets_torchdiffeq_shaped_state():
    shapes = []

    def norm(state):
        shapes.append(tuple(tuple(s.shape) for s in state))
        return max(s.abs().max() for s in state)

    p1 = torch.rand(7, requires_grad=True)
    p2 = torch.rand((), requires_grad=True)
    y0 = (torch.tensor(1.0), torch.ones(2, 2))
    ys = odeint_adjoint(lambda t, y: (y[0] * p2, y[1] * p1.sum()), y0, torch.tensor([0.0, 1.0]),
                        adjoint_params=(p1, p2), adjoint_options=dict(norm=norm))
    ys[0].sum().backward()
    assert shapes and shapes[0] == ((), (), (2, 2), (), (2, 2), (7,), ())
