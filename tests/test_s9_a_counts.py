"""ImplicitCounts declares no counter of its own: it is a SolveStats that adds into one."""

import dataclasses

import torch

import odeflow
from odeflow.linalg import ImplicitCounts
from odeflow.stats import SolveStats


def test_solve_stats_fields_unchanged() -> None:
    assert [f.name for f in dataclasses.fields(SolveStats)] == [
        "nfe", "n_steps", "n_accepted", "n_rejected", "status", "message", "nfe_backward",
        "n_steps_backward", "n_jacobians", "n_lu", "n_newton_iters", "n_newton_failures",
        "n_linear_iters", "n_linear_failures", "switches"]


def test_add_to_adds_counters_lane_sums_and_switches() -> None:
    counts = ImplicitCounts(n_jacobians=2, n_linear_iters=7)
    counts.n_lu += torch.tensor([True, False, True])  # per lane: a (B,) count
    counts.n_lu += torch.tensor([False, False, True])
    assert counts.n_lu.tolist() == [1, 0, 2]
    counts.switches.append((0.5, "rodas5p"))
    stats = SolveStats(nfe=11, n_steps=5, n_accepted=4, n_rejected=1, n_lu=1)
    counts.add_to(stats)
    assert (stats.nfe, stats.n_steps, stats.n_accepted, stats.n_rejected) == (11, 5, 4, 1)
    assert (stats.n_jacobians, stats.n_lu, stats.n_linear_iters) == (2, 4, 7)
    assert stats.n_newton_iters == stats.n_newton_failures == stats.n_linear_failures == 0
    assert stats.switches == [(0.5, "rodas5p")] and type(stats) is SolveStats


def test_per_sample_counts_sum_the_lanes() -> None:
    def f(t, y):
        return torch.stack((y[..., 1], 30.0 * (1 - y[..., 0] ** 2) * y[..., 1] - y[..., 0]), -1)

    t = torch.linspace(0.0, 2.0, 3, dtype=torch.float64)
    y0 = torch.tensor([[2.0, 0.0], [1.0, 0.5]], dtype=torch.float64)
    s = odeflow.solve(f, y0, t, method="kvaerno3", options={"per_sample": True}).stats
    assert type(s) is SolveStats and s.n_jacobians > 0 and s.n_lu >= s.n_jacobians
    assert s.n_newton_iters > 0 and s.n_linear_iters == 0
    lone = [odeflow.solve(f, y, t, method="kvaerno3").stats for y in y0]
    for name in ("n_jacobians", "n_lu", "n_newton_iters", "n_newton_failures"):
        assert isinstance(getattr(s, name), int)
        assert getattr(s, name) == sum(getattr(x, name) for x in lone), name
