"""The stepper contract (odeflow/solvers/base.py): what the loops rely on."""

from __future__ import annotations

import math

import torch

from odeflow.config import loop_config
from odeflow.integrate import integrate
from odeflow.problem import make_problem
from odeflow.solvers import get_method
from odeflow.solvers.adams import Adams
from odeflow.solvers.base import StepResult
from odeflow.solvers.explicit_rk import ExplicitRK
from odeflow.solvers.fixed_grid import FixedGridSteps
from odeflow.tableaus import TABLEAUS

F64 = torch.float64


class FailsLargeSteps(ExplicitRK):
    """dopri5 whose attempts fail (ok=False, as a diverging Newton iteration would)
    whenever dt > 0.05."""

    def step(self, f, t, y, f0, dt, state, ws, **kw):
        result = super().step(f, t, y, f0, dt, state, ws, **kw)
        if dt > 0.05:
            return result._replace(y_new=torch.full_like(result.y_new, math.nan), ok=False)
        return result


def _problem(options=None):
    return make_problem(lambda t, y: -y, torch.ones(2, dtype=F64),
                        torch.tensor([0.0, 1.0], dtype=F64), 1e-8, 1e-10, options or {})


def _run(problem, stepper, method="dopri5", fixed=False):
    """The one loop on ``problem`` with a given stepper (a fixed grid: wrapped), configured
    as ``method``."""
    stepper = FixedGridSteps(stepper, "linear") if fixed else stepper
    return integrate(problem, stepper, loop_config(problem, get_method(method), stepper))


def test_a_failed_step_is_rejected_and_shrunk_not_a_nonfinite_failure():
    res = _run(_problem(), FailsLargeSteps(TABLEAUS["dopri5"]))
    assert res.stats.n_rejected > 0
    assert abs(res.ys[-1][0].item() - math.exp(-1)) < 1e-8
    # every accepted step was small enough to succeed: at least 20 of them on [0, 1]
    assert res.stats.n_accepted >= 20


def test_solver_state_travels_through_the_loop():
    seen = []

    class Recording(Adams):
        def step(self, f, t, y, f0, dt, state, ws=None, **kw):
            seen.append(len(state.times))
            return super().step(f, t, y, f0, dt, state, ws, **kw)

    res = _run(_problem(dict(step_size=0.1)), Recording(4), "explicit_adams", fixed=True)
    # the history grows to order = 4 entries and stays there; nothing kept on the stepper
    assert seen[:6] == [0, 1, 2, 3, 4, 4]
    # AB4 global error ≈ (251/720) h^4 t e^{-t} ≈ 1.3e-5 at h = 0.1
    assert abs(res.ys[-1][0].item() - math.exp(-1)) < 3e-5


def test_step_returns_a_step_result_with_f0_first():
    stepper = get_method("tsit5").build({})
    y = torch.ones(3, dtype=F64)
    f = lambda t, y: -y  # noqa: E731
    result = stepper.step(f, 0.0, y, f(0.0, y), 0.1, stepper.init(y), None)
    assert isinstance(result, StepResult) and result.ok
    assert result.stages[0] is not None and torch.equal(result.stages[0], -y)
    assert abs(result.y_new[0].item() - math.exp(-0.1)) < 1e-7


def test_implicit_steppers_declare_it():
    """The loop skips its stiffness probe (a warning to try an implicit method) for steppers
    that declare ``implicit``; every implicit method's stepper must, and no explicit one."""
    from odeflow.solvers import METHODS

    for name in METHODS:
        spec = get_method(name)
        if spec.external or not spec.adaptive:
            continue
        stepper = spec.build({})
        assert bool(getattr(stepper, "implicit", False)) == spec.implicit, name
