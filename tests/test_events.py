"""Events: location on the dense output, IFT gradients of the event time, edge cases.

Closed forms used (gravity g, start height h, no initial velocity):
    free fall      t* = sqrt(2h/g),  dt*/dh = t*/(2h),  dt*/dg = -t*/(2g)
    n-th bounce    t_n = t_1 + (2 v_1/g) Σ_{k=1}^{n-1} e^k,  v_1 = sqrt(2 g h)
                   dt_n/de = (2 v_1/g) Σ_{k=1}^{n-1} k e^(k-1)
Free fall is a quadratic in t, which every Runge–Kutta method of order >= 2 integrates
exactly, so event times and their gradients match to rounding (tolerances 1e-12 / 1e-10
relative in float64); nonlinear problems are held to the solver's tolerance.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

import odeflow
from odeflow import SolveError, Status, odeint, odeint_adjoint, odeint_event
from odeflow import solve as solve_event  # solve(event_fn=...) runs the event solve

F64 = torch.float64


class Gravity(nn.Module):
    """``(height, velocity)' = (velocity, -g)`` with ``g`` a parameter."""

    def __init__(self, g: float = 9.81, dtype: torch.dtype = F64):
        super().__init__()
        self.g = nn.Parameter(torch.tensor(g, dtype=dtype))

    def forward(self, t, y):
        return torch.stack([y[1], -self.g * torch.ones_like(y[1])])


class GravityTuple(nn.Module):
    def __init__(self, g: float = 9.81):
        super().__init__()
        self.g = nn.Parameter(torch.tensor(g, dtype=F64))

    def forward(self, t, y):
        pos, vel = y
        return vel, -self.g * torch.ones_like(vel)


def height(t, y):
    return y[0]


def free_fall(h: float, g: float, interface=odeint, dtype=F64, **kwargs):
    func = Gravity(g, dtype)
    h_t = torch.tensor(h, dtype=dtype, requires_grad=True)
    y0 = torch.stack([h_t, torch.zeros((), dtype=dtype)])
    event_t, ys = odeint_event(func, y0, torch.tensor(0.0, dtype=dtype), event_fn=height,
                               odeint_interface=interface, **kwargs)
    return event_t, ys, h_t, func.g


INTERFACES = {
    "odeint": odeint,
    "adjoint": odeint_adjoint,
    "checkpoint": functools.partial(odeint, gradient="checkpoint"),
}


# ----------------------------------------------------------------------------- free fall
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3", "dopri8"])
def test_free_fall_event_time(method):
    h, g = 2.0, 9.81
    event_t, ys, _, _ = free_fall(h, g, method=method, rtol=1e-10, atol=1e-12)
    exact = math.sqrt(2 * h / g)
    assert abs(event_t.item() - exact) < 1e-12
    assert ys.shape == (2, 2)
    assert abs(ys[-1, 0].item()) < 1e-12  # on the ground
    assert ys[-1, 0].item() >= 0  # the returned state is on the pre-crossing side
    assert abs(ys[-1, 1].item() + math.sqrt(2 * g * h)) < 1e-10
    assert odeflow.last_stats().status == Status.EVENT


@pytest.mark.parametrize("interface", sorted(INTERFACES))
def test_free_fall_gradients(interface):
    h, g = 2.0, 9.81
    event_t, ys, h_t, g_t = free_fall(h, g, INTERFACES[interface], rtol=1e-10, atol=1e-12)
    dh, dg = torch.autograd.grad(event_t, (h_t, g_t), retain_graph=True)
    exact = math.sqrt(2 * h / g)
    tol = 1e-10 if interface != "adjoint" else 1e-7
    assert dh.item() == pytest.approx(exact / (2 * h), rel=tol)
    assert dg.item() == pytest.approx(-exact / (2 * g), rel=tol)
    # The state at the event: velocity -sqrt(2 g h) moves with h and g along the solution.
    dvdh, dvdg = torch.autograd.grad(ys[-1, 1], (h_t, g_t), retain_graph=True)
    v = math.sqrt(2 * g * h)
    assert dvdh.item() == pytest.approx(-g / v, rel=tol)
    assert dvdg.item() == pytest.approx(-h / v, rel=tol)
    # ... and the height at the event is 0 whatever h and g: its gradient vanishes.
    dz = torch.autograd.grad(ys[-1, 0], (h_t, g_t))
    assert max(abs(d.item()) for d in dz) < 1e-9


def test_matches_torchdiffeq_on_a_nonlinear_problem():
    torchdiffeq = pytest.importorskip("torchdiffeq")
    w = torch.tensor(1.3, dtype=F64, requires_grad=True)

    def f(t, y):
        return torch.stack([y[1], -w * torch.sin(y[0]) - 0.1 * y[1]])

    def event_fn(t, y):
        return y[0] + 0.5

    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t0 = torch.tensor(0.0, dtype=F64)
    ours_t, ours_y = odeint_event(f, y0, t0, event_fn=event_fn, rtol=1e-10, atol=1e-12)
    ref_t, ref_y = torchdiffeq.odeint_event(f, y0, t0, event_fn=event_fn, rtol=1e-10,
                                            atol=1e-12)
    assert ours_t.item() == pytest.approx(ref_t.item(), abs=1e-8)
    (ours_g,) = torch.autograd.grad(ours_t, w)
    (ref_g,) = torch.autograd.grad(ref_t, w)
    assert ours_g.item() == pytest.approx(ref_g.item(), rel=1e-6)


def test_float32():
    h, g = 2.0, 9.81
    event_t, ys, h_t, g_t = free_fall(h, g, dtype=torch.float32, rtol=1e-6, atol=1e-7)
    assert event_t.dtype == torch.float32 and ys.dtype == torch.float32
    exact = math.sqrt(2 * h / g)
    assert abs(event_t.item() - exact) < 1e-6
    dh, dg = torch.autograd.grad(event_t, (h_t, g_t))
    assert dh.item() == pytest.approx(exact / (2 * h), rel=1e-5)
    assert dg.item() == pytest.approx(-exact / (2 * g), rel=1e-5)


# ------------------------------------------------------------------------ bouncing ball
def bounce_times(h0, e, g, n, interface=odeint):
    """Times of the first ``n`` impacts, chaining one event-terminated solve per bounce."""
    func = Gravity(g)
    state = torch.stack([h0, torch.zeros_like(h0)])
    t = torch.zeros((), dtype=F64)
    times = []
    for _ in range(n):
        t, ys = odeint_event(func, state, t, event_fn=height, event_direction=-1,
                             odeint_interface=interface, rtol=1e-10, atol=1e-12)
        hit = ys[-1]
        state = torch.stack([hit[0], -e * hit[1]])
        times.append(t)
    return torch.stack(times)


def bounce_closed_form(h0, e, g, n):
    v1 = math.sqrt(2 * g * h0)
    t1 = math.sqrt(2 * h0 / g)
    t_n = t1 + 2 * v1 / g * sum(e**k for k in range(1, n))
    dt_de = 2 * v1 / g * sum(k * e ** (k - 1) for k in range(1, n))
    dt_dh = t1 / (2 * h0) + 2 / v1 * sum(e**k for k in range(1, n))
    return t_n, dt_de, dt_dh


@pytest.mark.parametrize("interface", ["odeint", "adjoint"])
def test_bounce_time_gradient_closed_form(interface):
    h0, e, g, n = 1.5, 0.8, 9.81, 5
    h_t = torch.tensor(h0, dtype=F64, requires_grad=True)
    e_t = torch.tensor(e, dtype=F64, requires_grad=True)
    times = bounce_times(h_t, e_t, g, n, INTERFACES[interface])
    t_n, dt_de, dt_dh = bounce_closed_form(h0, e, g, n)
    assert times[-1].item() == pytest.approx(t_n, abs=1e-11)
    for k in range(1, n + 1):
        assert times[k - 1].item() == pytest.approx(bounce_closed_form(h0, e, g, k)[0],
                                                    abs=1e-11)
    ge, gh = torch.autograd.grad(times[-1], (e_t, h_t))
    tol = 1e-9 if interface == "odeint" else 1e-6
    assert ge.item() == pytest.approx(dt_de, rel=tol)
    assert gh.item() == pytest.approx(dt_dh, rel=tol)


def test_bounce_time_gradient_finite_differences():
    h0, g, n = 1.5, 9.81, 4

    def t_n(e):
        with torch.no_grad():
            return bounce_times(torch.tensor(h0, dtype=F64), torch.tensor(e, dtype=F64), g,
                                n)[-1].item()

    e = 0.7
    e_t = torch.tensor(e, dtype=F64, requires_grad=True)
    (ge,) = torch.autograd.grad(bounce_times(torch.tensor(h0, dtype=F64), e_t, g, n)[-1], e_t)
    step = 1e-5
    fd = (t_n(e + step) - t_n(e - step)) / (2 * step)
    assert ge.item() == pytest.approx(fd, rel=1e-7)


# --------------------------------------------------------------- time, structure, options
def test_reverse_time():
    a = torch.tensor(2.0, dtype=F64, requires_grad=True)
    c = torch.tensor(3.0, dtype=F64, requires_grad=True)
    # y = a t, searched backwards from t0 = 0; event y + c = 0 at t* = -c / a.
    event_t, ys = odeint_event(lambda t, y: a * torch.ones_like(y), torch.zeros(1, dtype=F64),
                               torch.tensor(0.0, dtype=F64), event_fn=lambda t, y: y[0] + c,
                               reverse_time=True)
    assert event_t.item() == pytest.approx(-1.5, abs=1e-12)
    assert ys[-1, 0].item() == pytest.approx(-3.0, abs=1e-12)
    da, dc = torch.autograd.grad(event_t, (a, c))
    assert da.item() == pytest.approx(3.0 / 4.0, rel=1e-10)  # c / a^2
    assert dc.item() == pytest.approx(-0.5, rel=1e-10)  # -1 / a


def test_event_fn_parameters_and_initial_time():
    c = torch.tensor(0.5, dtype=F64, requires_grad=True)  # event height
    t0 = torch.tensor(0.25, dtype=F64, requires_grad=True)
    h, g = 2.0, 9.81
    y0 = torch.tensor([h, 0.0], dtype=F64)
    event_t, _ = odeint_event(Gravity(g), y0, t0, event_fn=lambda t, y: y[0] - c)
    fall = math.sqrt(2 * (h - 0.5) / g)
    assert event_t.item() == pytest.approx(0.25 + fall, abs=1e-12)
    dc, dt0 = torch.autograd.grad(event_t, (c, t0))
    assert dc.item() == pytest.approx(-1 / math.sqrt(2 * g * (h - 0.5)), rel=1e-10)
    assert dt0.item() == pytest.approx(1.0, rel=1e-10)


@pytest.mark.parametrize("interface", ["odeint", "adjoint"])
def test_tuple_state(interface):
    func = GravityTuple()
    h_t = torch.tensor([2.0], dtype=F64, requires_grad=True)
    y0 = (h_t, torch.zeros(1, dtype=F64))
    event_t, (pos, vel) = odeint_event(func, y0, torch.tensor(0.0, dtype=F64),
                                       event_fn=lambda t, y: y[0][0],
                                       odeint_interface=INTERFACES[interface],
                                       rtol=1e-10, atol=1e-12)
    exact = math.sqrt(2 * 2.0 / 9.81)
    assert pos.shape == (2, 1) and vel.shape == (2, 1)
    assert event_t.item() == pytest.approx(exact, abs=1e-12)
    assert vel[-1, 0].item() == pytest.approx(-9.81 * exact, rel=1e-10)
    dh, dg = torch.autograd.grad(event_t, (h_t, func.g))
    tol = 1e-10 if interface == "odeint" else 1e-7
    assert dh.item() == pytest.approx(exact / 4.0, rel=tol)
    assert dg.item() == pytest.approx(-exact / (2 * 9.81), rel=tol)


def circle(t, y):
    return torch.stack([y[1], -y[0]])  # y = (sin t, cos t) from (0, 1)


def test_several_event_functions():
    y0 = torch.tensor([0.0, 1.0], dtype=F64)
    t = torch.tensor([0.0, math.inf], dtype=F64)
    # sin t reaches 0.9 at asin(0.9) before cos t falls to 0 at pi/2.
    sol = solve_event(circle, y0, t, event_fn=lambda t, y: torch.stack([y[1], y[0] - 0.9]),
                      rtol=1e-10, atol=1e-12)
    assert sol.event_index == 1
    assert sol.event_t.item() == pytest.approx(math.asin(0.9), abs=1e-9)
    assert "Value 1 of event_fn" in sol.stats.message and "rising" in sol.stats.message
    sol = odeflow.solve(circle, y0, t, event_fn=lambda t, y: torch.stack([y[1], y[0] - 1.5]))
    assert sol.event_index == 0 and sol.event_t.item() == pytest.approx(math.pi / 2, abs=1e-7)
    # A 2-D event value: the index is into event_fn(t, y).reshape(-1).
    sol = odeflow.solve(circle, y0, t,
                        event_fn=lambda t, y: torch.stack([y + 2.0, y - torch.tensor([0.5, 5.0],
                                                                             dtype=F64)]))
    assert sol.event_index == 2 and sol.event_t.item() == pytest.approx(math.pi / 6, abs=1e-7)


@pytest.mark.parametrize("direction, expected", [(0, math.pi), (-1, math.pi), (1, 2 * math.pi)])
def test_direction(direction, expected):
    y0 = torch.tensor([0.0, 1.0], dtype=F64)
    # sin t is zero at t0 (not an event), falls through zero at pi, rises through it at 2 pi.
    event_t, _ = odeint_event(circle, y0, torch.tensor(0.0, dtype=F64), event_fn=height,
                              event_direction=direction, rtol=1e-10, atol=1e-12)
    assert event_t.item() == pytest.approx(expected, abs=1e-9)
    # The same through SciPy's convention: an attribute on event_fn.

    def event_fn(t, y):
        return y[0]

    event_fn.direction = direction
    event_t2, _ = odeint(circle, y0, torch.tensor([0.0, 10.0], dtype=F64), event_fn=event_fn,
                         rtol=1e-10, atol=1e-12)
    assert event_t2.item() == event_t.item()


def test_per_value_direction():
    y0 = torch.tensor([0.0, 1.0], dtype=F64)
    # cos t falls through 0 at pi/2 (ignored: rising only); sin t falls at pi (taken).
    sol = odeflow.solve(circle, y0, torch.tensor([0.0, math.inf], dtype=F64),
                        event_fn=lambda t, y: torch.stack([y[1], y[0]]))
    assert sol.event_index == 0
    fn = lambda t, y: torch.stack([y[1], y[0]])  # noqa: E731
    sol = solve_event(circle, y0, torch.tensor([0.0, math.inf], dtype=F64), event_fn=fn,
                      event_direction=[1, -1], rtol=1e-10, atol=1e-12)
    assert sol.event_index == 1 and sol.event_t.item() == pytest.approx(math.pi, abs=1e-9)


# ---------------------------------------------------------------------------- edge cases
def test_zero_at_t0_is_not_an_event():
    # A ball on the ground thrown upwards at v lands again at 2 v / g.
    v, g = 3.0, 9.81
    event_t, ys = odeint_event(Gravity(g), torch.tensor([0.0, v], dtype=F64),
                               torch.tensor(0.0, dtype=F64), event_fn=height)
    assert event_t.item() == pytest.approx(2 * v / g, abs=1e-12)
    assert ys[-1, 1].item() == pytest.approx(-v, abs=1e-10)


def test_no_event_before_t1():
    y0 = torch.tensor([1.0], dtype=F64)
    t = torch.tensor([0.0, 2.0], dtype=F64)
    decay = lambda t, y: -y  # noqa: E731
    # solve() keeps a bounded search: [t0, t1].
    with pytest.raises(SolveError) as info:
        solve_event(decay, y0, t, event_fn=lambda t, y: y[0] - 0.01)
    assert info.value.status == Status.NO_EVENT
    assert odeflow.last_stats().status == Status.NO_EVENT
    sol = solve_event(decay, y0, t, event_fn=lambda t, y: y[0] - 0.01, throw=False)
    assert sol.event_t is None and sol.stats.status == Status.NO_EVENT
    assert sol.ys[-1, 0].item() == pytest.approx(math.exp(-2.0), rel=1e-6)


def test_unbounded_search_is_bounded_by_max_num_steps():
    y0 = torch.tensor([1.0], dtype=F64)
    with pytest.raises(SolveError, match="max_num_steps=50") as info:
        odeint_event(lambda t, y: torch.ones_like(y), y0, torch.tensor(0.0, dtype=F64),
                     event_fn=lambda t, y: y[0] + 1.0, options=dict(max_num_steps=50))
    assert info.value.status == Status.MAX_STEPS_REACHED


def test_bad_event_functions_and_arguments():
    y0 = torch.tensor([1.0], dtype=F64)
    t0 = torch.tensor(0.0, dtype=F64)
    f = lambda t, y: -y  # noqa: E731
    with pytest.raises(TypeError, match="must return a tensor"):
        odeint_event(f, y0, t0, event_fn=lambda t, y: 1.0)
    with pytest.raises(TypeError, match="real floating"):
        odeint_event(f, y0, t0, event_fn=lambda t, y: (y > 0).long())
    with pytest.raises(ValueError, match="empty"):
        odeint_event(f, y0, t0, event_fn=lambda t, y: y[:0])
    with pytest.raises(ValueError, match="finite"):
        odeint_event(f, y0, t0, event_fn=lambda t, y: y / 0)
    with pytest.raises(ValueError, match="event_direction"):
        odeint_event(f, y0, t0, event_fn=lambda t, y: y, event_direction=2)
    with pytest.raises(ValueError, match="step_size"):
        odeint_event(f, y0, t0, event_fn=lambda t, y: y, method="rk4")
    with pytest.raises(ValueError, match="scipy_solver"):
        odeint_event(f, y0, t0, event_fn=lambda t, y: y, method="scipy_solver")
    with pytest.raises(ValueError, match="two times"):
        solve_event(f, y0, torch.tensor([0.0, 1.0, 2.0], dtype=F64), event_fn=lambda t, y: y)
    with pytest.raises(ValueError, match="unknown option"):
        odeint_event(f, y0, t0, event_fn=lambda t, y: y, options=dict(bogus=1))


def test_event_fn_shape_change_is_an_error():
    calls = []

    def event_fn(t, y):
        calls.append(1)
        return y if len(calls) == 1 else torch.cat([y, y])

    with pytest.raises(ValueError, match="must return 1 values"):
        odeint_event(lambda t, y: -y, torch.tensor([1.0], dtype=F64),
                     torch.tensor(0.0, dtype=F64), event_fn=event_fn)


def test_location_takes_no_extra_steps():
    # The event solve takes the steps of the plain solve up to the step holding the event.
    y0 = torch.tensor([0.0, 1.0], dtype=F64)
    t0 = torch.tensor(0.0, dtype=F64)
    odeint_event(circle, y0, t0, event_fn=lambda t, y: y[0] - 0.5, rtol=1e-8, atol=1e-10)
    event_stats = odeflow.last_stats()
    steps_seen = []

    class Recorder(nn.Module):
        def forward(self, t, y):
            return circle(t, y)

        def callback_accept_step(self, t, y, dt):
            steps_seen.append(float(t + dt))

    odeint(Recorder(), y0, torch.tensor([0.0, 1.0], dtype=F64), rtol=1e-8, atol=1e-10)
    first_after = next(i for i, t in enumerate(steps_seen) if t >= math.asin(0.5))
    assert event_stats.n_accepted == first_after + 1


@pytest.mark.parametrize("interface", ["odeint", "checkpoint"])
def test_gradient_is_exact_for_the_discretised_solution(interface):
    # Every step accepted and capped at 0.2: the step sequence does not depend on w, so the
    # discrete event time is a smooth function of w that central differences resolve. The
    # IFT gradient with the dense output's derivative matches it to rounding, although the
    # coarse steps put the discrete solution far from the exact flow.
    class Pendulum(nn.Module):
        def __init__(self, w):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(w, dtype=F64))

        def forward(self, t, y):
            return torch.stack([y[1], -self.w * torch.sin(y[0])])

    kwargs = dict(rtol=1e3, atol=1e3, options=dict(first_step=0.2, max_step=0.2))
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t0 = torch.tensor(0.0, dtype=F64)

    def event_time(w):
        with torch.no_grad():
            return odeint_event(Pendulum(w), y0, t0, event_fn=height, **kwargs)[0].item()

    func = Pendulum(2.0)
    event_t, _ = odeint_event(func, y0, t0, event_fn=height,
                              odeint_interface=INTERFACES[interface], **kwargs)
    (grad,) = torch.autograd.grad(event_t, func.w)
    step = 1e-5
    fd = (event_time(2.0 + step) - event_time(2.0 - step)) / (2 * step)
    assert grad.item() == pytest.approx(fd, rel=1e-9)  # dy/dt = func instead: 2e-6


@pytest.mark.parametrize("kind", ["step", "flat", "linear"])
def test_root_finder_converges_on_hard_event_functions(kind):
    # A jump (bisection only), a root of multiplicity 5 (regula falsi stalls without the
    # bisection fallback) and a plain linear root; each located to a few ulps of t.
    root = 1.2345

    def event_fn(t, y):
        if kind == "step":
            return torch.where(t < root, 1.0, -1.0).to(F64)
        if kind == "flat":
            return (root - t) ** 5
        return root - t

    calls = []

    def counted(t, y):
        calls.append(1)
        return event_fn(t, y)

    event_t, _ = odeint_event(lambda t, y: -y, torch.ones(1, dtype=F64),
                              torch.tensor(0.0, dtype=F64), event_fn=counted)
    assert abs(event_t.item() - root) <= 1e-14
    assert event_t.item() <= root  # the pre-crossing side
    assert len(calls) < 200


def test_complex_state():
    # y = exp(i w t): its real part cos(w t) falls through zero at t* = pi / (2 w).
    w = torch.tensor(1.0, dtype=F64, requires_grad=True)
    event_t, ys = odeint_event(lambda t, y: 1j * w * y, torch.ones(1, dtype=torch.complex128),
                               torch.tensor(0.0, dtype=F64), event_fn=lambda t, y: y.real[0],
                               rtol=1e-10, atol=1e-12)
    assert ys.dtype == torch.complex128
    assert event_t.item() == pytest.approx(math.pi / 2, abs=1e-10)
    (dw,) = torch.autograd.grad(event_t, w)
    assert dw.item() == pytest.approx(-math.pi / 2, rel=1e-8)  # -pi / (2 w^2)


def test_per_sample_checkpoint_replays_a_step_with_an_output_and_an_event():
    # Sample 0 reaches its end t1 = 1 in the step where sample 1 crosses its event (0.7):
    # the replay once rebound its per-sample flag to an index tensor there and raised.
    w = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    y0 = torch.zeros(2, 1, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[0.0, 1.0], [0.0, 10.0]], dtype=torch.float64)
    sol = solve_event(lambda t, y: w * torch.ones_like(y), y0, t,
                      event_fn=lambda t, y: y[:, 0] - torch.tensor([5.0, 0.7], dtype=y.dtype),
                      options={"per_sample": True}, gradient="checkpoint", adjoint_params=(w,))
    sol.ys[1].sum().backward()  # y_0(1) = w; sample 1's state at its event is 0.7
    assert float(w.grad) == pytest.approx(1.0)
    assert y0.grad.view(-1).tolist() == pytest.approx([1.0, 0.0])


def test_per_sample_hard_roots_are_located_together():
    # One lane per kind of root of test_root_finder_converges_on_hard_event_functions, in
    # one per-sample solve: the lanes are located together (the flat root needs many more
    # than the 8 iterations between two host reads), each as its own joint solve does.
    roots = torch.tensor([1.2345, 1.2345, 1.2345, 0.75], dtype=F64)

    def event_fn(t, y):
        step = torch.where(t < roots[0], 1.0, -1.0).to(F64)
        return torch.stack([step, (roots[1] - t) ** 5, roots[2] - t,
                            torch.cos(2 * t) - math.cos(1.5)])

    def per_lane(t, y):
        return event_fn(t, y).diagonal()

    y0 = torch.ones(4, 1, dtype=F64)
    sol = solve_event(lambda t, y: -y, y0, torch.tensor([0.0, 5.0], dtype=F64),
                      event_fn=per_lane, options={"per_sample": True})
    assert (sol.event_t - roots).abs().max().item() <= 1e-14
    assert (sol.event_t <= roots).all()  # the pre-crossing side
    for b in range(4):
        one, _ = odeint_event(lambda t, y: -y, torch.ones(1, dtype=F64),
                              torch.tensor(0.0, dtype=F64),
                              event_fn=lambda t, y, b=b: event_fn(t.expand(4), y)[b, b])
        assert abs(sol.event_t[b].item() - one.item()) <= 4 * math.ulp(roots[b].item())


@pytest.mark.parametrize("per_sample", [False, True])
def test_event_fn_not_finite_inside_the_bracket_is_an_error(per_sample):
    # Finite at every sample of the steps before the crossing, nan past t = 0.9 (inside
    # the step where it changes sign): the root finding refuses rather than guess.
    def event_fn(t, y):
        return torch.where(t < 0.9, 1.0 - t, math.nan).to(F64) + 0 * y[..., 0]

    y0 = torch.ones(2, 1, dtype=F64) if per_sample else torch.ones(1, dtype=F64)
    with pytest.raises(ValueError, match="event_fn returned a non-finite value"):
        solve_event(lambda t, y: -y, y0, torch.tensor([0.0, 5.0], dtype=F64),
                    event_fn=event_fn, options={"per_sample": True} if per_sample else None)
