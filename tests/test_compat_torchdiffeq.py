"""Real torchdiffeq code runs unchanged under odeflow ("change the import; nothing else").

Each test is a pattern that torchdiffeq 0.2.5 accepts; where torchdiffeq is installed the
result is compared with it directly.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import odeflow

try:
    import torchdiffeq
except ImportError:  # pragma: no cover - the test extra installs it
    torchdiffeq = None

needs_torchdiffeq = pytest.mark.skipif(torchdiffeq is None, reason="torchdiffeq not installed")

D = torch.float64


# --- func's output broadcasts to the state's shape ------------------------------------------

def test_zero_dim_derivative_for_shape_one_state_is_free_fall():
    # torchdiffeq's bouncing-ball example: dv/dt = -g returned as a 0-dim tensor.
    g = 9.8

    def func(t, state):
        pos, vel = state
        return vel, torch.tensor(-g, dtype=D)

    y0 = (torch.tensor([10.0], dtype=D), torch.tensor([0.0], dtype=D))
    t = torch.tensor([0.0, 0.5, 1.0], dtype=D)
    pos, vel = odeflow.odeint(func, y0, t, rtol=1e-10, atol=1e-10)
    assert pos.shape == (3, 1) and vel.shape == (3, 1)
    torch.testing.assert_close(vel[:, 0], -g * t, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(pos[:, 0], 10.0 - 0.5 * g * t**2, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("method", ["dopri5", "rk4", "rodas5p"])
def test_broadcast_output_matches_full_output_and_keeps_gradient(method):
    k = torch.tensor(0.3, dtype=D, requires_grad=True)
    y0 = torch.ones(1, dtype=D)
    t = torch.tensor([0.0, 1.0], dtype=D)
    opts = dict(step_size=0.1) if method == "rk4" else None
    ys = odeflow.odeint(lambda t, y: k * t * y.sum(), y0, t, method=method, options=opts)
    ref = odeflow.odeint(lambda t, y: k * t * y, y0, t, method=method, options=opts)
    torch.testing.assert_close(ys, ref, rtol=1e-14, atol=0)
    exact = torch.exp(0.5 * k.detach()).view(1)  # y' = k t y
    torch.testing.assert_close(ys[-1], exact, rtol=1e-6, atol=0)
    (grad,) = torch.autograd.grad(ys[-1].sum(), k)
    torch.testing.assert_close(grad, 0.5 * exact[0], rtol=1e-5, atol=0)


@needs_torchdiffeq
def test_broadcast_output_agrees_with_torchdiffeq():
    # The bouncing-ball form (a tuple state whose second derivative is 0-dim), with drag.
    def func(t, state):
        pos, vel = state
        return vel, (-9.8 - 0.1 * vel).sum()

    y0 = (torch.tensor([10.0], dtype=D), torch.tensor([1.0], dtype=D))
    t = torch.linspace(0, 1, 4, dtype=D)
    ours = odeflow.odeint(func, y0, t, rtol=1e-9, atol=1e-9)
    theirs = torchdiffeq.odeint(func, y0, t, rtol=1e-9, atol=1e-9)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)


def test_missing_leading_size_one_dimensions_are_accepted():
    t = torch.tensor([0.0, 1.0], dtype=D)
    ys = odeflow.odeint(lambda t, y: -y.view(3), torch.ones(1, 3, dtype=D), t)
    assert ys.shape == (2, 1, 3)
    torch.testing.assert_close(ys[-1, 0], torch.full((3,), 0.36787944117144233, dtype=D),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bad_shape", [(2,), (3, 3), (1,), (1, 3)])
def test_output_that_does_not_broadcast_is_a_clear_error(bad_shape):
    # (1,) would broadcast to (3,) by repeating its value: refused, as torchdiffeq cannot use
    # it either and it is usually a slicing bug.
    shape = str(bad_shape).replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(ValueError, match=r"func\(t, y\) must have the shape of y0 \(3,\), "
                                         r"got " + shape + ".*without repeating values"):
        odeflow.odeint(lambda t, y: torch.zeros(bad_shape, dtype=D), torch.ones(3, dtype=D),
                       torch.tensor([0.0, 1.0], dtype=D))


# --- func's output has another floating dtype -----------------------------------------------

@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_float64_output_for_float32_state_follows_torchdiffeq(method):
    y0 = torch.tensor([1.0, 2.0])
    t = torch.tensor([0.0, 0.5, 1.0])
    func = lambda t, y: -y.double()  # noqa: E731
    opts = dict(step_size=0.05) if method == "rk4" else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ys = odeflow.odeint(func, y0, t, method=method, options=opts)
    msgs = [str(w.message) for w in caught if "dtype" in str(w.message)]
    assert len(msgs) == 1, msgs  # one warning per solve, not one per call
    assert "torch.float64" in msgs[0] and "torch.float32" in msgs[0]
    assert ys.dtype == torch.float32  # torchdiffeq 0.2.5's solution keeps y0's dtype
    torch.testing.assert_close(ys, y0 * torch.exp(-t)[:, None], rtol=1e-5, atol=1e-6)
    if torchdiffeq is not None:
        theirs = torchdiffeq.odeint(func, y0, t, method=method, options=opts)
        assert theirs.dtype == ys.dtype
        torch.testing.assert_close(ys, theirs, rtol=1e-5, atol=1e-6)


def test_dtype_cast_keeps_the_gradient_and_tuple_states_work():
    k = torch.tensor(0.5, requires_grad=True)
    y0 = (torch.ones(2), torch.ones(1))
    with pytest.warns(UserWarning, match="cast to torch.float32"):
        a, b = odeflow.odeint(lambda t, s: (-k.double() * s[0].double(), -s[1]), y0,
                              torch.tensor([0.0, 1.0]))
    assert a.dtype == b.dtype == torch.float32
    (grad,) = torch.autograd.grad(a[-1].sum(), k)
    torch.testing.assert_close(grad, torch.tensor(-2 * torch.exp(torch.tensor(-0.5)).item()),
                               rtol=1e-4, atol=1e-5)


def test_integer_output_stays_an_error():
    with pytest.raises(TypeError, match=r"func\(t, y\) must have dtype torch.float32 like y0"):
        odeflow.odeint(lambda t, y: torch.zeros(2, dtype=torch.int64), torch.ones(2),
                       torch.tensor([0.0, 1.0]))


# --- options of another torchdiffeq method ---------------------------------------------------

@pytest.mark.parametrize("method, options", [
    ("dopri5", dict(step_size=0.1)),
    ("dopri5", dict(step_size=0.1, perturb=True, first_step=0.01)),
    ("rk4", dict(step_size=0.1, first_step=0.01, max_order=3)),
    ("rodas5p", dict(grid_constructor=None)),
])
def test_option_of_another_torchdiffeq_method_warns_and_is_ignored(method, options):
    y0 = torch.tensor([1.0, -0.5], dtype=D)
    t = torch.linspace(0, 1, 3, dtype=D)
    func = lambda t, y: -y  # noqa: E731
    valid = {k: v for k, v in options.items() if k in ("first_step",) and method == "dopri5"}
    if method == "rk4":
        valid = dict(step_size=0.1)
    with pytest.warns(UserWarning, match=f"method='{method}' ignores the option"):
        ys = odeflow.odeint(func, y0, t, method=method, options=options)
    ref = odeflow.odeint(func, y0, t, method=method, options=valid)
    torch.testing.assert_close(ys, ref, rtol=0, atol=0)


@needs_torchdiffeq
def test_step_size_with_dopri5_also_only_warns_in_torchdiffeq():
    with pytest.warns(UserWarning):
        torchdiffeq.odeint(lambda t, y: -y, torch.ones(1, dtype=D),
                           torch.tensor([0.0, 1.0], dtype=D), options=dict(step_size=0.1))


@pytest.mark.parametrize("method, key, hint", [
    ("dopri5", "frist_step", "first_step"),
    ("rk4", "stepsize", "step_size"),
    ("dopri5", "max_num_step", "max_num_steps"),
])
def test_unknown_option_is_an_error_with_the_closest_name(method, key, hint):
    with pytest.raises(ValueError, match=f"unknown option '{key}' for method='{method}'; "
                                         f"did you mean '{hint}'.*valid options are"):
        odeflow.odeint(lambda t, y: -y, torch.ones(1, dtype=D),
                       torch.tensor([0.0, 1.0], dtype=D), method=method, options={key: 1})


def test_odeflow_only_option_of_another_method_stays_an_error():
    # Ignoring per_sample or linear_solver would change the answer silently.
    for method, key in (("rk4", "compile"), ("dopri5", "linear_solver")):
        with pytest.raises(ValueError, match=f"unknown option '{key}'"):
            odeflow.odeint(lambda t, y: -y, torch.ones(1, dtype=D),
                           torch.tensor([0.0, 1.0], dtype=D), method=method,
                           options={key: True, "step_size": 0.5})


# --- adjoint gradients through a tensor computed once outside func --------------------------

def _closure_problem():
    """``dy/dt = -w y + c(t)`` with ``w = p²`` and ``c`` a piecewise-linear path whose knots
    are built from ``q``: both computed once, outside ``func``, with a graph to p and q."""
    p = torch.tensor(0.7, dtype=D, requires_grad=True)
    q = torch.tensor([0.3, -0.2, 0.5], dtype=D, requires_grad=True)
    y0 = torch.tensor([1.0, 0.5], dtype=D)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=D)

    def make_func():
        w = p * p
        knots = torch.cumsum(q, 0)  # "spline coefficients" from a path that requires grad
        slopes = (knots[1:] - knots[:-1]) * 2.0  # knots at t = 0, 0.5, 1

        def func(tt, y):
            i = min(int(tt.detach() * 2), 1)  # piece of the path
            c = knots[i] + slopes[i] * (tt - 0.5 * i)
            return -w * y + c

        return func

    return p, q, y0, t, make_func


@pytest.mark.parametrize("method, gradient", [
    ("dopri5", "adjoint"), ("rodas5p", "adjoint"), ("kvaerno5", "adjoint"),
    ("dopri5", "checkpoint"),
])
def test_adjoint_through_tensor_computed_outside_func(method, gradient):
    p, q, y0, t, make_func = _closure_problem()
    kw = dict(rtol=1e-10, atol=1e-10, method=method,
              options=dict(jump_t=torch.tensor([0.5], dtype=D)) if method == "dopri5" else None)

    def loss(mode, **kw_override):
        extra = dict(gradient=mode, adjoint_params=(p, q)) if mode != "direct" else {}
        ys = odeflow.solve(make_func(), y0, t, **{**kw, **kw_override}, **extra).ys
        return (ys * torch.tensor([1.0, -2.0], dtype=D)).sum()

    got = torch.autograd.grad(loss(gradient), (p, q))
    ref = torch.autograd.grad(loss("direct"), (p, q))
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-6, atol=1e-8)
    # and against central finite differences of a tight solve (error ~ 1e-12/eps + eps²)
    tight = dict(method="dopri5", rtol=1e-12, atol=1e-12,
                 options=dict(jump_t=torch.tensor([0.5], dtype=D)))
    with torch.no_grad():
        eps = 1e-4
        p0 = p.detach().clone()
        p.add_(eps)
        hi = loss("direct", **tight)
        p.sub_(2 * eps)
        lo = loss("direct", **tight)
        p.copy_(p0)
    torch.testing.assert_close(got[0], (hi - lo) / (2 * eps), rtol=1e-6, atol=1e-8)


def test_odeint_adjoint_with_w_equal_p_squared_matches_closed_form():
    p = torch.tensor(0.7, dtype=D, requires_grad=True)
    w = p * p
    for method in ("dopri5", "rodas5p"):
        ys = odeflow.odeint_adjoint(lambda t, y: -w * y, torch.ones(1, dtype=D),
                                    torch.tensor([0.0, 1.0], dtype=D), adjoint_params=(p,),
                                    method=method, rtol=1e-10, atol=1e-10)
        (grad,) = torch.autograd.grad(ys[-1].sum(), p)
        exact = -2 * 0.7 * torch.exp(torch.tensor(-0.49, dtype=D))  # d/dp exp(-p²)
        torch.testing.assert_close(grad, exact, rtol=1e-7, atol=0)


# --- odeint(..., gradient="checkpoint") with a plain function -----------------------------

@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_checkpoint_with_plain_function_matches_direct(method):
    p = torch.tensor(0.7, dtype=D, requires_grad=True)
    A = torch.tensor([[0.0, 1.0], [-1.0, -0.1]], dtype=D, requires_grad=True)
    w = p * p  # non-leaf: the gradient must reach p through it
    y0 = torch.tensor([1.0, 0.0], dtype=D, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.0], dtype=D, requires_grad=True)
    opts = dict(step_size=0.05) if method == "rk4" else None

    def func(tt, y):
        return -w * y + A @ y

    def grads(mode):
        ys = odeflow.odeint(func, y0, t, method=method, options=opts, gradient=mode,
                            rtol=1e-9, atol=1e-9)
        return torch.autograd.grad((ys ** 2).sum(), (p, A, y0, t))

    for got, ref in zip(grads("checkpoint"), grads("direct")):
        torch.testing.assert_close(got, ref, rtol=1e-7, atol=1e-10)


def test_odeint_accepts_adjoint_params_and_adjoint_still_asks_for_them():
    p = torch.tensor(0.7, dtype=D, requires_grad=True)
    y0 = torch.ones(1, dtype=D)
    t = torch.tensor([0.0, 1.0], dtype=D)
    ys = odeflow.odeint(lambda tt, y: -p * y, y0, t, gradient="adjoint", adjoint_params=(p,),
                        rtol=1e-10, atol=1e-10)
    (grad,) = torch.autograd.grad(ys[-1].sum(), p)
    torch.testing.assert_close(grad, -torch.exp(torch.tensor(-0.7, dtype=D)), rtol=1e-7, atol=0)
    with pytest.raises(ValueError, match="adjoint_params="):
        odeflow.odeint(lambda tt, y: -p * y, y0, t, gradient="adjoint")


# --- the event time's gradient on fixed grids ------------------------------------------------

def _free_fall_event(lib, method="rk4"):
    g = 9.81
    v0 = torch.tensor(2.0, dtype=D, requires_grad=True)
    h0 = torch.tensor(10.0, dtype=D, requires_grad=True)
    func = lambda t, y: torch.stack([y[1], torch.tensor(-g, dtype=D)])  # noqa: E731
    event_t, _ = lib.odeint_event(func, torch.stack([h0, v0]), torch.tensor(0.0, dtype=D),
                                  event_fn=lambda t, y: y[0], method=method,
                                  options=dict(step_size=0.01))
    return event_t, torch.stack(torch.autograd.grad(event_t, (v0, h0)))


@pytest.mark.parametrize("method", ["rk4", "euler", "midpoint"])
def test_fixed_grid_event_time_gradient_uses_the_vector_field(method):
    # h(t) = h0 + v0 t - g t²/2 = 0: dt*/dv0 = t*/(g t* - v0), dt*/dh0 = 1/(g t* - v0),
    # evaluated at the computed t*, with the exact slope h'(t*) = f at the event.
    event_t, grads = _free_fall_event(odeflow, method)
    ts = float(event_t.detach())
    denom = 9.81 * ts - 2.0
    exact = torch.tensor([ts / denom, 1.0 / denom], dtype=D)
    tol = 1e-9 if method == "rk4" else 1e-2  # rk4 is exact on a quadratic at the nodes
    torch.testing.assert_close(grads, exact, rtol=tol, atol=0)
    if torchdiffeq is not None:
        their_t, their_grads = _free_fall_event(torchdiffeq, method)
        torch.testing.assert_close(event_t, their_t, rtol=1e-9, atol=0)
        torch.testing.assert_close(grads, their_grads, rtol=1e-8, atol=0)
