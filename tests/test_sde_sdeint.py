"""sdeint and the SDE interface: returns, statistics, options and every input error."""

from __future__ import annotations

import pytest
import torch

import odeflow.sde as tsde
from odeflow.sde.base import SDEFunctions
from odeflow.sde.methods import ALL_METHODS, ReversibleHeun, select
from odeflow.stats import SolveError, Status

D64 = torch.float64


class Linear(tsde.BaseSDE):
    """dy = a y dt + b y dW with the diffusion shaped for each noise type."""

    def __init__(self, noise_type="diagonal", sde_type="ito", m=2):
        super().__init__(noise_type=noise_type, sde_type=sde_type)
        self.m = m

    def f(self, t, y):
        return 0.5 * y

    def g(self, t, y):
        if self.noise_type == "diagonal":
            return 0.3 * y
        if self.noise_type == "additive":
            return torch.full((y.size(0), y.size(1), self.m), 0.2, dtype=y.dtype)
        m = 1 if self.noise_type == "scalar" else self.m
        return 0.3 * y.unsqueeze(-1).expand(-1, -1, m) / m

    def h(self, t, y):
        return torch.zeros_like(y)


def _y0(b=3, d=2):
    return torch.full((b, d), 1.0, dtype=D64)


def _compatible():
    for cls in ALL_METHODS:
        for sde_type in cls.sde_types:
            for noise in cls.noise_types:
                yield cls.name, sde_type, noise


@pytest.mark.parametrize("method,sde_type,noise", list(_compatible()))
def test_every_compatible_combination_runs(method, sde_type, noise):
    ys = tsde.sdeint(Linear(noise, sde_type), _y0(), [0.0, 0.05, 0.1], method=method, dt=0.01)
    assert ys.shape == (3, 3, 2) and torch.isfinite(ys).all()
    assert torch.equal(ys[0], _y0())
    stats = tsde.last_stats()
    assert stats.n_steps == 10 and stats.status == Status.SUCCESS
    assert stats.nfe == stats.nfe_drift + stats.nfe_diffusion > 0


def test_defaults_follow_torchsde():
    tsde.sdeint(Linear("diagonal", "ito"), _y0(), [0.0, 0.01])
    assert tsde.last_stats().nfe_drift == 3 * 10       # srk: 3 drift stages per step
    tsde.sdeint(Linear("general", "ito"), _y0(), [0.0, 0.01])   # euler
    assert tsde.last_stats().nfe_drift == 10
    tsde.sdeint(Linear("general", "stratonovich"), _y0(), [0.0, 0.01])   # midpoint
    assert tsde.last_stats().nfe_drift == 20


def test_outputs_between_grid_points_are_linear_interpolations():
    # As torchsde: fixed steps walk t0 + k dt; an output time between two grid points is
    # the linear interpolation of the solution there (the steps are the one loop's).
    sde, y0 = Linear(), _y0()
    bm = tsde.BrownianInterval(0.0, 1.0, size=(3, 2), dtype=D64, entropy=1)
    ys = tsde.sdeint(sde, y0, [0.0, 0.3, 0.333, 0.4, 1.0], bm=bm, method="euler", dt=0.1)
    theta = (0.333 - 0.3) / (0.4 - 0.3)
    torch.testing.assert_close(ys[2], torch.lerp(ys[1], ys[3], theta), rtol=0, atol=1e-14)
    assert tsde.last_stats().n_steps == 10  # the outputs added no steps


def test_logqp_extra_and_names():
    class Renamed:
        noise_type, sde_type = "diagonal", "stratonovich"

        def drift(self, t, y):
            return -y

        def diff(self, t, y):
            return 0.1 * torch.ones_like(y)

        def prior(self, t, y):
            return torch.zeros_like(y)

    names = {"drift": "drift", "diffusion": "diff", "prior_drift": "prior"}
    ys, log_ratio = tsde.sdeint(Renamed(), _y0(), [0.0, 0.1, 0.2], dt=0.01, names=names, logqp=True)
    assert ys.shape == (3, 3, 2) and log_ratio.shape == (2, 3) and (log_ratio > 0).all()
    ys, state = tsde.sdeint(Linear(sde_type="stratonovich"), _y0(), [0.0, 0.1],
                            method="reversible_heun", dt=0.01, extra=True)
    assert len(state) == 3 and state[2].shape == (3, 2)
    with pytest.raises(ValueError, match="unknown keys"):
        tsde.sdeint(Renamed(), _y0(), [0.0, 0.1], names={"drfit": "drift"})


def test_reversible_heun_backward_step_inverts_the_step():
    funcs = SDEFunctions(Linear(sde_type="stratonovich"))
    method = ReversibleHeun()
    y0 = torch.rand(4, 2, dtype=D64)
    state0 = method.init_state(funcs, 0.0, y0)
    dW = torch.randn(4, 2, dtype=D64) * 0.1
    y1, state1 = method.step(funcs, 0.0, 0.01, y0, dW, state0, None)
    y_back, state_back = method.backward_step(funcs, 0.01, 0.01, y1, dW, state1)
    torch.testing.assert_close(y_back, y0, rtol=0, atol=1e-14)
    for a, b in zip(state_back, state0):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)


def test_adaptive_solves_and_counts_rejections():
    sde = Linear("diagonal", "ito")
    ys = tsde.sdeint(sde, _y0(), [0.0, 0.5], method="milstein", dt=0.1, adaptive=True,
                     rtol=1e-3, atol=1e-3)
    stats = tsde.last_stats()
    assert torch.isfinite(ys).all() and stats.n_accepted > 5
    assert stats.n_steps == stats.n_accepted + stats.n_rejected


def test_grad_flows_through_sdeint():
    a = torch.tensor(0.5, dtype=D64, requires_grad=True)

    class P(tsde.SDEIto):
        def __init__(self):
            super().__init__("diagonal")

        def f(self, t, y):
            return a * y

        def g(self, t, y):
            return 0.1 * y

    ys = tsde.sdeint(P(), _y0(), [0.0, 0.1], method="euler", dt=0.01)
    ys[-1].sum().backward()
    assert a.grad is not None and a.grad > 0


def test_nonfinite_throw_and_no_throw():
    class Blow(tsde.SDEIto):
        def __init__(self):
            super().__init__("diagonal")

        def f(self, t, y):
            return y * y * 1e30

        def g(self, t, y):
            return y

    with pytest.raises(SolveError, match="non-finite"):
        tsde.sdeint(Blow(), _y0(), [0.0, 1.0], method="euler", dt=0.1)
    ys = tsde.sdeint(Blow(), _y0(), [0.0, 1.0, 2.0], method="euler", dt=0.1, throw=False)
    assert tsde.last_stats().status == Status.NONFINITE and torch.isnan(ys[2]).all()


@pytest.mark.parametrize("noise,shape,fragment", [
    ("diagonal", (3, 2, 2), r"expected \(batch, state\) = \(3, 2\)"),
    ("general", (3, 2), r"expected \(batch, state, noise\)"),
    ("scalar", (3, 2, 2), "one noise channel"),
])
def test_diffusion_shape_errors_name_the_expected_shape(noise, shape, fragment):
    class Bad(tsde.SDEIto):
        def __init__(self):
            super().__init__(noise)

        def f(self, t, y):
            return y

        def g(self, t, y):
            return torch.zeros(shape, dtype=y.dtype)

    with pytest.raises(ValueError, match=fragment):
        tsde.sdeint(Bad(), _y0(), [0.0, 0.1], method="euler")


def test_input_errors():
    sde, y0 = Linear(), _y0()
    with pytest.raises(ValueError, match="Expected noise type"):
        tsde.SDEIto("diag")
    with pytest.raises(ValueError, match="Expected sde type"):
        tsde.BaseSDE("diagonal", "itô")
    with pytest.raises(ValueError, match="strictly increasing"):
        tsde.sdeint(sde, y0, [0.0, 0.2, 0.1])
    with pytest.raises(ValueError, match="2-dimensional"):
        tsde.sdeint(sde, y0[0], [0.0, 0.1])
    with pytest.raises(ValueError, match="Expected method"):
        tsde.sdeint(sde, y0, [0.0, 0.1], method="rk4")
    with pytest.raises(ValueError, match="is for stratonovich SDEs"):
        tsde.sdeint(sde, y0, [0.0, 0.1], method="midpoint")
    with pytest.raises(ValueError, match="does not support noise_type='general'"):
        tsde.sdeint(Linear("general"), y0, [0.0, 0.1], method="srk")
    with pytest.raises(ValueError, match="valid options"):
        tsde.sdeint(sde, y0, [0.0, 0.1], method="milstein", options={"gradfree": True})
    with pytest.raises(ValueError, match="levy_area_approximation"):
        bm = tsde.BrownianInterval(0.0, 0.1, size=(3, 2), dtype=D64)
        tsde.sdeint(sde, y0, [0.0, 0.1], method="srk", bm=bm)
    with pytest.raises(ValueError, match="shape"):
        tsde.sdeint(sde, y0, [0.0, 0.1], bm=tsde.BrownianInterval(0.0, 0.1, size=(4, 2), dtype=D64))
    with pytest.raises(ValueError, match="dtype"):
        tsde.sdeint(sde, y0, [0.0, 0.1], bm=tsde.BrownianInterval(0.0, 0.1, size=(3, 2)))
    with pytest.raises(ValueError, match="noise channels"):
        tsde.sdeint(sde, y0, [0.0, 0.1], method="euler",
                    bm=tsde.BrownianInterval(0.0, 0.1, size=(3, 5), dtype=D64))
    with pytest.raises(ValueError, match="unexpected arguments"):
        tsde.sdeint(sde, y0, [0.0, 0.1], rtoll=1e-3)
    with pytest.raises(ValueError, match="adjoint_method must be one of"):
        tsde.sdeint_adjoint(sde, y0, [0.0, 0.1], adjoint_method="srk")
    with pytest.raises(ValueError, match="method 'heun' is for stratonovich"):
        select("heun", "ito")


def test_g_prod_only_sde_runs_with_euler_given_a_brownian_motion():
    class GP(tsde.SDEIto):
        def __init__(self):
            super().__init__("general")

        def f(self, t, y):
            return -y

        def g_prod(self, t, y, v):
            return 0.1 * v.sum(-1, keepdim=True).expand_as(y)

    bm = tsde.BrownianInterval(0.0, 0.1, size=(3, 4), dtype=D64)
    assert tsde.sdeint(GP(), _y0(), [0.0, 0.1], method="euler", bm=bm).shape == (2, 3, 2)
    with pytest.raises(ValueError, match="cannot infer the number of noise channels"):
        tsde.sdeint(GP(), _y0(), [0.0, 0.1], method="euler")


def test_settings_and_euler_match_torchsde():
    torchsde = pytest.importorskip("torchsde")
    for name in ("METHODS", "NOISE_TYPES", "SDE_TYPES", "LEVY_AREA_APPROXIMATIONS"):
        assert getattr(tsde.settings, name).all() == getattr(torchsde.settings, name).all()
    # Same Brownian motion, same grid: both Euler solutions agree to rounding.
    sde, y0 = Linear("diagonal", "ito"), _y0()
    bm = tsde.BrownianInterval(0.0, 1.0, size=(3, 2), dtype=D64, entropy=4, dt=0.1)
    ts = [0.0, 0.37, 0.5, 1.0]  # 0.37: between grid points, interpolated by both
    ours = tsde.sdeint(sde, y0, ts, bm=bm, method="euler", dt=0.1)
    theirs = torchsde.sdeint(sde, y0, torch.tensor(ts, dtype=D64), bm=bm, method="euler",
                             dt=0.1)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
