"""One sample in the per-sample form runs on the scalar clock, and ``event_fn`` gets its
time as ``func`` does, shape ``(1,)``: also where the event time's gradient calls it."""

import torch

import odeflow

F64 = torch.float64


def test_one_sample_event_fn_always_gets_a_time_of_shape_1():
    shapes = []

    def event_fn(t, y):
        shapes.append(tuple(t.shape))
        return y[:, 0] - 0.5

    y0 = torch.ones(1, 1, dtype=F64, requires_grad=True)
    sol = odeflow.solve(lambda t, y: -y, y0, torch.tensor([0.0, 5.0], dtype=F64),
                        event_fn=event_fn, options={"per_sample": True})
    assert set(shapes) == {(1,)}
    assert abs(sol.event_t.item() - torch.log(torch.tensor(2.0)).item()) < 1e-6
    (grad,) = torch.autograd.grad(sol.event_t.sum(), y0)
    assert abs(grad.item() - 1.0) < 1e-5  # t* = log(2 y0): dt*/dy0 = 1/y0 = 1
