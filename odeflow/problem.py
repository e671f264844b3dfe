"""Turns what the user passed into one canonical problem, checking everything on the way.

The canonical problem the loop sees:

* a flat, real state (:class:`~odeflow.state.StateLayout`): ``(n,)`` for a joint solve,
  ``(B, n)`` with ``options={"per_sample": True}``, where the leading dimension of ``y0``
  holds ``B`` independent problems sharing ``func``;
* increasing time: a decreasing ``t`` is solved as ``-t`` with ``-func(-t, y)`` (per
  sample, each row of a ``(B, T)`` ``t`` has its own direction);
* time in float64 (Python floats for a joint solve, ``(B,)`` tensors per sample), also for
  a float32 state, because ``t + dt`` rounded to float32 drifts after many steps;
* tolerances as floats or tensors of the state's real dtype (one value per column);
* ``func`` wrapped once, counting its evaluations.

Every user error is a ``ValueError``/``TypeError`` that names the argument and what was
expected.
"""

from __future__ import annotations

import difflib
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from .lanes import Clock, LaneClock, SharedClock
from .norms import lane_norm, mixed_rms_norm, rms_norm
from .options import TORCHDIFFEQ_OPTIONS
from .state import CountedFunc, State, StateLayout

__all__ = ["State", "StateLayout", "CountedFunc", "Problem", "make_problem", "check_options",
           "check_tolerance", "retime", "FAR"]

#: The end time of an unbounded event search (``t1 = ±inf``); the solve is then bounded by
#: ``options["max_num_steps"]`` alone.
FAR = 1e300


@dataclass(frozen=True)
class Problem:
    """A validated, canonical initial value problem (see the module docstring)."""

    func: CountedFunc
    user_func: Callable[..., Any]
    layout: StateLayout
    y0: Tensor  # flat, real: (n,) or (B, n)
    t: Tensor  # the user's output times ((T,) or (B, T))
    clock: Clock
    rtol: float | Tensor
    atol: float | Tensor
    norm: Callable[[Tensor], Any]
    options: dict[str, Any]
    #: ``options["per_sample"]`` was asked for: results take the per-sample form (a batch
    #: of one sample runs on the scalar clock, as its own joint solve)
    lanes_api: bool = False

    @property
    def per_sample(self) -> bool:
        return self.clock.per_sample


def _check_state(y0: Any, per_sample: bool) -> tuple[tuple[Tensor, ...], bool]:
    if isinstance(y0, Tensor):
        parts, is_tuple = (y0,), False
    elif isinstance(y0, (tuple, list)) and len(y0) > 0 and all(isinstance(p, Tensor) for p in y0):
        parts, is_tuple = tuple(y0), True
    else:
        raise TypeError(f"y0 must be a torch.Tensor or a non-empty tuple of tensors, got "
                        f"{type(y0).__name__}")
    dtype, device = parts[0].dtype, parts[0].device
    for i, p in enumerate(parts):
        where = f"y0[{i}]" if is_tuple else "y0"
        if p.device.type == "meta":
            raise ValueError(f"{where} is on the 'meta' device, which holds shapes but no "
                             "values to integrate; create it on 'cpu' or 'cuda'")
        if not (p.is_floating_point() or p.is_complex()):
            raise TypeError(f"{where} must be floating point or complex, got dtype {p.dtype}")
        if p.dtype != dtype:
            raise TypeError(f"all tensors of y0 must share one dtype; y0[0] is {dtype}, "
                            f"{where} is {p.dtype}")
        if p.device != device:
            raise ValueError(f"all tensors of y0 must be on one device; y0[0] is on {device}, "
                             f"{where} on {p.device}")
        if per_sample:
            if p.ndim < 1 or p.shape[0] == 0:
                raise ValueError(
                    f"options['per_sample'] needs {where} to have the batch dimension first, "
                    f"with at least one sample; got shape {tuple(p.shape)}")
            if p.shape[0] != parts[0].shape[0]:
                raise ValueError(f"options['per_sample'] needs every tensor of y0 to share the "
                                 f"batch size: y0[0] has {parts[0].shape[0]}, {where} has "
                                 f"{p.shape[0]}")
    return parts, is_tuple


def _check_times(t: Any, batch: int | None) -> Tensor:
    if not isinstance(t, Tensor):
        kind = "a 1-D torch.Tensor" if batch is None else "a torch.Tensor (T,) or (B, T)"
        raise TypeError(f"t must be {kind} of times, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"t must be floating point, got dtype {t.dtype}")
    if t.device.type == "meta":
        raise ValueError("t is on the 'meta' device, which holds no values; create the output "
                         "times on 'cpu' or on y0's device")
    if batch is None:
        if t.ndim != 1 or t.numel() == 0:
            raise ValueError(f"t must be a non-empty 1-D tensor, got shape {tuple(t.shape)}")
    elif t.ndim not in (1, 2) or t.numel() == 0:
        raise ValueError(f"with options['per_sample'], t must be 1-D (shared times) or of shape "
                         f"(B, T) with B = {batch} (one row per sample), got {tuple(t.shape)}")
    elif t.ndim == 2 and t.shape[0] != batch:
        raise ValueError(f"t of shape {tuple(t.shape)} gives {t.shape[0]} rows of times, but y0 "
                         f"has batch size B = {batch}; t must have shape (B, T) or (T,)")
    return t


def _canonical_rows(t: Tensor, search: bool) -> list[list[float]]:
    """The user's times as checked rows of Python floats (``inf`` search ends become
    ``FAR``)."""
    values = t.detach().tolist()  # host sync: once per solve (exact Python floats)
    rows = [values] if t.ndim == 1 else values
    for r, row in enumerate(rows):
        where = f"t[{r}]" if len(rows) > 1 else "t"
        for i, v in enumerate(row[:1] if search else row):
            if not math.isfinite(v):
                raise ValueError(f"{where} must be finite; {where}[{i}] = {v}"
                                 + (" (the search start)" if search else ""))
        if search and len(row) != 2:
            raise ValueError("with event_fn, t must be [t0, t1], two times (per sample also "
                             "(B, 2)): the search runs from t0 towards t1 (t1 = inf or -inf "
                             f"for no end time), got {len(row)} times per row")
        if search and math.isnan(row[1]):
            raise ValueError(f"{where}[1] must not be nan")
        sign = 1.0 if len(row) == 1 or row[1] > row[0] else -1.0
        for i in range(1, len(row)):
            step = (row[i] - row[i - 1]) * sign
            if step <= 0:
                kind = "repeats a time" if step == 0 else "changes direction"
                raise ValueError(f"{where} must be strictly increasing or strictly decreasing; "
                                 f"it {kind} at {where}[{i - 1}] = {row[i - 1]!r}, "
                                 f"{where}[{i}] = {row[i]!r}")
        if search and math.isinf(row[1]):
            row[1] = math.copysign(FAR, row[1])
            if (row[1] > 0 and row[0] >= FAR) or (row[1] < 0 and row[0] <= -FAR):
                raise ValueError(f"t[0] = {row[0]} is beyond the unbounded search's range")
    return rows


def check_tolerance(name: str, tol: Any, layout: StateLayout) -> float | Tensor:
    """A tolerance as a float, or (one value per component of a tuple ``y0``) a tensor of
    the state's real dtype with one value per flat element."""
    if isinstance(tol, (tuple, list)):
        if not layout.is_tuple or len(tol) != len(layout.shapes):
            expected = len(layout.shapes) if layout.is_tuple else "y0 is a tensor"
            raise ValueError(f"{name} given as a sequence needs one value per component of a "
                             f"tuple y0 ({expected}), got {len(tol)}")
        values = [_scalar_tolerance(f"{name}[{i}]", v) for i, v in enumerate(tol)]
        return torch.cat([torch.full((size,), v, dtype=layout.real_dtype, device=layout.device)
                          for v, size in zip(values, layout.sizes)])
    return _scalar_tolerance(name, tol)


def _scalar_tolerance(name: str, tol: Any) -> float:
    if isinstance(tol, Tensor):
        if tol.numel() != 1:
            raise ValueError(f"{name} must be a scalar (or one per tuple component), got shape "
                             f"{tuple(tol.shape)}")
        tol = tol.item()
    if isinstance(tol, bool) or not isinstance(tol, (int, float)):
        raise TypeError(f"{name} must be a non-negative number, got {type(tol).__name__}")
    if not math.isfinite(tol) or tol < 0:
        raise ValueError(f"{name} must be a finite non-negative number, got {tol!r}")
    return float(tol)


def check_options(method: str, options: dict[str, Any] | None, valid: Sequence[str]) -> dict:
    """Options as a fresh dict of the keys ``method`` accepts.

    A torchdiffeq key that only other methods accept (``step_size`` with dopri5) is dropped
    with a warning, as torchdiffeq does, so that published scripts run unchanged (see
    :data:`~odeflow.options.TORCHDIFFEQ_OPTIONS`). Any other key the method does not accept
    is an error that suggests the closest valid key and lists the valid ones.
    """
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict or None, got {type(options).__name__}")
    extra = set(options) - set(valid)
    unknown = sorted((k for k in extra if k not in TORCHDIFFEQ_OPTIONS), key=str)
    extra -= set(unknown)
    if unknown:
        hints = [f"did you mean {close[0]!r} for {k!r}?" for k in unknown
                 if (close := difflib.get_close_matches(str(k), list(valid), n=1))]
        raise ValueError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"for method={method!r}; " + (" ".join(hints) + " " if hints else "")
            + f"valid options are: {', '.join(sorted(valid))}")
    if extra:
        warnings.warn(
            f"method={method!r} ignores the option{'s' if len(extra) > 1 else ''} "
            f"{', '.join(map(repr, sorted(extra)))} (torchdiffeq options of other methods; "
            "torchdiffeq ignores them too); valid options "
            f"are: {', '.join(sorted(valid))}", UserWarning, stacklevel=3)
    return {k: v for k, v in options.items() if k in valid}


def _norm(options: dict, layout: StateLayout) -> Callable[[Tensor], Any]:
    user_norm = options.get("norm")  # checked by validate_options
    if layout.batch is not None:
        return lane_norm(user_norm, layout)
    if user_norm is not None:
        return lambda x, _n=user_norm, _l=layout: _n(_l.real_view(x))  # noqa: E731
    return mixed_rms_norm(layout.sizes) if layout.is_tuple else rms_norm


def make_problem(func: Callable[..., Any], y0: State, t: Tensor, rtol: Any, atol: Any,
                 options: dict[str, Any], *, search: bool = False) -> Problem:
    """Validate the user's arguments and build the canonical :class:`Problem`.

    ``search``: ``t`` is an event search ``[t0, t1]`` (per row), whose end may be infinite.
    """
    if not callable(func):
        raise TypeError(f"func must be callable as func(t, y), got {type(func).__name__}")
    lanes_api = bool(options.get("per_sample", False))
    parts, is_tuple = _check_state(y0, lanes_api)
    batch = parts[0].shape[0] if lanes_api else None
    t = _check_times(t, batch)
    # One sample's per-sample solve is its own joint solve: the scalar clock, with the
    # sample's leading dimension kept in every shape func and the results see.
    per_sample = lanes_api and batch > 1
    if lanes_api and not per_sample:
        batch, t = None, t.reshape(-1)
    layout = StateLayout.of(parts, is_tuple, batch)
    rows = _canonical_rows(t, search)
    grid = (torch.tensor(rows, dtype=torch.float64, device=layout.device).expand(batch, -1)
            if per_sample else rows[0])
    clock = _clock(grid, layout, lanes_api)
    flat = layout.flatten(y0)
    if not bool(torch.isfinite(flat).all()):  # host sync: once per solve
        raise ValueError("y0 must be finite; it contains inf or nan")
    rtol_v = check_tolerance("rtol", rtol, layout)
    atol_v = check_tolerance("atol", atol, layout)
    if isinstance(rtol_v, float) and isinstance(atol_v, float) and rtol_v == 0 and atol_v == 0:
        raise ValueError("rtol and atol cannot both be zero: the error test could never pass")
    return Problem(func=CountedFunc(func, layout, clock), user_func=func, layout=layout,
                   y0=flat, t=t, clock=clock, rtol=rtol_v, atol=atol_v,
                   norm=_norm(options, layout), options=options,
                   lanes_api=lanes_api)


def _clock(grid: Any, layout: StateLayout, lane_time: bool) -> Clock:
    """The clock of checked, monotone user times ``grid``: a ``(B, T)`` float64 tensor (per
    sample) or a sequence of floats (one lane); each row's direction gives its sign."""
    if isinstance(grid, Tensor):
        sign = torch.where(grid[:, -1] >= grid[:, 0], 1.0, -1.0).to(grid)
        return LaneClock((sign[:, None] * grid).contiguous(), sign, layout.real_dtype)
    sign = 1.0 if len(grid) < 2 or grid[-1] >= grid[0] else -1.0
    return SharedClock([sign * v for v in grid], sign, layout.real_dtype, layout.device,
                       lane_time=lane_time)


def retime(problem: Problem, grid: Any, y0: Tensor) -> Problem:
    """``problem`` with other output times (in its canonical time) and initial state, already
    checked: ``grid`` as :func:`_clock` takes it. Used to solve one problem again over many
    intervals without validating it again."""
    if not isinstance(grid, Tensor):
        grid = [float(v) for v in grid]
    clock = _clock(grid, problem.layout, problem.lanes_api)
    t_user = grid if isinstance(grid, Tensor) else torch.tensor(grid, dtype=torch.float64)
    return replace(problem, clock=clock, y0=y0, t=t_user,
                   func=CountedFunc(problem.user_func, problem.layout, clock))
