"""Turns what the user passed into one canonical problem, checking everything on the way.

The canonical problem the loops see:

* a flat, real, 1-D state (a tuple of tensors is concatenated; a complex state is viewed
  as pairs of reals), restored to the user's structure at the end;
* increasing time: a decreasing ``t`` is solved as ``-t`` with ``-func(-t, y)``;
* time as Python floats (float64). For a float32 state the solver still accumulates
  time in float64, because ``t + dt`` rounded to float32 drifts after many steps and can
  stall outright once ``dt`` falls below float32's resolution of ``t``;
* tolerances as floats or flat tensors of the state's real dtype;
* ``func`` wrapped once, counting its evaluations (the only place NFE is counted).

Every user error is a ``ValueError``/``TypeError`` that names the argument and what was
expected.
"""

from __future__ import annotations

import difflib
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .norms import mixed_rms_norm, rms_norm
from .options import TORCHDIFFEQ_OPTIONS

__all__ = ["StateLayout", "CountedFunc", "Problem", "make_problem", "check_options"]

State = Tensor | tuple[Tensor, ...]


@dataclass(frozen=True)
class StateLayout:
    """How the user's state maps to the flat real vector the solver integrates."""

    is_tuple: bool
    shapes: tuple[torch.Size, ...]
    sizes: tuple[int, ...]  # flat real sizes of each component
    is_complex: bool
    dtype: torch.dtype  # the user's dtype (complex or real)
    real_dtype: torch.dtype
    device: torch.device

    @property
    def numel(self) -> int:
        return sum(self.sizes)

    def flatten(self, state: State) -> Tensor:
        """User structure -> flat real vector."""
        parts = state if self.is_tuple else (state,)
        if self.is_complex:
            parts = tuple(torch.view_as_real(p.contiguous()) for p in parts)
        if len(parts) == 1:
            return parts[0].reshape(-1)
        return torch.cat([p.reshape(-1) for p in parts])

    def unflatten(self, flat: Tensor) -> State:
        """Flat real vector -> user structure (views where possible)."""
        if not self.is_tuple:
            return self._restore(flat, self.shapes[0])
        return tuple(
            self._restore(piece, shape)
            for piece, shape in zip(torch.split(flat, self.sizes), self.shapes)
        )

    def unflatten_stacked(self, flat: Tensor) -> State:
        """``(T, n)`` stacked flat states -> user structure with a leading time axis."""
        n_t = flat.shape[0]
        if not self.is_tuple:
            return self._restore(flat, (n_t, *self.shapes[0]))
        return tuple(
            self._restore(piece, (n_t, *shape))
            for piece, shape in zip(torch.split(flat, self.sizes, dim=1), self.shapes)
        )

    def real_view(self, flat: Tensor) -> State:
        """Flat real vector -> user structure but real (complex as trailing pairs)."""
        shapes = [(*s, 2) if self.is_complex else s for s in self.shapes]
        if not self.is_tuple:
            return flat.view(shapes[0])
        return tuple(p.view(s) for p, s in zip(torch.split(flat, self.sizes), shapes))

    def _restore(self, flat: Tensor, shape: Sequence[int]) -> Tensor:
        if self.is_complex:
            return torch.view_as_complex(flat.reshape(*shape, 2))
        return flat.reshape(shape)


class CountedFunc:
    """The one wrapper that calls the user's ``func``: canonical arguments in, NFE counted.

    Called as ``f(t, y)`` with ``t`` a Python float in canonical (increasing) time and
    ``y`` the flat real state; returns ``d y / d t`` in the same form. The user's
    ``func`` receives ``t`` as a 0-dim tensor of the state's real dtype, in the user's
    time direction, and ``y`` in the user's structure.
    """

    __slots__ = ("func", "layout", "sign", "nfe", "_tdtype", "_device", "_call", "_shape",
                 "_conforming")

    def __init__(self, func: Callable[..., Any], layout: StateLayout, sign: float):
        self.func = func
        self.layout = layout
        self.sign = sign
        self.nfe = 0
        self._tdtype = layout.real_dtype
        self._device = layout.device
        single_real = not layout.is_tuple and not layout.is_complex
        self._shape = layout.shapes[0]
        self._conforming = False
        if single_real and len(self._shape) == 1:
            self._call = self._call_simple
        elif single_real:
            self._call = self._call_shaped
        else:
            self._call = self._call_general

    def __call__(self, t: float, y: Tensor) -> Tensor:
        self.nfe += 1
        return self._call(torch.scalar_tensor(self.sign * t, dtype=self._tdtype,
                                              device=self._device), y)

    def checked(self, t: float, y: Tensor) -> Tensor:
        """Like a call, but checks the structure of ``func``'s output (used for the first call)."""
        self.nfe += 1
        tt = torch.scalar_tensor(self.sign * t, dtype=self._tdtype, device=self._device)
        out = self.func(tt, self.layout.unflatten(y))
        if check_func_output(out, self.layout) and not self._conforming:
            # torchdiffeq accepts an output that broadcasts to the state (its bouncing-ball
            # example returns a 0-dim tensor for a state of shape (1,)) or has another
            # floating dtype (its solution keeps y0's dtype); only a func that needs it pays
            # for the per-call fix-up, the hot path of the others is unchanged.
            self._conforming = True
            other = {o.dtype for o in (out if self.layout.is_tuple else (out,))}
            other.discard(self.layout.dtype)
            if other:  # once per solve: checked() is the first call of a solve
                warnings.warn(
                    f"func(t, y) returns dtype {', '.join(map(str, sorted(other, key=str)))} "
                    f"for a state of dtype {self.layout.dtype}; its output is cast to "
                    f"{self.layout.dtype} (as torchdiffeq, the solution keeps y0's dtype). "
                    "Give y0 the dtype you want to integrate in.", UserWarning, stacklevel=2)
            self._call = self._call_conforming
        if self._conforming:
            out = self._conform(out)
        out = self.layout.flatten(out)
        return out if self.sign > 0 else -out

    def at(self, t_user: Tensor, y: Tensor) -> Tensor:
        """Evaluate with a user-time tensor ``t_user`` (for differentiating w.r.t. time)."""
        self.nfe += 1
        return self._call(t_user, y)

    def perturbed(self, t: float, y: Tensor, side: int) -> Tensor:
        """Evaluate just after (``side=+1``) or before (``-1``) canonical time ``t``.

        The time is moved by one unit in the last place of the dtype ``func`` sees, so that
        a ``func`` with a discontinuity at a grid point is evaluated on the intended side.
        """
        self.nfe += 1
        tt = torch.scalar_tensor(self.sign * t, dtype=self._tdtype, device=self._device)
        toward = math.inf if side * self.sign > 0 else -math.inf
        tt = torch.nextafter(tt, torch.full_like(tt, toward))
        return self._call(tt, y)

    def _call_simple(self, tt: Tensor, y: Tensor) -> Tensor:
        out = self.func(tt, y)
        return out if self.sign > 0 else -out

    def _call_shaped(self, tt: Tensor, y: Tensor) -> Tensor:
        out = self.func(tt, y.view(self._shape)).reshape(-1)
        return out if self.sign > 0 else -out

    def _call_conforming(self, tt: Tensor, y: Tensor) -> Tensor:
        out = self.layout.flatten(self._conform(self.func(tt, self.layout.unflatten(y))))
        return out if self.sign > 0 else -out

    def _conform(self, out: Any) -> Any:
        """``func``'s raw output brought to the state's shapes and dtype
        (``check_func_output`` has already checked that each part can be)."""
        dtype = self.layout.dtype
        if not self.layout.is_tuple:
            out = out if out.shape == self._shape else out.expand(self._shape)
            return out if out.dtype == dtype else out.to(dtype)
        return tuple((o if o.shape == s else o.expand(s)).to(dtype)
                     for o, s in zip(out, self.layout.shapes))

    def _call_general(self, tt: Tensor, y: Tensor) -> Tensor:
        out = self.layout.flatten(self.func(tt, self.layout.unflatten(y)))
        return out if self.sign > 0 else -out


@dataclass(frozen=True)
class Problem:
    """A validated, canonical initial value problem (see the module docstring)."""

    func: CountedFunc
    user_func: Callable[..., Any]
    layout: StateLayout
    y0: Tensor  # flat, real
    t: Tensor  # the user's output times (1-D)
    t_out: tuple[float, ...]  # canonical increasing output times
    sign: float  # +1 forward in time, -1 for a decreasing t
    rtol: float | Tensor
    atol: float | Tensor
    norm: Callable[[Tensor], Tensor]
    method: str
    options: dict[str, Any]
    #: what the loop reports besides the outputs: a list that receives each accepted step's
    #: detached interpolant (``dense=True``), and a progress bar (``progress=True``).
    dense_sink: list | None = None
    progress: Any = None

    def user_time(self, t: float) -> float:
        """Canonical time -> the user's time."""
        return self.sign * t


def _check_state(y0: Any, name: str = "y0") -> tuple[tuple[Tensor, ...], bool]:
    if isinstance(y0, Tensor):
        parts, is_tuple = (y0,), False
    elif isinstance(y0, (tuple, list)) and len(y0) > 0 and all(isinstance(p, Tensor) for p in y0):
        parts, is_tuple = tuple(y0), True
    else:
        raise TypeError(
            f"{name} must be a torch.Tensor or a non-empty tuple of tensors, got "
            f"{type(y0).__name__}"
        )
    dtype, device = parts[0].dtype, parts[0].device
    for i, p in enumerate(parts):
        where = f"{name}[{i}]" if is_tuple else name
        if p.device.type == "meta":
            raise ValueError(f"{where} is on the 'meta' device, which holds shapes but no "
                             "values to integrate; create it on 'cpu' or 'cuda'")
        if not (p.is_floating_point() or p.is_complex()):
            raise TypeError(f"{where} must be floating point or complex, got dtype {p.dtype}")
        if p.dtype != dtype:
            raise TypeError(
                f"all tensors of {name} must share one dtype; {name}[0] is {dtype}, "
                f"{where} is {p.dtype}"
            )
        if p.device != device:
            raise ValueError(
                f"all tensors of {name} must be on one device; {name}[0] is on {device}, "
                f"{where} on {p.device}"
            )
    return parts, is_tuple


def _check_times(t: Any, device: torch.device) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be a 1-D torch.Tensor of times, got {type(t).__name__}")
    if t.ndim != 1 or t.numel() == 0:
        raise ValueError(f"t must be a non-empty 1-D tensor, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"t must be floating point, got dtype {t.dtype}")
    if t.device.type == "meta":
        raise ValueError("t is on the 'meta' device, which holds no values; create the output "
                         "times on 'cpu' or on y0's device")
    return t


def _times_as_floats(t: Tensor) -> tuple[list[float], float]:
    values = t.detach().to("cpu", torch.float64).tolist()  # host sync: once per solve
    for i, v in enumerate(values):
        if not math.isfinite(v):
            raise ValueError(f"t must be finite; t[{i}] = {v}")
    if len(values) == 1:
        return values, 1.0
    sign = 1.0 if values[1] > values[0] else -1.0
    for i in range(1, len(values)):
        step = (values[i] - values[i - 1]) * sign
        if step <= 0:
            kind = "repeats a time" if step == 0 else "changes direction"
            raise ValueError(
                "t must be strictly increasing or strictly decreasing; "
                f"it {kind} at t[{i - 1}] = {values[i - 1]!r}, t[{i}] = {values[i]!r}"
            )
    return values, sign


def _check_tolerance(name: str, tol: Any, layout: StateLayout) -> float | Tensor:
    if isinstance(tol, (tuple, list)):
        if not layout.is_tuple or len(tol) != len(layout.shapes):
            raise ValueError(
                f"{name} given as a sequence needs one value per component of a tuple y0 "
                f"({len(layout.shapes) if layout.is_tuple else 'y0 is a tensor'}), got {len(tol)}"
            )
        values = [float(_scalar_tolerance(f"{name}[{i}]", v)) for i, v in enumerate(tol)]
        return torch.cat([
            torch.full((size,), v, dtype=layout.real_dtype, device=layout.device)
            for v, size in zip(values, layout.sizes)
        ])
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
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), list(valid), n=1)
            if close:
                hints.append(f"did you mean {close[0]!r} for {k!r}?")
        raise ValueError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"for method={method!r}; " + (" ".join(hints) + " " if hints else "")
            + f"valid options are: {', '.join(sorted(valid))}"
        )
    if extra:
        warnings.warn(
            f"method={method!r} ignores the option{'s' if len(extra) > 1 else ''} "
            f"{', '.join(map(repr, sorted(extra)))} (torchdiffeq options of other methods; "
            "torchdiffeq ignores them too); valid options "
            f"are: {', '.join(sorted(valid))}", UserWarning, stacklevel=3)
    return {k: v for k, v in options.items() if k in valid}


def make_problem(
    func: Callable[..., Any],
    y0: State,
    t: Tensor,
    rtol: Any,
    atol: Any,
    method: str,
    options: dict[str, Any],
) -> Problem:
    """Validate the user's arguments and build the canonical :class:`Problem`."""
    if not callable(func):
        raise TypeError(f"func must be callable as func(t, y), got {type(func).__name__}")
    parts, is_tuple = _check_state(y0)
    first = parts[0]
    t = _check_times(t, first.device)
    t_values, sign = _times_as_floats(t)
    is_complex = first.is_complex()
    real_dtype = first.real.dtype if is_complex else first.dtype
    layout = StateLayout(
        is_tuple=is_tuple,
        shapes=tuple(p.shape for p in parts),
        sizes=tuple(p.numel() * (2 if is_complex else 1) for p in parts),
        is_complex=is_complex,
        dtype=first.dtype,
        real_dtype=real_dtype,
        device=first.device,
    )
    flat = layout.flatten(y0)
    if not bool(torch.isfinite(flat).all()):  # host sync: once per solve
        raise ValueError("y0 must be finite; it contains inf or nan")
    rtol_v = _check_tolerance("rtol", rtol, layout)
    atol_v = _check_tolerance("atol", atol, layout)
    if isinstance(rtol_v, float) and isinstance(atol_v, float) and rtol_v == 0 and atol_v == 0:
        raise ValueError("rtol and atol cannot both be zero: the error test could never pass")
    user_norm = options.get("norm")
    if user_norm is not None:
        if not callable(user_norm):
            raise TypeError(f"options['norm'] must be callable, got {type(user_norm).__name__}")
        norm = lambda x, _n=user_norm, _l=layout: _n(_l.real_view(x))  # noqa: E731
    elif is_tuple:
        norm = mixed_rms_norm(layout.sizes)
    else:
        norm = rms_norm
    return Problem(
        func=CountedFunc(func, layout, sign),
        user_func=func,
        layout=layout,
        y0=flat,
        t=t,
        t_out=tuple(sign * v for v in t_values),
        sign=sign,
        rtol=rtol_v,
        atol=atol_v,
        norm=norm,
        method=method,
        options=options,
    )


def check_func_output(out: Any, layout: StateLayout) -> bool:
    """Structural check of a raw ``func`` output before flattening (clear errors).

    Returns:
        ``True`` when the output is acceptable but must be conformed first: some part has
        a shape that broadcasts to the state's without repeating values (see
        ``_broadcasts_to``), or another floating dtype (a real state) or another floating or
        complex dtype (a complex state), which is cast to the state's, as torchdiffeq does.
    """
    needs_fix = False
    if layout.is_tuple:
        if not isinstance(out, (tuple, list)) or len(out) != len(layout.shapes):
            raise TypeError(
                f"func(t, y) must return a tuple of {len(layout.shapes)} tensors like y0, got "
                f"{type(out).__name__}"
            )
        items = out
    else:
        if not isinstance(out, Tensor):
            raise TypeError(f"func(t, y) must return a tensor, got {type(out).__name__}")
        items = (out,)
    for i, (o, shape) in enumerate(zip(items, layout.shapes)):
        where = f"func(t, y)[{i}]" if layout.is_tuple else "func(t, y)"
        if not isinstance(o, Tensor):
            raise TypeError(f"{where} must be a tensor, got {type(o).__name__}")
        if o.shape != shape:
            if not _broadcasts_to(o.shape, shape):
                raise ValueError(
                    f"{where} must have the shape of y0{f'[{i}]' if layout.is_tuple else ''} "
                    f"{tuple(shape)}, got {tuple(o.shape)}; a shape that broadcasts to it "
                    "without repeating values (e.g. 0-dim for a state of shape (1,)) is "
                    "accepted too"
                )
            needs_fix = True
        if o.dtype != layout.dtype:
            castable = o.is_floating_point() or (layout.is_complex and o.is_complex())
            if not castable:
                raise TypeError(f"{where} must have dtype {layout.dtype} like y0 (or another "
                                f"{'floating or complex' if layout.is_complex else 'floating'} "
                                f"dtype, which is cast), got {o.dtype}")
            needs_fix = True
        if o.device != layout.device:
            raise ValueError(f"{where} must be on {layout.device} like y0, got {o.device}")
    return needs_fix


def _broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    """``shape`` broadcasts to ``target`` without repeating values (it lacks or has size 1 in
    only dimensions where ``target`` has size 1), as torchdiffeq accepts. Replicating a value across the state (``(1,)`` for
    ``(2,)``) is refused: it is far more often a slicing bug than an intended derivative."""
    if math.prod(shape) != math.prod(target):
        return False
    try:
        return torch.broadcast_shapes(shape, target) == target
    except RuntimeError:
        return False


def _describe(layout: StateLayout) -> str:
    if layout.is_tuple:
        return "tuple of shapes " + ", ".join(str(tuple(s)) for s in layout.shapes)
    return f"shape {tuple(layout.shapes[0])}"
