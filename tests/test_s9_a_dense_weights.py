"""Per-sample dense weights and interpolants against the lone-sample (float θ) path.

A Runge–Kutta tableau's batched Horner (``dense_weights`` and ``dense_derivative_weights``
for a tensor θ) has the roundings of the float form: bit for bit. The per-sample
interpolant sums its stages in another order than the float path's ``combine``, so its
values agree to rounding (about 1e-15 relative), as do ``kvaerno5``'s weights, which the
ESDIRK tableau forms by a matrix product for a tensor θ.
"""

import pytest
import torch

from odeflow.interp import TableauInterpolant
from odeflow.solvers.esdirk_tableaus import KVAERNO5
from odeflow.tableaus import TABLEAUS

F64 = torch.float64
DENSE = [t for t in TABLEAUS.values() if t.dense]


def _thetas(count: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.cat([torch.tensor([0.0, 1.0, 0.5], dtype=F64),
                      torch.rand(count - 3, generator=g, dtype=F64)])


@pytest.mark.parametrize("tab", DENSE, ids=lambda t: t.name)
@pytest.mark.parametrize("kind", ["dense_weights", "dense_derivative_weights"])
def test_batched_weights_are_the_float_weights_bit_for_bit(tab, kind) -> None:
    theta = _thetas(64)
    batched = getattr(tab, kind)(theta)
    assert batched.shape == (tab.stages, 64)
    lone = torch.tensor([getattr(tab, kind)(float(x)) for x in theta], dtype=F64).T
    assert torch.equal(batched, lone)
    grid = theta.reshape(8, 8)  # any shape of θ: (s, *theta.shape)
    assert torch.equal(getattr(tab, kind)(grid), batched.reshape(tab.stages, 8, 8))


@pytest.mark.parametrize("tab", [*DENSE, KVAERNO5], ids=lambda t: t.name)
@pytest.mark.parametrize("method", ["evaluate", "derivative"])
def test_per_sample_interpolant_matches_each_lone_sample(tab, method) -> None:
    B, n = 32, 4
    g = torch.Generator().manual_seed(2)
    stages = [torch.randn(B, n, generator=g, dtype=F64) for _ in range(tab.stages)]
    y = torch.randn(B, n, generator=g, dtype=F64)
    dt = torch.rand(B, generator=g, dtype=F64) + 0.1
    theta = _thetas(B)
    lanes = TableauInterpolant(torch.zeros(B, dtype=F64), dt, y, stages, tab)
    got = getattr(lanes, method)(theta)
    lone = torch.stack([
        getattr(TableauInterpolant(0.0, float(dt[b]), y[b], [k[b] for k in stages], tab),
                method)(float(theta[b])) for b in range(B)])
    torch.testing.assert_close(got, lone, rtol=4e-15, atol=4e-15)
    # a float θ with per-sample step sizes (event detection, the interpolating adjoint)
    mixed = getattr(lanes, method)(0.3)
    lone = torch.stack([
        getattr(TableauInterpolant(0.0, float(dt[b]), y[b], [k[b] for k in stages], tab),
                method)(0.3) for b in range(B)])
    torch.testing.assert_close(mixed, lone, rtol=4e-15, atol=4e-15)
