"""Per-sample output times for SDEs: ``sdeint(sde, y0, ts)`` with ``ts`` of shape (B, T).

"The same Brownian path" per row: sample ``b`` of a per-sample solve is driven by row
``b`` of the batch's Brownian motion on its own clock, started at the earliest start
``t0``: its step over ``[t, t + h]`` reads ``bm`` over ``[t, t + h]`` shifted by
``t0 - ts[b, 0]``. A solve of sample ``b`` alone on :class:`RowOf` (row ``b`` of that
Brownian motion, shifted so) sees the same increments over the same steps: bit for bit
for a row that starts at ``t0``, and to rounding for the others (the shifted query
points differ from the batch's by an ulp, and a Brownian motion moves by about
``sqrt(ulp)`` there).
"""

from __future__ import annotations

import math

import pytest
import torch

import odeflow
import odeflow.sde as torchsde
from odeflow.sde.brownian import BaseBrownian

D = torch.float64


class RowOf(BaseBrownian):
    """Row ``row`` of a batched Brownian motion read ``shift`` later, as a Brownian motion
    of batch size 1."""

    def __init__(self, bm, row: int, shift: float = 0.0):
        self.bm, self.row, self.shift = bm, row, shift

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if self.shift:
            ta, tb = ta + self.shift, tb + self.shift
        out = self.bm(ta, tb, return_U=return_U, return_A=return_A)
        pick = slice(self.row, self.row + 1)
        return tuple(v[pick] for v in out) if isinstance(out, tuple) else out[pick]

    def __repr__(self) -> str:
        return f"RowOf({self.bm!r}, {self.row})"

    @property
    def dtype(self):
        return self.bm.dtype

    @property
    def device(self):
        return self.bm.device

    @property
    def shape(self):
        return (1, *self.bm.shape[1:])

    @property
    def levy_area_approximation(self):
        return self.bm.levy_area_approximation


class TimeIto(torchsde.SDEIto):
    """Time-dependent drift and state-dependent diagonal noise: a wrong time per row or
    a wrong increment shows in the result."""

    def __init__(self, noise_type="diagonal"):
        super().__init__(noise_type=noise_type)

    def f(self, t, y):
        return -y * torch.cos(t) + 0.2 * t

    def g(self, t, y):
        return 0.3 * torch.sin(y) + 0.1 * (1 + t)


class TimeStrat(torchsde.SDEStratonovich):
    def __init__(self):
        super().__init__(noise_type="diagonal")

    def f(self, t, y):
        return -y * torch.cos(t) + 0.2 * t

    def g(self, t, y):
        return 0.3 * torch.sin(y) + 0.1 * (1 + t)


def _rows_ts():
    """Three rows: different starts, ends and spacings; some outputs off the dt grid."""
    return torch.tensor([[0.0, 0.25, 0.5, 1.0],
                         [0.3, 0.35, 0.9, 1.7],
                         [-0.5, 0.0, 0.123, 0.4]], dtype=D)


@pytest.mark.parametrize("sde_cls,method,levy", [
    (TimeIto, "euler", "none"), (TimeIto, "srk", "space-time"), (TimeIto, "milstein", "none"),
    (TimeStrat, "midpoint", "none"), (TimeStrat, "reversible_heun", "none"),
    (TimeStrat, "log_ode", "foster"),
])
def test_each_row_equals_its_own_solve(sde_cls, method, levy):
    ts = _rows_ts()
    B, d = ts.shape[0], 2
    y0 = torch.linspace(-1, 1, B * d, dtype=D).view(B, d)
    # The noise clock starts at the earliest start, -0.5, and runs the longest span, 1.4.
    bm = torchsde.BrownianInterval(-0.5, 1.0, size=(B, d), dtype=D, entropy=7,
                                   levy_area_approximation=levy, dt=0.05)
    ys, state = torchsde.sdeint(sde_cls(), y0, ts, bm=bm, method=method, dt=0.05, extra=True)
    assert ys.shape == (ts.shape[1], B, d)
    for b in range(B):
        shift = -0.5 - float(ts[b, 0])
        tol = 1e-12 if shift == 0 else 1e-6
        alone, state_b = torchsde.sdeint(sde_cls(), y0[b:b + 1], ts[b], bm=RowOf(bm, b, shift),
                                         method=method, dt=0.05, extra=True)
        torch.testing.assert_close(ys[:, b:b + 1], alone, rtol=tol, atol=tol)
        for s, s_b in zip(state, state_b):  # a finished lane keeps its carried state
            torch.testing.assert_close(s[b:b + 1], s_b, rtol=tol, atol=tol)
    assert torchsde.last_stats().status == 0


def test_equal_rows_are_the_shared_solve():
    B, d = 5, 3
    ts = torch.linspace(0.1, 1.1, 7, dtype=D)
    y0 = torch.randn(B, d, dtype=D, generator=torch.Generator().manual_seed(0))
    bm = torchsde.BrownianInterval(0.1, 1.1, size=(B, d), dtype=D, entropy=3,
                                   levy_area_approximation="space-time")
    shared = torchsde.sdeint(TimeIto(), y0, ts, bm=bm, dt=0.03)
    lanes = torchsde.sdeint(TimeIto(), y0, ts.expand(B, -1), bm=bm, dt=0.03)
    assert torch.equal(shared, lanes)


def test_gradients_flow_per_row():
    ts = _rows_ts()
    y0 = torch.full((3, 2), 0.5, dtype=D, requires_grad=True)
    bm = torchsde.BrownianInterval(-0.5, 1.0, size=(3, 2), dtype=D, entropy=1)
    ys = torchsde.sdeint(TimeIto(), y0, ts, bm=bm, method="euler", dt=0.05)
    ys[-1, 1].sum().backward()  # only sample 1's end depends on sample 1's start
    assert y0.grad[1].abs().min() > 0
    assert torch.all(y0.grad[[0, 2]] == 0)
    assert torch.isfinite(y0.grad).all()


def test_zero_diffusion_is_the_ode_closed_form():
    """dy = cos(t) y dt: y(t) = y0 exp(sin t - sin t0), per row with its own t0."""

    class Ode(torchsde.SDEStratonovich):
        def __init__(self):
            super().__init__(noise_type="diagonal")

        def f(self, t, y):
            return torch.cos(t) * y

        def g(self, t, y):
            return torch.zeros_like(y)

    ts = torch.tensor([[0.0, 0.5, 1.0, 2.0], [1.0, 1.3, 2.2, 3.0], [-2.0, -1.0, 0.0, 0.1]],
                      dtype=D)
    y0 = torch.tensor([[1.0], [2.0], [-0.5]], dtype=D)
    ys = torchsde.sdeint(Ode(), y0, ts, method="heun", dt=2e-3)
    exact = y0 * torch.exp(torch.sin(ts) - torch.sin(ts[:, :1]))  # (B, T)
    torch.testing.assert_close(ys[..., 0], exact.T, rtol=1e-5, atol=1e-6)


def test_ornstein_uhlenbeck_moments_per_row():
    """dy = -θ y dt + σ dW from y0: mean y0 e^{-θ(t-t0)}, variance σ²(1 - e^{-2θ(t-t0)})/(2θ);
    four groups of rows, each with its own start and output times."""
    theta, sigma, n = 1.5, 0.8, 2000

    class OU(torchsde.SDEIto):
        def __init__(self):
            super().__init__(noise_type="additive")

        def f(self, t, y):
            return -theta * y

        def g(self, t, y):
            return torch.full((y.shape[0], 1, 1), sigma, dtype=y.dtype)

    groups = torch.tensor([[0.0, 0.2, 0.7, 1.5], [0.5, 0.6, 1.0, 1.2],
                           [-1.0, 0.0, 0.5, 1.0], [2.0, 2.1, 2.5, 4.0]], dtype=D)
    ts = groups.repeat_interleave(n, dim=0)
    y0 = torch.full((ts.shape[0], 1), 1.0, dtype=D)
    bm = torchsde.BrownianInterval(-1.0, 1.5, size=(ts.shape[0], 1), dtype=D, entropy=11,
                                   levy_area_approximation="space-time", dt=0.02)
    ys = torchsde.sdeint(OU(), y0, ts, bm=bm, method="srk", dt=0.02)[..., 0]  # (T, 4n)
    elapsed = (groups - groups[:, :1]).T  # (T, 4)
    mean = torch.exp(-theta * elapsed)
    var = sigma ** 2 * (1 - torch.exp(-2 * theta * elapsed)) / (2 * theta)
    got = ys.view(ts.shape[1], 4, n)
    se_mean = (var / n).sqrt() + 1e-12
    assert torch.all((got.mean(-1) - mean).abs() <= 4 * se_mean)
    se_var = var * math.sqrt(2 / (n - 1)) + 1e-12
    assert torch.all((got.var(-1) - var).abs() <= 4 * se_var)


def test_default_brownian_motion_spans_every_row():
    ts = _rows_ts()
    y0 = torch.zeros(3, 2, dtype=D)
    ys = torchsde.sdeint(TimeIto(), y0, ts, dt=0.05)  # srk, default Brownian motion
    assert ys.shape == (4, 3, 2) and torch.isfinite(ys).all()


def test_one_sample_row():
    ts = torch.tensor([[0.0, 0.5, 1.0]], dtype=D)
    bm = torchsde.BrownianInterval(0.0, 1.0, size=(1, 2), dtype=D, entropy=2)
    a = torchsde.sdeint(TimeIto(), torch.ones(1, 2, dtype=D), ts, bm=bm, method="euler", dt=0.01)
    b = torchsde.sdeint(TimeIto(), torch.ones(1, 2, dtype=D), ts[0], bm=bm, method="euler",
                        dt=0.01)
    assert torch.equal(a, b)


@pytest.mark.parametrize("ts,match", [
    (torch.zeros(2, 3, dtype=D), "strictly increasing; ts\\[0\\]"),
    (torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]], dtype=D), "shape \\(batch, T\\) = \\(2"),
    (torch.tensor([[0.0, 1.0], [1.0, 0.5]], dtype=D), "ts\\[1, 0\\] = 1.0 and ts\\[1, 1\\] = 0.5"),
    (torch.tensor([[0.0, 1.0], [0.0, math.inf]], dtype=D), "ts\\[1\\] must be finite"),
    (torch.zeros(2, 2, 2, dtype=D), "1-D \\(shared times\\) or of shape \\(batch, T\\)"),
])
def test_bad_per_sample_ts(ts, match):
    with pytest.raises(ValueError, match=match):
        torchsde.sdeint(TimeIto(), torch.zeros(2, 1, dtype=D), ts, method="euler")


def test_per_sample_ts_fixed_steps_and_sdeint_only():
    ts = torch.tensor([[0.0, 1.0], [0.5, 1.0]], dtype=D)
    y0 = torch.zeros(2, 1, dtype=D)
    with pytest.raises(ValueError, match="fixed steps only"):
        torchsde.sdeint(TimeIto(), y0, ts, method="milstein", adaptive=True)
    with pytest.raises(NotImplementedError, match="per-sample ts"):
        torchsde.sdeint_adjoint(TimeStrat(), y0, ts, method="reversible_heun",
                                adjoint_params=())


def test_a_failing_row_leaves_the_others():
    """dy = y³ dt blows up from y0 = 3 (at t0 + 1/18); the other rows stay finite."""

    class Blow(torchsde.SDEIto):
        def __init__(self):
            super().__init__(noise_type="diagonal")

        def f(self, t, y):
            return y ** 3

        def g(self, t, y):
            return torch.zeros_like(y)

    ts = torch.tensor([[0.0, 1.0, 2.0], [0.5, 1.0, 3.0], [-1.0, 0.0, 2.0]], dtype=D)
    y0 = torch.tensor([[0.1], [3.0], [0.2]], dtype=D)
    ys = torchsde.sdeint(Blow(), y0, ts, dt=0.1, method="euler", throw=False)
    assert torchsde.last_stats().status.name == "NONFINITE"
    assert torch.isnan(ys[-1, 1]).all() and torch.isfinite(ys[:, [0, 2]]).all()
    alone = torchsde.sdeint(Blow(), y0[:1], ts[0], dt=0.1, method="euler")
    torch.testing.assert_close(ys[:, :1], alone, rtol=1e-12, atol=0)
    with pytest.raises(odeflow.SolveError, match="samples \\[1\\]"):
        torchsde.sdeint(Blow(), y0, ts, dt=0.1, method="euler")
