"""Dense output of a per-sample solve: each sample's solution at any time of its own span.

The per-sample loop keeps, for every iteration that accepted at least one sample, the
iteration's start times, step sizes, acceptance mask and the detached data of its batched
interpolant (states, stages, end derivatives). :class:`PerSampleDense` finds, for every
sample, the accepted step that holds the asked time and evaluates the batched interpolant
there in one gather (dopri8, without an interpolant of its order, re-steps from the step's
start instead); nothing is kept unless ``dense=True``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["PerSampleDense"]


class PerSampleDense:
    """Each sample's dense solution after ``solve(..., dense=True, options={"per_sample":
    True})``: ``sol.evaluate(t)`` / ``sol.derivative(t)``.

    ``t`` may be a scalar or a 1-D tensor of times shared by every sample (result
    ``(B, ...)`` or ``(T, B, ...)``), or a ``(B, T)`` tensor, one row per sample (result
    ``(T, B, ...)``). A time outside a sample's solved span is a ``ValueError``. Values are
    those of each step's interpolant (no gradient flows through them).
    """

    def __init__(self, rk: Any, pieces: list[tuple], sign: Tensor, grid: Tensor, layout: Any,
                 f: Any = None):
        if not pieces:
            raise ValueError("dense output needs at least one accepted step")
        self._rk, self._sign, self._layout, self._f = rk, sign, layout, f
        t, dt, ok, y, y_new, K, f_new = zip(*pieces)
        self._t = torch.stack(t)  # (I, B) canonical step starts
        self._dt = torch.stack(dt)  # (I, B)
        self._ok = torch.stack(ok)  # (I, B)
        self._y, self._y_new = torch.stack(y), torch.stack(y_new)  # (I, B, n)
        self._K = torch.stack(K)  # (I, s, B, n)
        self._f_new = torch.stack(f_new) if f_new[0] is not None else None
        self._lo, self._hi = grid[:, 0], grid[:, -1]

    def evaluate(self, t: Tensor | float) -> Any:
        """The solution at ``t`` (see the class docstring for the shapes)."""
        return self._at(t, derivative=False)

    def derivative(self, t: Tensor | float) -> Any:
        """``dy/dt`` of the dense output at ``t``."""
        return self._at(t, derivative=True)

    @torch.no_grad()
    def _at(self, t: Tensor | float, derivative: bool) -> Any:
        B = self._t.shape[1]
        times = torch.as_tensor(t, dtype=torch.float64, device=self._t.device).detach()
        if times.ndim > 2 or (times.ndim == 2 and times.shape[0] != B):
            raise ValueError(f"t must be a scalar, a 1-D tensor of shared times or a ({B}, T) "
                             f"tensor of per-sample times, got shape {tuple(times.shape)}")
        rows = times.T if times.ndim == 2 else times.reshape(-1, 1).expand(-1, B)
        out = torch.stack([self._one(self._sign * row, derivative) for row in rows])
        if times.ndim == 0:
            return self._layout.unflatten(out[0])
        return self._layout.unflatten(out, (out.shape[0],))

    def _one(self, tc: Tensor, derivative: bool) -> Tensor:
        """Canonical times ``tc`` ``(B,)``, one per sample -> flat values ``(B, n)``."""
        slack = 1e-12 * torch.maximum(self._lo.abs(), self._hi.abs()).clamp(min=1.0)
        outside = (tc < self._lo - slack) | (tc > self._hi + slack)
        if bool(outside.any()):  # host sync: once per asked time
            b = int(outside.nonzero()[0, 0])
            span = sorted((float(self._sign[b] * self._lo[b]), float(self._sign[b] * self._hi[b])))
            raise ValueError(f"t={float(self._sign[b] * tc[b])!r} is outside sample {b}'s solved "
                             f"span [{span[0]!r}, {span[1]!r}]")
        end = self._t + self._dt
        holds = self._ok & (self._t <= tc) & (tc <= end)
        # the first accepted step holding tc (a time on a boundary belongs to the earlier)
        idx = holds.to(torch.int8).argmax(0)
        found = holds.any(0)
        # a time at the very start of a span: the first accepted step of that sample
        first = self._ok.to(torch.int8).argmax(0)
        idx = torch.where(found, idx, first)
        cols = torch.arange(tc.shape[0], device=tc.device)
        dt = self._dt[idx, cols]
        theta = ((tc - self._t[idx, cols]) / torch.where(dt > 0, dt, 1.0)).clamp(0.0, 1.0)
        K = self._K[idx, :, cols].transpose(0, 1)  # (s, B, n)
        f_new = self._f_new[idx, cols] if self._f_new is not None else None
        y = self._y[idx, cols]
        if self._f is not None and self._rk.steps_to_outputs:
            # dopri8 has no interpolant of its order: re-step from each step's start (as
            # the joint dense output does), one batched step per asked time.
            t0 = self._t[idx, cols]
            value = self._rk.step_batch(self._f, t0, y, K[0], theta * dt)[0]
            if derivative:
                return self._f(t0 + theta * dt, value) * self._sign.to(K.dtype)[:, None]
            return value
        args = (y, self._y_new[idx, cols], K, f_new, dt)
        if derivative:
            return self._rk.batch_derivative(*args, theta) * self._sign.to(K.dtype)[:, None]
        return self._rk.batch_evaluate(*args, theta)
