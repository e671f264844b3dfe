"""Per-sample solves on the lane clock's size-dependent branches.

``LaneClock.row_mask`` copies a lane mask out differently for states of more than 8
columns, ``LaneClock.n_passed`` switches to ``searchsorted`` for output grids of more than
65,536 times, and the per-sample stop matrix merges times given twice. Each is checked
against a joint solve of every sample alone (same steps: values to rounding, 1e-12, and
equal step counts) or against the other branch on the same data.
"""

from __future__ import annotations

import types

import pytest
import torch

import odeflow
from odeflow.lanes import LaneClock

F64 = torch.float64
PS = {"per_sample": True}


def _wide(batch=4, n=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, n, n, generator=g, dtype=F64) * 0.5
    y0 = torch.randn(batch, n, generator=g, dtype=F64)
    return a, y0


def test_row_mask_wide_state_matches_stacked_masks():
    """Both branches of row_mask give the mask repeated along the columns."""
    mask = torch.tensor([True, False, True, False, False])
    for n in (1, 8, 9, 17):
        like = torch.zeros(5, n, dtype=F64)
        out = LaneClock.row_mask(mask, like)
        assert out.shape == (5, n) and out.dtype == torch.bool
        assert torch.equal(out, mask[:, None].expand(5, n))


@pytest.mark.parametrize("n", [9, 11])
def test_wide_state_each_sample_is_its_own_joint_solve(n):
    """A (B, n > 8) per-sample solve: each row equals the sample solved alone."""
    a, y0 = _wide(n=n)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    sol = odeflow.solve(lambda t, y: torch.einsum("bij,bj->bi", a, y).sin(), y0, t,
                        rtol=1e-8, atol=1e-9, options=PS)
    ss = sol.sample_stats
    rejected = 0
    for b in range(len(y0)):
        one = odeflow.solve(lambda t, y, b=b: (a[b] @ y).sin(), y0[b], t, rtol=1e-8, atol=1e-9)
        assert (sol.ys[:, b] - one.ys).abs().max().item() < 1e-12
        assert ss.n_accepted[b].item() == one.stats.n_accepted
        assert ss.n_rejected[b].item() == one.stats.n_rejected
        rejected += one.stats.n_rejected
    assert rejected > 0  # some lane rejects a step, so the masked copy-back matters


def test_n_passed_searchsorted_branch_agrees_with_compare_sum():
    """Grids of > 65,536 times take searchsorted; it counts the times <= t_new like the
    small grids' compare-and-sum, ties (t_new equal to an output time) included."""
    g = torch.Generator().manual_seed(1)
    batch, n_t = 3, 30_000  # 90,000 > 2**16 elements
    grid = torch.rand(batch, n_t, generator=g, dtype=F64).sort(1).values
    grid[:, 100:110] = grid[:, 100:101]  # repeated output times
    t_new = torch.stack([grid[0, 105], grid[1, 0] - 1.0, grid[2, -1]])  # tie, before, at end
    clock = types.SimpleNamespace(grid=grid)
    got = LaneClock.n_passed(clock, t_new)
    expect = (grid <= t_new[:, None]).sum(1)
    assert torch.equal(got, expect)
    assert got.tolist() == [110, 0, n_t]
    t_rand = torch.rand(batch, generator=g, dtype=F64)
    assert torch.equal(LaneClock.n_passed(clock, t_rand), (grid <= t_rand[:, None]).sum(1))


def test_per_sample_large_output_grid():
    """A per-sample solve writing 33 x 2,000 output times (the searchsorted branch) gives
    each sample's joint solve and the closed form."""
    batch, n_t = 33, 2_000
    k = torch.linspace(-1.0, 1.0, batch, dtype=F64)
    y0 = torch.linspace(0.5, 2.0, batch, dtype=F64)[:, None]
    start = torch.linspace(0.0, 1.0, batch, dtype=F64)[:, None]
    t = start + torch.linspace(0.0, 1.0, n_t, dtype=F64) * (1.0 + start)
    assert t.numel() > 1 << 16
    sol = odeflow.solve(lambda t, y: -k[:, None] * y, y0, t, rtol=1e-9, atol=1e-10,
                        options=PS)
    exact = y0 * torch.exp(-k[:, None] * (t - t[:, :1]))
    assert (sol.ys[..., 0].T - exact).abs().max().item() < 1e-7
    for b in (0, 7, batch - 1):
        one = odeflow.solve(lambda t, y, b=b: -k[b] * y, y0[b], t[b], rtol=1e-9, atol=1e-10)
        assert (sol.ys[:, b] - one.ys).abs().max().item() < 1e-12
        assert sol.sample_stats.n_accepted[b].item() == one.stats.n_accepted


def test_stop_time_given_twice():
    """A time that is both a jump and a step stop (and an output time) is one stop, a jump:
    each lane takes the steps of its joint solve, which keeps a set of stops."""
    y0 = torch.tensor([[1.0], [0.5], [-1.0]], dtype=F64)

    def f(t, y):  # a jump in the vector field at t = 0.5
        return torch.where(t[..., None] < 0.5, -y, 2 * y) if t.ndim else (-y if t < 0.5
                                                                         else 2 * y)

    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    opts = dict(jump_t=[0.5, 0.25], step_t=[0.5, 0.25, 0.75])
    sol = odeflow.solve(f, y0, t, rtol=1e-9, atol=1e-10,
                        options=dict(opts, per_sample=True))
    for b in range(3):
        one = odeflow.solve(f, y0[b], t, rtol=1e-9, atol=1e-10, options=opts)
        assert (sol.ys[:, b] - one.ys).abs().max().item() < 1e-12
        assert sol.sample_stats.n_steps[b].item() == one.stats.n_steps
    exact = y0[:, 0] * torch.exp(torch.tensor(-0.5 + 1.0, dtype=F64))  # -y on [0, .5], 2y after
    assert (sol.ys[-1, :, 0] - exact).abs().max().item() < 1e-7
