"""Bad input fails early with a message naming the argument; failures never hang."""

from __future__ import annotations

import math

import pytest
import torch

import odeflow

F64 = torch.float64
T = torch.tensor([0.0, 1.0])


def decay(t, y):
    return -y


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(y0=[1.0, 2.0]), TypeError, "y0 must be a torch.Tensor"),
        (dict(y0=torch.tensor([1, 2])), TypeError, "y0 must be floating point"),
        (dict(y0=(torch.ones(2), torch.ones(2, dtype=F64))), TypeError, "share one dtype"),
        (dict(y0=torch.tensor([1.0, math.nan])), ValueError, "y0 must be finite"),
        (dict(t=[0.0, 1.0]), TypeError, "t must be a 1-D torch.Tensor"),
        (dict(t=torch.zeros(2, 2)), ValueError, "t must be a non-empty 1-D tensor"),
        (dict(t=torch.tensor([0, 1])), TypeError, "t must be floating point"),
        (dict(t=torch.tensor([0.0, 1.0, 1.0])), ValueError, "repeats a time at t\\[1\\]"),
        (dict(t=torch.tensor([0.0, 1.0, 0.5])), ValueError, "changes direction"),
        (dict(t=torch.tensor([0.0, math.inf])), ValueError, "t must be finite"),
        (dict(rtol=-1e-3), ValueError, "rtol must be a finite non-negative"),
        (dict(atol=math.nan), ValueError, "atol must be a finite non-negative"),
        (dict(rtol=0.0, atol=0.0), ValueError, "cannot both be zero"),
        (dict(rtol="tight"), TypeError, "rtol must be a non-negative number"),
        (dict(rtol=(1e-3, 1e-3)), ValueError, "one value per component"),
        (dict(method="rk45"), ValueError, "method='rk45' is not known"),
        (dict(options={"stepsize": 0.1}), ValueError, "unknown option 'stepsize'.*valid options"),
        (dict(method="rk4", options={"rtol": 1}), ValueError, "unknown option 'rtol'"),
        (dict(options=[("first_step", 0.1)]), TypeError, "options must be a dict"),
        (dict(options={"first_step": -1.0}), ValueError, "first_step.*positive"),
        (dict(options={"max_num_steps": 0}), ValueError, "max_num_steps.*positive int"),
        (dict(options={"controller": "fuzzy"}), ValueError, "controller"),
        (dict(options={"safety": 0.0}), ValueError, "safety must be a positive"),
        (dict(method="rk4", options={"interp": "quadratic"}), ValueError, "interp"),
        (dict(method="rk4", options={"step_size": 0.1, "grid_constructor": lambda f, y, t: t}),
         ValueError, "step_size or grid_constructor"),
        (dict(method="rk4", options={"step_size": 1e-9}), ValueError,
         "needs 1000000000 steps.*max_num_steps"),
        (dict(method="scipy_solver", options={"solver": "Euler"}), ValueError,
         "options\\['solver'\\]"),
        (dict(func="not callable"), TypeError, "func must be callable"),
        (dict(gradient="magic"), ValueError, "gradient='magic'"),
    ],
)
def test_invalid_arguments_raise_naming_the_argument(kwargs, exc, match):
    args = dict(func=decay, y0=torch.ones(2), t=T)
    args.update(kwargs)
    func, y0, t = args.pop("func"), args.pop("y0"), args.pop("t")
    with pytest.raises(exc, match=match):
        odeflow.odeint(func, y0, t, **args)


@pytest.mark.parametrize(
    "func, y0, match",
    [
        (lambda t, y: torch.ones(3), torch.ones(2), r"shape of y0 \(2,\), got \(3,\)"),
        (lambda t, y: [y], torch.ones(2), "must return a tensor"),
        (lambda t, s: s[0], (torch.ones(2), torch.ones(2)), "tuple of 2 tensors"),
        (lambda t, s: (s[0], s[1][:1]), (torch.ones(2), torch.ones(2)), r"func\(t, y\)\[1\]"),
    ],
)
def test_func_returning_wrong_structure_is_reported(func, y0, match):
    with pytest.raises((ValueError, TypeError), match=match):
        odeflow.odeint(func, y0, T)


def test_nonfinite_func_stops_with_time():
    def blows_up(t, y):
        # Finite before t = 0.5, nan after.
        return torch.where(t < 0.5, -y, torch.full_like(y, math.nan))

    with pytest.raises(odeflow.SolveError, match="non-finite") as info:
        odeflow.odeint(blows_up, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64))
    err = info.value
    assert err.status == odeflow.Status.NONFINITE
    assert 0.3 < err.t <= 0.5


def test_nonfinite_func_at_start():
    with pytest.raises(odeflow.SolveError, match="func\\(t0, y0\\) is not finite"):
        odeflow.odeint(lambda t, y: y / 0.0, torch.ones(2), T)


def test_fixed_grid_nonfinite_reported():
    with pytest.raises(odeflow.SolveError, match="non-finite"):
        odeflow.odeint(lambda t, y: y * y, torch.ones(1), torch.tensor([0.0, 5.0]),
                       method="euler", options={"step_size": 0.5})


def test_max_num_steps_is_an_error_not_a_hang():
    with pytest.raises(odeflow.SolveError, match="max_num_steps") as info:
        odeflow.odeint(decay, torch.ones(2, dtype=F64), torch.tensor([0.0, 100.0], dtype=F64),
                       rtol=1e-12, atol=1e-12, options={"max_num_steps": 10})
    assert info.value.status == odeflow.Status.MAX_STEPS_REACHED
    assert info.value.stats.n_steps == 10


def test_step_size_underflow_at_a_singularity():
    # y' = y^2, y(0) = 1 blows up at t = 1: the step size must collapse and be reported.
    with pytest.raises(odeflow.SolveError) as info:
        odeflow.odeint(lambda t, y: y * y, torch.ones(1, dtype=F64),
                       torch.tensor([0.0, 2.0], dtype=F64), rtol=1e-8, atol=1e-8)
    assert info.value.status in (odeflow.Status.STEP_SIZE_UNDERFLOW, odeflow.Status.NONFINITE,
                                 odeflow.Status.MAX_STEPS_REACHED)
    assert abs(info.value.t - 1.0) < 1e-6  # the blow-up time, to the tolerance


def test_throw_false_returns_status_and_nan():
    sol = odeflow.solve(decay, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0, 100.0], dtype=F64),
                        rtol=1e-12, atol=1e-12, options={"max_num_steps": 5}, throw=False)
    assert sol.stats.status == odeflow.Status.MAX_STEPS_REACHED
    assert not sol.stats.status.ok
    assert torch.equal(sol.ys[0], torch.ones(2, dtype=F64))
    assert torch.isnan(sol.ys[-1]).all()


def test_options_dict_is_not_mutated():
    opts = {"first_step": 0.1}
    odeflow.odeint(decay, torch.ones(2), T, options=opts)
    assert opts == {"first_step": 0.1}
