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
