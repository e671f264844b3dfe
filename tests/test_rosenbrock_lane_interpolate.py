"""Rosenbrock ``interpolate`` with per-lane step sizes (the stepper contract,
odeflow/solvers/base.py): the loop's per-sample outputs go through ``interpolant``, so the
lane form of ``interpolate`` (a ``(B,)`` ``dt``) is checked here against it, and against
the joint form on each lane's own step."""

from __future__ import annotations

import torch

from odeflow.config import loop_config
from odeflow.integrate import integrate
from odeflow.problem import make_problem
from odeflow.solvers import get_method

F64 = torch.float64


def test_lane_interpolate_equals_the_interpolant_and_the_joint_form():
    k = torch.tensor([1.0, 3.0, 0.5], dtype=F64)
    y0 = torch.tensor([[1.0, 0.5], [2.0, -1.0], [0.3, 0.2]], dtype=F64)
    problem = make_problem(lambda t, y: -k[:, None] * y * y.abs(), y0,
                           torch.tensor([0.0, 1.0], dtype=F64), 1e-6, 1e-8,
                           {"per_sample": True})
    spec = get_method("rodas5p")
    stepper = spec.build(problem.options, problem.rtol, problem.atol)
    steps = []
    inner = stepper.step

    def recording(f, t, y, f0, dt, state, ws, **kw):
        res = inner(f, t, y, f0, dt, state, ws, **kw)
        steps.append((y.clone(), res.y_new.clone(), dt.clone(),
                      tuple(s.clone() for s in res.stages)))
        return res

    stepper.step = recording
    integrate(problem, stepper, loop_config(problem, spec, stepper))
    assert len(steps) >= 3
    theta = torch.tensor([0.25, 0.5, 0.9], dtype=F64)
    for y, y_new, dt, stages in steps[:3]:
        lanes = stepper.interpolate(y, y_new, dt, stages, None, theta, None)
        piece = stepper.interpolant(None, dt, y, y_new, stages, None).evaluate(theta)
        assert torch.allclose(lanes, piece, rtol=0, atol=1e-14)
        for b in range(3):  # each lane as a joint step of its own
            one = stepper.interpolate(y[b], y_new[b], float(dt[b]),
                                      tuple(s[b] for s in stages), None, float(theta[b]), None)
            assert torch.allclose(lanes[b], one, rtol=0, atol=1e-14)
        ends = stepper.interpolate(y, y_new, dt, stages, None, torch.ones(3, dtype=F64), None)
        assert torch.allclose(ends, y_new, rtol=0, atol=1e-12)  # θ = 1 is the step's end
        starts = stepper.interpolate(y, y_new, dt, stages, None, torch.zeros(3, dtype=F64),
                                     None)
        assert torch.allclose(starts, y, rtol=0, atol=1e-14)  # θ = 0 its start
