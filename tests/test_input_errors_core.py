"""Bad input to the public API: the exception type, and a message that names the argument.

Each case calls ``odeflow.solve`` / ``odeint`` / ``odeint_dense`` / ``odeint_event`` /
``odeint_adjoint`` (or a result's method) the way a user would get it wrong.
"""

from __future__ import annotations

import math

import pytest
import torch

import odeflow
from odeflow import PIDController

F64 = torch.float64
T01 = torch.tensor([0.0, 1.0], dtype=F64)
Y1 = torch.tensor([1.0], dtype=F64)
YB = torch.tensor([[1.0], [2.0]], dtype=F64)


def decay(t, y):
    return -y


def _dense_ps():
    return odeflow.solve(decay, YB, T01, dense=True, options={"per_sample": True}).dense


def _dense_joint():
    return odeflow.solve(decay, Y1, T01, dense=True).dense


def _grid(values):
    return lambda func, y0, t: torch.tensor(values, dtype=F64)


CASES = {
    # odeint with event_fn: t is read for t[0] only, but must still be a 1-D tensor
    "odeint_event_t_empty": (ValueError, r"t must be a non-empty 1-D tensor",
                             lambda: odeflow.odeint(decay, Y1, torch.tensor([], dtype=F64),
                                                    event_fn=lambda t, y: y[0] - 0.5)),
    "odeint_event_t_2d": (ValueError, r"t must be a non-empty 1-D tensor.*\(1, 2\)",
                          lambda: odeflow.odeint(decay, Y1, T01[None],
                                                 event_fn=lambda t, y: y[0] - 0.5)),
    "odeint_event_t_list": (ValueError, r"t must be a non-empty 1-D tensor.*list",
                            lambda: odeflow.odeint(decay, Y1, [0.0, 1.0],
                                                   event_fn=lambda t, y: y[0] - 0.5)),
    "dense_fixed_method": (ValueError, r"odeint_dense needs an adaptive method.*rk4",
                           lambda: odeflow.odeint_dense(decay, Y1, 0.0, 1.0, method="rk4",
                                                        options={"step_size": 0.1})),
    "dense_per_sample": (ValueError, r"odeint_dense does not support options\['per_sample'\]",
                         lambda: odeflow.odeint_dense(decay, YB, 0.0, 1.0,
                                                      options={"per_sample": True})),
    # grid_constructor
    "grid_constructor_per_sample": (
        ValueError, r"options\['grid_constructor'\] is not supported with .*per_sample",
        lambda: odeflow.solve(decay, YB, T01, method="rk4", options={
            "per_sample": True, "grid_constructor": _grid([0.0, 0.5, 1.0])})),
    "grid_constructor_short": (
        ValueError, r"options\['grid_constructor'\] must return a 1-D tensor of >= 2 times",
        lambda: odeflow.solve(decay, Y1, T01, method="rk4",
                              options={"grid_constructor": _grid([0.0])})),
    "grid_constructor_not_monotone": (
        ValueError, r"options\['grid_constructor'\] must return times strictly monotone",
        lambda: odeflow.solve(decay, Y1, T01, method="rk4",
                              options={"grid_constructor": _grid([0.0, 0.7, 0.3, 1.0])})),
    "grid_constructor_too_many_steps": (
        ValueError, r"the grid has 4 steps, more than max_num_steps",
        lambda: odeflow.solve(decay, Y1, T01, method="rk4", options={
            "grid_constructor": _grid([0.0, 0.25, 0.5, 0.75, 1.0]), "max_num_steps": 3})),
    # controllers and options
    "controller_factor_order": (ValueError, r"need dfactor <= 1 <= ifactor",
                                lambda: PIDController(dfactor=2.0)),
    "controller_and_factors": (
        ValueError, r"give safety/ifactor/dfactor inside the PIDController",
        lambda: odeflow.solve(decay, Y1, T01, options={"controller": PIDController(),
                                                       "safety": 0.8})),
    "step_size_tensor_negative": (ValueError, r"options\['step_size'\] must be a positive number",
                                  lambda: odeflow.solve(decay, Y1, T01, method="rk4", options={
                                      "step_size": torch.tensor(-0.1)})),
    "jump_t_not_times": (TypeError, r"options\['jump_t'\] must be a 1-D tensor or sequence",
                         lambda: odeflow.solve(decay, Y1, T01, options={"jump_t": 0.5})),
    "jump_t_not_finite": (ValueError, r"options\['jump_t'\] must hold finite times",
                          lambda: odeflow.solve(decay, Y1, T01,
                                                options={"jump_t": [0.5, math.inf]})),
    "dtype_not_dtype": (TypeError, r"options\['dtype'\] must be a torch.dtype",
                        lambda: odeflow.solve(decay, Y1, T01, options={"dtype": "float64"})),
    "jacobian_not_callable": (TypeError, r"options\['jacobian'\] must be callable",
                              lambda: odeflow.solve(decay, Y1, T01, method="kvaerno5",
                                                    options={"jacobian": torch.eye(1)})),
    "jacobian_with_krylov": (
        ValueError, r"options\['jacobian'\] is a dense Jacobian.*krylov",
        lambda: odeflow.solve(decay, Y1, T01, method="kvaerno5", options={
            "jacobian": lambda t, y: -torch.eye(1, dtype=F64), "linear_solver": "krylov"})),
    "krylov_restart": (ValueError, r"options\['krylov_restart'\] must be a positive int",
                       lambda: odeflow.solve(decay, Y1, T01, method="kvaerno5", options={
                           "linear_solver": "krylov", "krylov_restart": 0})),
    # events
    "event_fn_not_callable": (TypeError, r"event_fn must be callable",
                              lambda: odeflow.solve(decay, Y1, T01, event_fn=3)),
    "event_direction_alone": (ValueError, r"event_direction is only meaningful together",
                              lambda: odeflow.solve(decay, Y1, T01, event_direction=1)),
    "event_t1_nan": (ValueError, r"t\[1\] must not be nan",
                     lambda: odeflow.solve(decay, Y1, torch.tensor([0.0, math.nan], dtype=F64),
                                           event_fn=lambda t, y: y[0] - 0.5)),
    "event_t0_beyond_search": (ValueError, r"t\[0\] = 1e\+300 is beyond the unbounded search",
                               lambda: odeflow.odeint_event(
                                   decay, Y1, torch.tensor(1e300, dtype=F64),
                                   event_fn=lambda t, y: y[0] - 0.5)),
    # times and states
    "per_sample_t_3d": (ValueError, r"with options\['per_sample'\], t must be 1-D .* \(B, T\)",
                        lambda: odeflow.solve(decay, YB, torch.zeros(2, 2, 2, dtype=F64),
                                              options={"per_sample": True})),
    "tolerance_tensor_shape": (ValueError, r"rtol must be a scalar",
                               lambda: odeflow.solve(decay, Y1, T01,
                                                     rtol=torch.tensor([1e-6, 1e-6]))),
    "func_returns_list_item": (TypeError, r"func\(t, y\)\[1\] must be a tensor, got float",
                               lambda: odeflow.solve(lambda t, y: (-y[0], 0.0), (Y1, Y1), T01)),
    "func_output_device": (ValueError, r"func\(t, y\) must be on cpu like y0, got meta",
                           lambda: odeflow.solve(lambda t, y: torch.zeros(1, device="meta"),
                                                 Y1, T01)),
    "func_output_transposed": (ValueError, r"func\(t, y\) must have the shape of y0 \(3, 2\), "
                                           r"got \(2, 3\)",
                               lambda: odeflow.solve(lambda t, y: y.T.clone(),
                                                     torch.ones(3, 2, dtype=F64), T01)),
    "adjoint_params_not_tensors": (TypeError, r"adjoint_params\[1\] must be a tensor, got int",
                                   lambda: odeflow.solve(decay, Y1, T01, gradient="adjoint",
                                                         adjoint_params=[Y1, 3])),
    "per_sample_adjoint_rtol_tuple": (
        ValueError, r"with options\['per_sample'\], adjoint_rtol must be a scalar",
        lambda: odeflow.solve(lambda t, y: (-y[0], -y[1]), (YB, YB), T01, gradient="adjoint",
                              adjoint_params=(), adjoint_rtol=(1e-6, 1e-6),
                              options={"per_sample": True})),
    # dense output
    "dense_per_sample_span": (ValueError, r"a per-sample dense output has one span per sample",
                              lambda: _dense_ps().span),
    "dense_per_sample_t_shape": (ValueError, r"t must be a scalar, a 1-D tensor of shared "
                                             r"times or a \(2, T\) tensor",
                                 lambda: _dense_ps()(torch.zeros(3, 2, dtype=F64))),
    "dense_joint_t_shape": (ValueError, r"t must be a scalar or a 1-D tensor, got shape \(2, 2\)",
                            lambda: _dense_joint()(torch.zeros(2, 2, dtype=F64))),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_raises_naming_the_argument(case):
    exc, pattern, call = CASES[case]
    with pytest.raises(exc, match=pattern):
        call()


def test_odeint_event_with_a_float_t0_uses_the_states_real_dtype():
    """t0 given as a number becomes a tensor of y0's real dtype (complex y0: its real part)."""
    y0 = torch.tensor([1.0 + 0.0j], dtype=torch.complex128)
    event_t, ys = odeflow.odeint_event(lambda t, y: -torch.ones_like(y), y0, 0.25,
                                       event_fn=lambda t, y: y.real[0] - 0.5)
    assert event_t.dtype == torch.float64
    assert abs(event_t.item() - 0.75) < 1e-12
    assert ys.shape == (2, 1)


def test_dir_lists_the_public_names():
    names = dir(odeflow)
    assert names == sorted(names)
    assert {"solve", "odeint", "odeint_adjoint", "odeint_dense", "odeint_event"} <= set(names)
