"""sdeint(..., gradient="checkpoint"): backpropagation's gradients by per-step replay.

The replayed steps are the forward's (same times, state and Brownian increments), so the
gradients must equal ``gradient="direct"`` to rounding, while autograd holds one step's
graph at a time.
"""

from __future__ import annotations

import pytest
import torch

import odeflow.sde as tsde

from .test_sde_adjoint_sde import Toy, _grads, _setup

D64 = torch.float64
CASES = [("ito", "euler", "general"), ("ito", "milstein", "diagonal"), ("ito", "srk", "scalar"),
         ("ito", "srk", "additive"), ("stratonovich", "midpoint", "general"),
         ("stratonovich", "heun", "diagonal"), ("stratonovich", "log_ode", "general")]


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_gradients_equal_direct_backprop(case):
    # float64, outputs on and off the grid (0.3 with dt = 0.07): measured differences
    # below 1e-15 relative; tolerance 1e-12.
    sde_type, method, noise_type = case
    sde, y0, ts, _, w = _setup(sde_type, noise_type)
    levy = {"srk": "space-time", "log_ode": "foster"}.get(method, "none")
    bm = tsde.BrownianInterval(0.0, 1.0, size=(y0.size(0), _m_of(noise_type)), dtype=D64,
                               entropy=4, levy_area_approximation=levy)
    direct = _grads(tsde.sdeint, sde, y0, ts, bm, w, method, 0.07)
    replay = _grads(tsde.sdeint, sde, y0, ts, bm, w, method, 0.07, gradient="checkpoint")
    assert float((replay - direct).abs().max()) <= 1e-12 * float(direct.abs().max())
    assert float(direct.abs().max()) > 0.1


def _m_of(noise_type):
    return {"diagonal": 2, "scalar": 1}.get(noise_type, 2)


def test_logqp_gradients_equal_direct_backprop():
    sde, y0, ts, bm, w = _setup("ito", "diagonal", logqp=True)
    direct = _grads(tsde.sdeint, sde, y0, ts, bm, w, "euler", 0.05, logqp=True)
    replay = _grads(tsde.sdeint, sde, y0, ts, bm, w, "euler", 0.05, logqp=True,
                    gradient="checkpoint")
    torch.testing.assert_close(replay, direct, rtol=1e-12, atol=1e-12)


def _saved_peak(n_steps, gradient):
    """Peak bytes autograd holds for backward (saved-tensor hooks) over one solve + backward."""
    live, peak = [0], [0]

    class Box:
        # Holds a detached copy: a saved output holding its own grad_fn would make a
        # reference cycle that only the garbage collector frees, hiding when autograd
        # releases it (no double backward here, so the values are all backward needs).
        def __init__(self, x):
            self.x, self.n = x.detach(), x.numel() * x.element_size()
            live[0] += self.n
            peak[0] = max(peak[0], live[0])

        def __del__(self):
            live[0] -= self.n

    sde = Toy("diagonal", "ito")
    y0 = torch.full((8, 2), 0.3, dtype=D64, requires_grad=True)
    bm = tsde.BrownianInterval(0.0, 1.0, size=(8, 2), dtype=D64, entropy=1)
    with torch.autograd.graph.saved_tensors_hooks(Box, lambda box: box.x):
        ys = tsde.sdeint(sde, y0, [0.0, 1.0], bm=bm, method="euler", dt=1.0 / n_steps,
                         gradient=gradient)
        ys.sum().backward()
    assert torch.isfinite(sde.W.grad).all()
    return peak[0]


def test_saved_memory_does_not_grow_with_the_number_of_steps():
    # The replay holds one step's graph at a time (the per-step start states it keeps are
    # plain tensors, a state per step); backprop holds every step's graph.
    small, large = _saved_peak(50, "checkpoint"), _saved_peak(400, "checkpoint")
    assert large == small, (small, large)
    bp_small, bp_large = _saved_peak(50, "direct"), _saved_peak(400, "direct")
    assert bp_large > 6 * bp_small and bp_small > 10 * small, (small, bp_small, bp_large)


def test_errors_name_the_fix():
    sde, y0, ts, bm, _ = _setup("stratonovich", "diagonal")
    with pytest.raises(ValueError, match="gradient must be"):
        tsde.sdeint(sde, y0, ts, bm=bm, gradient="adjoint")
    with pytest.raises(ValueError, match="fixed steps"):
        tsde.sdeint(sde, y0, ts, bm=bm, adaptive=True, gradient="checkpoint")
    with pytest.raises(ValueError, match="reversible_heun"):
        tsde.sdeint(sde, y0, ts, bm=bm, method="reversible_heun", gradient="checkpoint")

    class Plain:
        noise_type, sde_type = "diagonal", "stratonovich"

        def f(self, t, y):
            return -y

        def g(self, t, y):
            return 0.1 * y

    with pytest.raises(ValueError, match="nn.Module"):
        tsde.sdeint(Plain(), y0, ts, bm=bm, gradient="checkpoint")
