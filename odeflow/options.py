"""Options: every key a method accepts, checked when ``solve`` is called.

:func:`validate_options` checks the value of every option (types and ranges) before any
solving starts, for the forward solve and for the adjoint's backward solve alike, so that
a bad ``adjoint_options`` fails at the call, not inside ``backward()``. The loops read the
same values through the small parsers here (:func:`positive_float`, :func:`max_steps`,
:func:`make_controller`), so a check and its use cannot drift apart.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .controllers import CONTROLLER_PRESETS, PIDController
from .linalg import LINEAR_SOLVER_OPTIONS, make_linear_solver

__all__ = ["DEFAULT_MAX_NUM_STEPS", "TORCHDIFFEQ_OPTIONS", "validate_options", "make_controller",
           "max_steps", "positive_float"]

DEFAULT_MAX_NUM_STEPS = 100_000

#: The option keys of torchdiffeq 0.2.5's methods. torchdiffeq warns about, and ignores, a
#: key that belongs to another of its methods (``options=dict(step_size=...)`` with dopri5
#: is common in published code), so odeflow does the same for these keys; any other key the
#: method does not accept (a typo, or an odeflow-only key such as ``per_sample`` given to a
#: method without it) is an error, since ignoring it would change the answer silently.
TORCHDIFFEQ_OPTIONS = frozenset({
    "step_size", "grid_constructor", "perturb", "interp",  # fixed grids
    "first_step", "safety", "ifactor", "dfactor", "max_num_steps", "norm", "jump_t",
    "step_t", "dtype",  # adaptive RK
    "max_order", "max_iters",  # Adams
    "solver", "min_step", "max_step",  # scipy_solver
})


def make_controller(options: dict[str, Any]) -> PIDController:
    """The step-size controller described by ``options`` (see :class:`PIDController`)."""
    spec = options.get("controller")
    factors = {k: float(v) if isinstance(v, Tensor) else v
               for k, v in options.items() if k in ("safety", "ifactor", "dfactor")}
    if isinstance(spec, PIDController):
        if factors:
            raise ValueError("options: give safety/ifactor/dfactor inside the PIDController, "
                             "not beside it")
        return spec
    if spec is None:
        spec = "integral"
    if not isinstance(spec, str) or spec not in CONTROLLER_PRESETS:
        raise ValueError(f"options['controller'] must be one of {sorted(CONTROLLER_PRESETS)} "
                         f"or a PIDController, got {spec!r}")
    return PIDController(**CONTROLLER_PRESETS[spec], **factors) if factors else _PRESETS[spec]


#: Controllers are frozen: one instance of each preset serves every solve.
_PRESETS = {name: PIDController(**kw) for name, kw in CONTROLLER_PRESETS.items()}


def positive_float(options: dict, name: str, allow_zero: bool = False) -> float | None:
    """``options[name]`` as a float, ``None`` if absent; a positive (or non-negative) number."""
    value = options.get(name)
    if value is None:
        return None
    if isinstance(value, Tensor):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            value >= 0 if allow_zero else value > 0):  # (nan fails either comparison)
        kind = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"options['{name}'] must be {kind} number, got {value!r}")
    return float(value)


def max_steps(options: dict) -> int:
    value = options.get("max_num_steps", DEFAULT_MAX_NUM_STEPS)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"options['max_num_steps'] must be a positive int, got {value!r}")
    return value


def validate_options(options: dict[str, Any], *, adjoint: bool = False) -> None:
    """Check the value of every option in ``options`` (keys were checked by the method).

    Args:
        options: the options of one solve (already restricted to the method's keys).
        adjoint: these are ``adjoint_options`` (``norm`` may then be ``"seminorm"``).

    Raises:
        ValueError, TypeError: the message names the option and what it expects.
    """
    for name, value in options.items():
        if value is None and name not in ("controller", "interp", "max_order", "max_iters",
                                          "max_newton_iters"):
            continue  # None: the default (the int options below have no None form)
        if name in ("first_step", "max_step", "step_size", "min_step"):
            positive_float(options, name, allow_zero=name == "min_step")
        elif name == "max_num_steps":
            max_steps(options)
        elif name in ("jump_t", "step_t"):
            if isinstance(value, Tensor):
                times = value.detach().reshape(-1).to("cpu", torch.float64).tolist()
            else:
                try:
                    times = [float(v) for v in value]
                except (TypeError, ValueError):
                    raise TypeError(f"options['{name}'] must be a 1-D tensor or sequence of "
                                    f"times, got {type(value).__name__}") from None
            if not all(math.isfinite(v) for v in times):
                raise ValueError(f"options['{name}'] must hold finite times, got {times}")
        elif name in ("norm", "grid_constructor") and not callable(value) and not (
                adjoint and name == "norm" and value == "seminorm"):
            extra = " or 'seminorm'" if adjoint and name == "norm" else ""
            raise TypeError(f"options['{name}'] must be callable{extra}, got {value!r}")
        elif name == "interp" and value not in ("linear", "cubic"):
            raise ValueError(f"options['interp'] must be one of ('linear', 'cubic'), got "
                             f"{value!r}")
        elif name in ("perturb", "per_sample", "compile", "autonomous") and not isinstance(
                value, (bool, int)):
            raise TypeError(f"options['{name}'] must be True or False, got {value!r}")
        elif name == "dtype" and not isinstance(value, torch.dtype):
            raise TypeError(f"options['dtype'] must be a torch.dtype, got {value!r}")
        elif name in ("max_order", "max_iters", "max_newton_iters") and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
                or (name == "max_order" and value > 4)):
            span = "in 1..4" if name == "max_order" else ">= 1"
            raise ValueError(f"options['{name}'] must be an int {span}, got {value!r}")
    if any(k in options for k in LINEAR_SOLVER_OPTIONS):
        make_linear_solver(options)  # checks jacobian, linear_solver and the krylov_* values
    if "controller" in options or any(k in options for k in ("safety", "ifactor", "dfactor")):
        make_controller(options)
    if options.get("compile") and not options.get("per_sample"):
        raise ValueError("options['compile'] compiles the per-sample step; it needs "
                         "options['per_sample'] = True")
    if options.get("step_size") is not None and options.get("grid_constructor") is not None:
        raise ValueError("options: give step_size or grid_constructor, not both")
