"""Per-sample solves against each sample solved alone, in combinations found by a
differential sweep: every sample must get what a joint solve of that sample gives."""
import math

import pytest
import torch

import odeflow
from odeflow import Status

F64 = torch.float64


def _lone_event(event_fn):
    """The batch ``event_fn`` for one sample's joint solve (0-dim t, unbatched y)."""
    return lambda t, y: event_fn(t.reshape(1), y[None])[0]


@pytest.mark.parametrize("gradient", ["direct", "checkpoint", "adjoint"])
def test_event_search_sample_that_fails_ends_in_nan_like_its_lone_solve(gradient):
    # Sample 1 (never crossing) runs out of steps in its search; sample 0 has its event.
    # A failed lone event solve ends in nan, so the failed sample's final state must be nan
    # too (it was the state where the sample stopped); the good sample keeps its values.
    class Decay(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.k = torch.nn.Parameter(torch.tensor(1.0, dtype=F64))

        def forward(self, t, y):
            return -self.k * y

    func = Decay()
    event = lambda t, y: y[:, 0] - 0.5  # noqa: E731
    y0 = torch.tensor([[1.0], [0.1]], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 50.0], dtype=F64)
    opts = dict(max_num_steps=20, max_step=1.0)
    kw = dict(event_fn=event, throw=False, gradient=gradient)
    if gradient == "adjoint":
        kw["adjoint_options"] = dict(norm="seminorm")
    sol = odeflow.solve(func, y0, t, options=dict(opts, per_sample=True), **kw)
    assert sol.sample_stats.status == [Status.EVENT, Status.MAX_STEPS_REACHED]
    kw["event_fn"] = _lone_event(event)
    for b in range(2):
        lone = odeflow.solve(func, y0[b].detach(), t, options=opts, **kw)
        assert sol.sample_stats.status[b] == lone.stats.status
        assert int(sol.sample_stats.n_accepted[b]) == lone.stats.n_accepted
        assert int(sol.sample_stats.n_rejected[b]) == lone.stats.n_rejected
        torch.testing.assert_close(sol.ys[-1, b], lone.ys[-1], rtol=1e-12, atol=0,
                                   equal_nan=True)
    last = sol.ys[-1].detach()
    assert math.isnan(float(last[1, 0])) and math.isfinite(float(last[0, 0]))
    # The failed sample gets no gradient; the good one its own: the event time
    # t* = log(2 y0) / k has d t*/d y0 = 1 / y0 = 1.
    sol.event_t[0].backward()
    torch.testing.assert_close(y0.grad, torch.tensor([[1.0], [0.0]], dtype=F64), rtol=1e-6,
                               atol=0)


@pytest.mark.parametrize("method, rtol", [("dopri5", 1e-6), ("kvaerno5", 1e-4)])
def test_adjoint_step_callbacks_run_per_sample_as_in_each_lone_solve(method, rtol):
    # The backward solve of a per-sample adjoint called no callback_*_adjoint at all (a
    # lone solve calls them at every backward step). Per sample they get the batch's (B,)
    # times and steps in the user's direction, dt = 0 for a sample that does not step; each
    # sample's accepted steps are those of its lone seminorm adjoint (the per-sample adjoint
    # always uses the seminorm). The accept callback's dt is 0 for a sample whose trial
    # was rejected in that iteration (it was the trial's dt, so a rejected trial looked
    # accepted). After kvaerno5's forward the per-sample interpolating adjoint solves
    # a alone (the lone one a and the parameter gradient): step sizes agree to 1e-4.
    class Decay(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.k = torch.nn.Parameter(torch.tensor(1.0, dtype=F64))
            self.log = []

        def forward(self, t, y):
            return -self.k * y * (1 + 0.1 * (t if t.ndim == 0 else t[:, None]))

        def callback_accept_step_adjoint(self, t, y, dt):
            self.log.append((t.reshape(-1).tolist(), dt.reshape(-1).tolist()))

    func = Decay()
    t = torch.tensor([[0.0, 1.0], [0.5, -2.0]], dtype=F64)
    y0 = torch.tensor([[1.0], [2.0]], dtype=F64)
    kw = dict(method=method, gradient="adjoint", adjoint_options=dict(norm="seminorm"))
    odeflow.solve(func, y0, t, options=dict(per_sample=True), **kw).ys.sum().backward()
    batch = func.log
    for b in range(2):
        func.log = []
        odeflow.solve(func, y0[b], t[b], **kw).ys.sum().backward()
        lone = torch.tensor(func.log, dtype=F64).reshape(-1, 2)
        mine = torch.tensor([(tb[b], db[b]) for tb, db in batch if db[b] != 0.0], dtype=F64)
        assert len(lone) > 3 and mine.shape == lone.shape
        assert torch.all(torch.sign(mine[:, 1]) == torch.sign(t[b, 0] - t[b, 1]))
        # (the same steps; their sizes agree to the rounding of the error estimate)
        torch.testing.assert_close(mine, lone, rtol=rtol, atol=rtol)


def test_forward_accept_and_reject_callbacks_name_only_their_samples():
    # callback_accept_step got every stepping sample's trial dt, also a rejected one's
    # (and callback_reject_step an accepted one's): each sample's accepted steps must be
    # its lone solve's, and its rejected trials too (sizes to the rounding noise of the
    # error estimate, which moves a step by ~1e-6 relative).
    class Stiffish(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.acc, self.rej = [], []

        def forward(self, t, y):
            return torch.cos(8 * y) - 3 * y

        def callback_accept_step(self, t, y, dt):
            self.acc.append((t.reshape(-1).tolist(), dt.reshape(-1).tolist()))

        def callback_reject_step(self, t, y, dt):
            self.rej.append((t.reshape(-1).tolist(), dt.reshape(-1).tolist()))

    func = Stiffish()
    y0 = torch.tensor([[0.3], [-2.0], [1.5]], dtype=F64)
    t = torch.tensor([[0.0, 2.0], [1.0, -1.0], [0.0, 0.5]], dtype=F64)
    odeflow.solve(func, y0, t, rtol=1e-3, atol=1e-6, options=dict(per_sample=True))
    batch = func.acc, func.rej
    n_rej = 0
    for b in range(3):
        func.acc, func.rej = [], []
        lone = odeflow.solve(func, y0[b], t[b], rtol=1e-3, atol=1e-6)
        for log, lone_log in zip(batch, (func.acc, func.rej)):
            mine = [(tb[b], db[b]) for tb, db in log if db[b] != 0.0]
            assert len(mine) == len(lone_log)
            for (tm, dm), ((tl,), (dl,)) in zip(mine, lone_log):
                assert (tm, dm) == pytest.approx((tl, dl), rel=1e-4, abs=1e-9)
        assert len(func.acc) == lone.stats.n_accepted and len(func.rej) == lone.stats.n_rejected
        n_rej += lone.stats.n_rejected
    assert n_rej > 0
