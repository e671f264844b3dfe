"""The batched pieces of the per-sample loop: state layout, ``func`` and norms.

A ``per_sample`` state is a ``(B, n)`` matrix, one row per sample (:class:`SampleLayout`);
``func`` is called on the whole batch with each sample's own time (:class:`BatchFunc`,
counting evaluations on the problem's ``CountedFunc``); the stepper is the joint loops' own
:class:`~odeflow.solvers.explicit_rk.ExplicitRK` (its ``step_batch`` takes one step size
per sample); error norms reduce each row (:func:`batched_norm`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .solvers.explicit_rk import ExplicitRK

__all__ = ["SampleLayout", "BatchFunc", "batched_rms", "batched_norm", "compiled_step",
           "error_control", "compiled_error_control"]


def batched_rms(x: Tensor) -> Tensor:
    """RMS norm of each row of ``(B, n)``: the default per-sample error norm."""
    return torch.linalg.vector_norm(x, dim=-1) / math.sqrt(max(x.shape[-1], 1))


class SampleLayout:
    """How a per-sample state (a tensor, or a tuple of tensors, batch first) maps to the
    ``(B, n)`` matrix the loop integrates: each sample's components flattened side by side."""

    def __init__(self, shapes: tuple[torch.Size, ...], is_tuple: bool):
        self.shapes = shapes
        self.is_tuple = is_tuple
        self.batch = shapes[0][0]
        self.sizes = [math.prod(s[1:]) for s in shapes]

    @classmethod
    def of(cls, state: Any) -> SampleLayout:
        if isinstance(state, Tensor):
            return cls((state.shape,), False)
        return cls(tuple(p.shape for p in state), True)

    def flatten(self, state: Any) -> Tensor:
        """User structure ``(B, ...)`` -> ``(B, n)``."""
        if not self.is_tuple:
            return state.reshape(self.batch, -1)
        return torch.cat([p.reshape(self.batch, -1) for p in state], 1)

    def unflatten(self, x: Tensor, lead: tuple[int, ...] = ()) -> Any:
        """``(*lead, B, n)`` -> user structure with leading ``lead`` dimensions."""
        if not self.is_tuple:
            return x.reshape(*lead, *self.shapes[0])
        return tuple(piece.reshape(*lead, *shape)
                     for piece, shape in zip(torch.split(x, self.sizes, dim=-1), self.shapes))

    def check(self, out: Any, dtype: torch.dtype, what: str = "func(t, y)") -> None:
        parts = out if self.is_tuple and isinstance(out, (tuple, list)) else (out,)
        if self.is_tuple and (not isinstance(out, (tuple, list)) or len(out) != len(self.shapes)):
            raise ValueError(f"{what} must return a tuple of {len(self.shapes)} tensors like y0, "
                             f"got {type(out).__name__}")
        for p, shape in zip(parts, self.shapes):
            if not isinstance(p, Tensor) or p.shape != shape or p.dtype != dtype:
                got = (f"shape {tuple(p.shape)}, dtype {p.dtype}" if isinstance(p, Tensor)
                       else type(p).__name__)
                raise ValueError(f"{what} must return a tensor of y0's shape {tuple(shape)} "
                                 f"and dtype {dtype}, got {got}")


class BatchFunc:
    """Calls the user's ``func`` on the batch in canonical per-sample time; counts NFE.

    ``f(t, x, side)``: ``t`` ``(B,)`` float64 canonical, ``x`` ``(B, n)``; ``side`` (optional
    ``(B,)`` int) moves sample ``b``'s time one unit in the last place to the left (-1) or
    the right (+1) of ``t[b]`` (a ``jump_t`` point). Returns canonical ``dx/dt`` ``(B, n)``.
    """

    def __init__(self, user: Callable, layout: SampleLayout, dtype: torch.dtype,
                 sign: Tensor, counter: Any):
        self.user = user
        self.layout = layout
        self.batch = layout.batch
        self.dtype = dtype
        self.sign = sign  # (B,) float64, +1/-1
        self.counter = counter  # anything with an ``nfe`` counter (the problem's CountedFunc)
        self.forward_only = bool((sign > 0).all())  # host sync: once per solve
        self.sign_col = sign.to(dtype)[:, None]
        self._checked = False

    def user_time(self, t: Tensor) -> Tensor:
        return (self.sign * t).to(self.dtype)

    def __call__(self, t: Tensor, x: Tensor, side: Tensor | None = None) -> Tensor:
        self.counter.nfe += 1
        return self.uncounted(t, x, side)

    def uncounted(self, t: Tensor, x: Tensor, side: Tensor | None = None) -> Tensor:
        """The call without counting (inside a compiled step, which counts outside)."""
        tu = self.user_time(t)
        if side is not None:
            toward = torch.where(side * self.sign > 0, math.inf, -math.inf).to(self.dtype)
            tu = torch.where(side != 0, torch.nextafter(tu, toward), tu)
        out = self.user(tu, self.layout.unflatten(x))
        if not self._checked:
            self.layout.check(out, self.dtype)
            self._checked = True
        out = self.layout.flatten(out)
        return out if self.forward_only else out * self.sign_col


_COMPILED: dict[int, Callable] = {}


def compiled_step(rk: ExplicitRK) -> Callable:
    """``rk.step_batch`` through ``torch.compile`` (``options["compile"]``, no-grad solves): the
    stage loop becomes a few fused kernels. ``func`` is called uncounted inside the compiled
    region (a counter in the graph would force a recompile at every call) and the
    evaluations are counted outside. One compiled function per stepper class, so that later
    solves reuse it."""
    fn = _COMPILED.get(0)
    if fn is None:
        def pure(rk: ExplicitRK, f: Callable, t: Tensor, y: Tensor, f0: Tensor, dt: Tensor,
                 last_side: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
            return ExplicitRK.step_batch(rk, f, t, y, f0, dt, last_side, None)

        fn = _COMPILED[0] = torch.compile(pure, dynamic=False)

    def step(f: BatchFunc, t: Tensor, y: Tensor, f0: Tensor, dt: Tensor,
             last_side: Tensor | None = None, buf: Tensor | None = None,
             ) -> tuple[Tensor, Tensor, Tensor]:
        f.counter.nfe += rk.stages - 1
        return fn(rk, f.uncounted, t, y, f0, dt, last_side)

    return step


def error_control(y: Tensor, y_new: Tensor, err: Tensor, rtol: Any, atol: Any,
                  norm: Callable[[Tensor], Tensor], active: Tensor, dt: Tensor, min_step: float,
                  controller: Any, k: int, ctrl: Any) -> tuple:
    """One iteration's error test and step proposal, per sample: ``(ratio, finite, ok,
    new_dt, ctrl)``. The loop calls it eagerly, or compiled with ``options["compile"]``."""
    scale = torch.maximum(y.abs(), y_new.abs()) * rtol + atol
    ratio = norm(err / scale).double()
    finite = torch.isfinite(ratio)
    ok = active & ((ratio <= 1.0) | ((dt <= min_step) & finite))
    new_dt, ctrl = controller.propose_tensor(dt, ratio, ok, k, ctrl)
    return ratio, finite, ok, new_dt, ctrl


_COMPILED_CONTROL: dict[int, Callable] = {}


def compiled_error_control() -> Callable:
    """:func:`error_control` through ``torch.compile`` (one compiled function, reused)."""
    fn = _COMPILED_CONTROL.get(0)
    if fn is None:
        fn = _COMPILED_CONTROL[0] = torch.compile(error_control, dynamic=False)
    return fn


def batched_norm(user_norm: Any, layout: SampleLayout) -> Callable[[Tensor], Tensor]:
    """The per-sample error norm: RMS per row (for a tuple state the largest of the
    components' RMS, as the joint mixed norm), or the user's ``options["norm"]``, which gets
    the batch's scaled error in ``y0``'s structure and must return ``(B,)``."""
    B = layout.batch
    if user_norm is None:
        if not layout.is_tuple:
            return batched_rms
        sizes = layout.sizes
        return lambda x: torch.stack([batched_rms(p) for p in torch.split(x, sizes, dim=1)
                                      if p.shape[1] > 0], 1).amax(1)

    def norm(x: Tensor) -> Tensor:
        out = user_norm(layout.unflatten(x))
        if not isinstance(out, Tensor) or out.shape != (B,):
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"with options['per_sample'], options['norm'] gets the scaled error "
                             f"of the batch (y0's structure) and must return one value per "
                             f"sample, shape ({B},); got {got}")
        return out

    return norm
