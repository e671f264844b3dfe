"""The state the loop integrates, and the one wrapper that calls the user's ``func``.

The loop integrates a flat real state: ``(n,)`` for a joint solve, ``(B, n)`` (one row per
sample) for a per-sample one. :class:`StateLayout` maps the user's structure (a tensor or
a tuple of tensors, real or complex; batch first in per-sample mode) to it and back;
:class:`CountedFunc` calls ``func`` in canonical time and counts its evaluations (the only
place NFE is counted).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .lanes import Clock

__all__ = ["State", "StateLayout", "CountedFunc", "check_func_output"]

State = Tensor | tuple[Tensor, ...]


@dataclass(frozen=True)
class StateLayout:
    """How the user's state maps to the flat real state the solver integrates.

    ``batch`` is ``None`` for a joint solve (flat ``(n,)``) and ``B`` for a per-sample one
    (``(B, n)``: each sample's components flattened side by side); ``sizes`` are the flat
    real sizes of the components per lane.
    """

    is_tuple: bool
    shapes: tuple[torch.Size, ...]
    sizes: tuple[int, ...]
    is_complex: bool
    dtype: torch.dtype  # the user's dtype (complex or real)
    real_dtype: torch.dtype
    device: torch.device
    batch: int | None = None

    @classmethod
    def of(cls, parts: Sequence[Tensor], is_tuple: bool, batch: int | None) -> StateLayout:
        first = parts[0]
        is_complex = first.is_complex()
        per_lane = [p[0].numel() if batch is not None else p.numel() for p in parts]
        return cls(is_tuple, tuple(p.shape for p in parts),
                   tuple(m * (2 if is_complex else 1) for m in per_lane), is_complex,
                   first.dtype, first.real.dtype if is_complex else first.dtype,
                   first.device, batch)

    def flatten(self, state: State) -> Tensor:
        """User structure -> flat real ``(n,)`` or ``(B, n)``."""
        parts = state if self.is_tuple else (state,)
        if self.is_complex:
            parts = tuple(torch.view_as_real(p.contiguous()) for p in parts)
        lead = (self.batch,) if self.batch is not None else ()
        if len(parts) == 1:
            return parts[0].reshape(*lead, -1)
        return torch.cat([p.reshape(*lead, -1) for p in parts], -1)

    def unflatten(self, flat: Tensor) -> State:
        """Flat ``(*lead, n)`` or ``(*lead, B, n)`` -> user structure with leading ``lead``
        dimensions (views where possible)."""
        state = self.real_view(flat)
        if not self.is_complex:
            return state
        return tuple(map(torch.view_as_complex, state)) if self.is_tuple else (
            torch.view_as_complex(state))

    def real_view(self, flat: Tensor) -> State:
        """Flat state -> user structure but real (complex as trailing pairs)."""
        lead = flat.shape[:flat.ndim - 1 - (self.batch is not None)]
        shapes = [(*lead, *s, 2) if self.is_complex else (*lead, *s) for s in self.shapes]
        if not self.is_tuple:
            return flat.reshape(shapes[0])
        return tuple(p.reshape(s) for p, s in zip(torch.split(flat, self.sizes, dim=-1), shapes))


class CountedFunc:
    """The one wrapper that calls the user's ``func``: canonical arguments in, NFE counted.

    Called as ``f(t, y)`` with ``t`` canonical (increasing) time, a Python float for a
    joint solve or a ``(B,)`` float64 tensor (each lane its own time) for a per-sample
    one, and ``y`` the flat real state; returns ``d y / d t`` in the same form. The user's
    ``func`` receives ``t`` in the user's time direction as a tensor of the state's real
    dtype (0-dim, or ``(B,)``) and ``y`` in the user's structure.
    """

    __slots__ = ("func", "layout", "clock", "nfe", "_call", "_time", "_dims", "_negate",
                 "_conforming")

    def __init__(self, func: Callable[..., Any], layout: StateLayout, clock: Clock):
        self.func = func
        self.layout = layout
        self.clock = clock
        self.nfe = 0
        self._conforming = False
        shape = layout.shapes[0]
        # view(*ints) parses ~3x faster than view(Size); a 0-dim state views as view(())
        self._dims = tuple(shape) or ((),)
        plain = not layout.is_tuple and not layout.is_complex
        if plain and layout.batch is None:
            self._call = self._call_simple if len(shape) == 1 else self._call_shaped
        elif plain and len(shape) == 2 and getattr(clock, "forward_only", False):
            self._call = self.func  # per sample, (B, n) forward: the flat state is the user's
        else:
            self._call = self._call_general
        self._negate = not clock.per_sample and clock.sign < 0
        # Canonical time is the user's for a forward joint solve: one C call, no Python frame.
        self._time = (functools.partial(torch.scalar_tensor, dtype=clock.real_dtype,
                                        device=clock.device)
                      if not clock.per_sample and clock.sign > 0 and not clock.lane_time
                      else clock.user_time)

    @property
    def sign(self) -> Any:
        return self.clock.sign

    def __call__(self, t: Any, y: Tensor) -> Tensor:
        self.nfe += 1
        return self._call(self._time(t), y)

    def checked(self, t: Any, y: Tensor) -> Tensor:
        """Like a call, but checks the structure of ``func``'s output (the first call)."""
        self.nfe += 1
        out = self.func(self.clock.user_time(t), self.layout.unflatten(y))
        if check_func_output(out, self.layout) and not self._conforming:
            # torchdiffeq accepts an output that broadcasts to the state (its bouncing-ball
            # example returns a 0-dim tensor for a state of shape (1,)) or has another
            # floating dtype (its solution keeps y0's dtype); only a func that needs it pays
            # for the per-call fix-up (the simple and shaped calls never look).
            self._conforming = True
            other = {o.dtype for o in (out if self.layout.is_tuple else (out,))}
            other.discard(self.layout.dtype)
            if other:  # once per solve: checked() is the first call of a solve
                warnings.warn(
                    f"func(t, y) returns dtype {', '.join(map(str, sorted(other, key=str)))} "
                    f"for a state of dtype {self.layout.dtype}; its output is cast to "
                    f"{self.layout.dtype} (as torchdiffeq, the solution keeps y0's dtype). "
                    "Give y0 the dtype you want to integrate in.", UserWarning, stacklevel=2)
            self._call = self._call_general
        return self._finish(out)

    def at(self, t_user: Tensor, y: Tensor) -> Tensor:
        """Evaluate at a user-time tensor ``t_user`` (for differentiating w.r.t. time)."""
        self.nfe += 1
        if t_user.ndim == 0 and getattr(self.clock, "lane_time", False):
            t_user = t_user.reshape(1)  # one sample's per-sample solve: func expects (1,)
        return self._call(t_user, y)

    def perturbed(self, t: Any, y: Tensor, side: Any) -> Tensor:
        """Evaluate just after (``side=+1``) or before (``-1``) canonical time ``t``.

        The time is moved by one unit in the last place of the dtype ``func`` sees, so that
        a ``func`` with a discontinuity at a stop is evaluated on the intended side. Per
        sample, ``side`` may be a ``(B,)`` integer tensor (``0``: not moved).
        """
        self.nfe += 1
        tt = self.clock.user_time(t)
        sign = self.clock.sign
        if not self.clock.per_sample:
            toward = math.inf if side * sign > 0 else -math.inf
            return self._call(torch.nextafter(tt, torch.full_like(tt, toward)), y)
        moved = torch.nextafter(tt, torch.where(side * sign > 0, math.inf, -math.inf).to(tt.dtype))
        if isinstance(side, Tensor):
            moved = torch.where(side != 0, moved, tt)
        return self._call(moved, y)

    def _call_simple(self, tt: Tensor, y: Tensor) -> Tensor:
        out = self.func(tt, y)
        return -out if self._negate else out

    def _call_shaped(self, tt: Tensor, y: Tensor) -> Tensor:
        out = self.func(tt, y.view(*self._dims)).ravel()
        return -out if self._negate else out

    def _call_general(self, tt: Tensor, y: Tensor) -> Tensor:
        return self._finish(self.func(tt, self.layout.unflatten(y)))

    def _finish(self, out: Any) -> Tensor:
        """``func``'s raw output as the flat derivative in canonical time (conformed first
        to the state's shapes and dtype if it must be: ``check_func_output`` checked that
        it can be)."""
        lay = self.layout
        if self._conforming:
            parts = tuple(o.expand(s).to(lay.dtype)
                          for o, s in zip(out if lay.is_tuple else (out,), lay.shapes))
            out = parts if lay.is_tuple else parts[0]
        out = lay.flatten(out)
        if self._negate:
            return -out
        if self.clock.per_sample and not self.clock.forward_only:
            return out * self.clock.sign_column(out.dtype)
        return out


def check_func_output(out: Any, layout: StateLayout) -> bool:
    """Structural check of a raw ``func`` output before flattening (clear errors).

    Returns:
        ``True`` when the output is acceptable but must be conformed first: some part has
        a shape that broadcasts to the state's without repeating values (see
        ``_broadcasts_to``), or another floating dtype (a real state) or another floating or
        complex dtype (a complex state), which is cast to the state's, as torchdiffeq does.
    """
    needs_fix, what = False, "func(t, y)"
    if layout.is_tuple and (not isinstance(out, (tuple, list)) or len(out) != len(layout.shapes)):
        raise TypeError(f"{what} must return a tuple of {len(layout.shapes)} tensors like y0, "
                        f"got {type(out).__name__}")
    if not layout.is_tuple and not isinstance(out, Tensor):
        raise TypeError(f"{what} must return a tensor, got {type(out).__name__}")
    for i, (o, shape) in enumerate(zip(out if layout.is_tuple else (out,), layout.shapes)):
        where = f"{what}[{i}]" if layout.is_tuple else what
        if not isinstance(o, Tensor):
            raise TypeError(f"{where} must be a tensor, got {type(o).__name__}")
        if o.shape != shape:
            if not _broadcasts_to(o.shape, shape):
                which = f"y0[{i}]" if layout.is_tuple else "y0"
                raise ValueError(f"{where} must have the shape of {which} {tuple(shape)}, got "
                                 f"{tuple(o.shape)}; a shape that broadcasts to it without "
                                 "repeating values (e.g. 0-dim for a state of shape (1,)) is "
                                 "accepted too")
            needs_fix = True
        if o.dtype != layout.dtype:
            if not (o.is_floating_point() or (layout.is_complex and o.is_complex())):
                raise TypeError(f"{where} must have dtype {layout.dtype} like y0 (or another "
                                f"{'floating or complex' if layout.is_complex else 'floating'} "
                                f"dtype, which is cast), got {o.dtype}")
            needs_fix = True
        if o.device != layout.device:
            raise ValueError(f"{where} must be on {layout.device} like y0, got {o.device}")
    return needs_fix


def _broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    """``shape`` broadcasts to ``target`` without repeating values (it lacks or has size 1
    only in dimensions where ``target`` has size 1), as torchdiffeq accepts. Replicating a
    value across the state (``(1,)`` for ``(2,)``) is refused: it is far more often a
    slicing bug than an intended derivative."""
    if math.prod(shape) != math.prod(target):
        return False
    try:
        return torch.broadcast_shapes(shape, target) == target
    except RuntimeError:
        return False
