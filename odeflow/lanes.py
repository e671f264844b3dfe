"""The time arithmetic of the one loop: what differs between a joint and a per-sample solve.

A solve advances one or more *lanes*. A joint solve is one lane whose state is the whole
flat vector ``(n,)``; a per-sample solve (``options={"per_sample": True}``) has one lane
per sample, its state a ``(B, n)`` matrix with a row per sample. Everything the loop does
with times, step sizes, accept/reject decisions, statuses and counters goes through a
clock, so that the loop in ``integrate.py`` is written once:

* :class:`SharedClock` keeps every lane quantity as a Python ``float``/``int``/``bool``
  (one lane): scalar step-size arithmetic is far cheaper in Python than on 0-dim tensors,
  and the only host synchronisation is reading the error norm.
* :class:`LaneClock` keeps them as ``(B,)`` tensors; decisions are ``torch.where`` masks,
  and :meth:`LaneClock.decide` reads every decision an iteration needs in one transfer.

Each clock also writes the outputs (a list of states against one ``(T, B, n)`` tensor); the
loop branches on the clock only where the work differs in kind (the output buffer, how an
iteration's decisions are read, the non-finite test, events, the statistics).
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["SharedClock", "LaneClock", "Clock"]

#: The output passes of a step evaluated at once hold at most about this many state
#: elements (per sample, :meth:`LaneClock.write_outputs`).
PASS_CHUNK = 1 << 20


class SharedClock:
    """One lane: times, step sizes and decisions as Python scalars (a joint solve, or a
    per-sample batch of one sample: that sample's solve is its joint solve).

    ``lane_time``: ``func`` gets its time as a ``(1,)`` tensor, as a per-sample ``func``
    expects, instead of a 0-dim one.
    """

    per_sample = False
    batch = None

    def __init__(self, grid: Sequence[float], sign: float, real_dtype: torch.dtype,
                 device: torch.device, lane_time: bool = False):
        self.grid = tuple(grid)  # canonical increasing output times
        self.t0, self.t_end, self.n_out = self.grid[0], self.grid[-1], len(self.grid)
        self.sign = sign
        self.real_dtype = real_dtype
        self.device = device
        self.lane_time = lane_time

    # ------------------------------------------------------------------ the lanes' values
    def full(self, value: Any) -> Any:
        return value

    @staticmethod
    def where(mask: bool, a: Any, b: Any) -> Any:
        return a if mask else b

    rows = where  # ``where`` for state-shaped values (one lane: the whole vector)

    @staticmethod
    def row_mask(mask: bool, like: Tensor) -> bool:
        return mask

    gather = staticmethod(operator.getitem)  # table[index]
    ulp = staticmethod(math.ulp)

    @staticmethod
    def abs_max(a: float, b: float) -> float:
        return max(abs(a), abs(b))

    @staticmethod
    def clip(x: float, lo: float, hi: float) -> float:
        return min(max(x, lo), hi)

    @staticmethod
    def rows_finite(x: Tensor) -> bool:
        return bool(torch.isfinite(x).all())  # host sync: setup and failure paths only

    @staticmethod
    def flags(*masks: bool) -> list[bool]:
        return [bool(m) for m in masks]

    @staticmethod
    def drop(a: bool, b: bool) -> bool:
        """``a and not b`` where ``b`` implies ``a``."""
        return a and not b

    def write_outputs(self, stepper: Any, ys: list, n_pass: int, hit: bool, interior: bool,
                      out_idx: int, next_out: None, ok: bool, t: float, t_new: float, dt: float,
                      y: Tensor, y_new: Tensor, stages: Any, f_new: Any, ws: Any, rec: Any
                      ) -> tuple[int, None]:
        """Append to ``ys`` every output time the accepted step passed, from its dense
        output (``n_pass``, ``interior``, ``next_out`` and ``ok`` serve the lanes' form)."""
        while hit:
            t_out = self.grid[out_idx]
            if t_out == t_new:
                ys.append(y_new)
                theta = 1.0
            else:
                theta = (t_out - t) / dt
                ys.append(stepper.interpolate(y, y_new, dt, stages, f_new, theta, ws))
            if rec is not None:
                rec.outputs.append((None, out_idx, theta))
            out_idx += 1
            hit = out_idx < self.n_out and self.grid[out_idx] <= t_new
        return out_idx, None

    # ----------------------------------------------------------------- user-facing values
    def user_time(self, t: float) -> Tensor:
        """Canonical time -> the 0-dim (or ``(1,)``) tensor ``func`` receives."""
        if self.lane_time:
            return torch.full((1,), self.sign * t, dtype=self.real_dtype, device=self.device)
        return torch.scalar_tensor(self.sign * t, dtype=self.real_dtype, device=self.device)


class LaneClock:
    """``B`` lanes: times, step sizes and decisions as ``(B,)`` tensors (per-sample)."""

    per_sample = True

    def __init__(self, grid: Tensor, sign: Tensor, real_dtype: torch.dtype):
        self.grid = grid  # (B, T) float64 canonical output times, rows increasing
        self.sign = sign  # (B,) float64 +-1
        self.batch, self.n_out = grid.shape
        self.t_end = grid[:, -1]
        self.real_dtype = real_dtype
        self.device = grid.device
        # host sync: once per solve (both flags in one read)
        self.forward_only, self._from_nonneg = (
            bool(v) for v in torch.stack(((sign > 0).all(), (grid[:, 0] >= 0).all())).tolist())
        self._consts: dict[tuple, Tensor] = {}
        self._sign_col: dict[torch.dtype, Tensor] = {}
        self._row_of_lane = torch.arange(self.batch, device=self.device)
        self._inf = torch.full((self.batch,), math.inf, dtype=torch.float64, device=self.device)
        # func gets the canonical time itself when it is the user's
        self._same_time = self.forward_only and real_dtype == torch.float64
        self._converted: tuple = (None, -1, None)  # (times, their version, converted)

    @property
    def t0(self) -> Tensor:
        return self.grid[:, 0].clone()

    def full(self, value: Any) -> Tensor:
        dtype = (torch.bool if isinstance(value, bool) else torch.long if isinstance(value, int)
                 else torch.float64)
        return torch.full((self.batch,), value, dtype=dtype, device=self.device)

    def where(self, mask: Tensor, a: Any, b: Any) -> Tensor:
        if isinstance(b, Tensor) and not isinstance(a, Tensor):
            a = self._const(a, b)
        elif isinstance(a, Tensor) and not isinstance(b, Tensor):
            b = self._const(b, a)
        return torch.where(mask, a, b)

    def _const(self, value: Any, like: Tensor) -> Any:
        """A Python scalar as a cached 0-dim tensor of ``like``'s dtype when that is the
        dtype ``where`` gives it anyway (a scalar becomes a kernel call per use)."""
        kind = (bool if like.dtype == torch.bool else int if not like.is_floating_point()
                else float)
        if type(value) is not kind:
            return value
        key = (value, like.dtype)
        const = self._consts.get(key)
        if const is None:
            const = self._consts[key] = torch.tensor(value, dtype=like.dtype, device=like.device)
        return const

    @staticmethod
    def row_mask(mask: Tensor, like: Tensor) -> Tensor:
        """``mask`` ``(B,)`` copied out to ``like``'s shape ``(B, n)`` (up to 8 columns a stack
        of ``n`` masks, twice as fast): a ``where`` that broadcasts a ``(B, 1)`` mask over few
        columns is several times slower than this and a ``where`` of same-shaped tensors."""
        if 0 < like.shape[-1] <= 8:
            return torch.stack((mask,) * like.shape[-1], -1)
        return torch.empty(like.shape, dtype=torch.bool, device=like.device).copy_(mask[:, None])

    def rows(self, mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
        return torch.where(self.row_mask(mask, a), a, b)

    @staticmethod
    def gather(table: Tensor, index: Tensor) -> Tensor:
        return table.gather(1, index[:, None])[:, 0]

    def ulp(self, x: Tensor) -> Tensor:
        inf = self._inf if x.shape == self._inf.shape else torch.full_like(x, math.inf)
        return torch.nextafter(x, inf) - x

    def abs_max(self, a: Tensor, b: Tensor) -> Tensor:
        """``max(|a|, |b|)`` for ``a <= b`` (a step's start and end): ``max(-a, b)``, or
        ``b`` when every lane starts at a time >= 0."""
        return b if self._from_nonneg else torch.maximum(-a, b)

    @staticmethod
    def clip(x: Tensor, lo: float, hi: float) -> Tensor:
        return x.clamp(min=lo, max=hi)

    @staticmethod
    def rows_finite(x: Tensor) -> Tensor:
        return torch.isfinite(x).all(-1)

    @staticmethod
    def flags(*masks: Tensor) -> list[bool]:
        """``any`` of each mask, read in one transfer."""
        return [bool(v) for v in torch.stack(masks).amax(1).tolist()]  # host sync

    @staticmethod
    def drop(a: Tensor, b: Tensor) -> Tensor:
        """``a & ~b`` where ``b`` implies ``a``: one kernel."""
        return a ^ b

    @staticmethod
    def decide(masks: Sequence[Tensor], counts: Sequence[Tensor] = ()) -> list[Any]:
        """``any`` of each ``(B,)`` mask (as ``amax``, half the cost), then the 0-dim
        ``counts``, in one transfer and three or four kernels (an iteration's decisions)."""
        # host sync: one small transfer per iteration decides outputs and termination
        out = torch.stack(list(masks)).amax(1)
        if counts:
            out = torch.cat((out.long(), torch.stack(list(counts))))
        values = out.tolist()
        return [bool(v) for v in values[:len(masks)]] + values[len(masks):]

    # ------------------------------------------------------------------------ outputs
    def n_passed(self, t_new: Tensor) -> Tensor:
        """How many output times of each lane are ``<= t_new``: a compare and a sum while
        the ``(B, T)`` grid is small (``searchsorted`` runs threaded, ~10x slower there)."""
        if self.grid.numel() <= 1 << 16:
            return (self.grid <= t_new[:, None]).sum(1)
        return torch.searchsorted(self.grid, t_new[:, None], right=True)[:, 0]

    @functools.cached_property
    def grid_inf(self) -> Tensor:
        """The output times, then ``inf`` (a lane's next output once all are written)."""
        return torch.cat((self.grid, torch.full_like(self.grid[:, :1], math.inf)), 1)

    def write_outputs(self, stepper: Any, ys: Tensor, n_pass: int, hit: Tensor,
                      interior: bool, out_idx: Tensor, next_out: Tensor, ok: Tensor, t: Tensor,
                      t_new: Tensor, dt: Tensor, y: Tensor, y_new: Tensor, stages: Any,
                      f_new: Any, ws: Any, rec: Any) -> tuple[Tensor, Tensor]:
        """The loop's output passes: ``n_pass``, the most output times a lane passed (read
        with the iteration's decisions). Pass ``p`` writes output ``out_idx + p`` of the
        lanes that passed it into ``ys`` ``(T + 1, B, n)``; the passes are ``(P, B)`` tensors
        evaluated at once (in chunks of about :data:`PASS_CHUNK` state elements), and a lane
        with nothing to write in a pass writes into its spare row ``ys[T]`` (one
        ``index_put``, no mask, no sync).

        Without ``interior`` every lane that hit landed on its output time and takes
        ``y_new`` (no interpolant); with it, the step's dense output at ``theta``.
        """
        piece = stepper.interpolant(t, dt, y, y_new, stages, f_new) if interior else None
        n_out = ys.shape[0] - 1
        flat = ys.view(-1, ys.shape[-1])
        chunk = max(1, PASS_CHUNK // max(y.numel(), 1))
        step = torch.where(dt > 0, dt, 1.0)
        written: Any = 0
        for lo in range(0, n_pass, chunk):
            if n_pass == 1:  # (the iteration's own hit and next output time)
                index, times, passed = out_idx[None], next_out[None], hit[None]
            else:
                index = out_idx + torch.arange(lo, min(lo + chunk, n_pass),
                                               device=self.device)[:, None]
                times = self.grid_inf.gather(1, index.clamp(max=n_out).T).T
                passed = ok & (times <= t_new)
            value = y_new
            if piece is not None or rec is not None:
                theta = torch.where(passed, (times - t) / step, 1.0)
                if piece is not None:
                    value = torch.where((times == t_new)[..., None], y_new, piece.evaluate(theta))
                if rec is not None:
                    rec.outputs.extend(zip(passed, index.clamp(max=n_out - 1), theta))
            rows = torch.where(passed, index, n_out) * self.batch + self._row_of_lane
            flat[rows.reshape(-1)] = value.reshape(-1, flat.shape[-1])
            written = written + passed.sum(0)
        out_idx = out_idx + written
        return out_idx, self.gather(self.grid_inf, out_idx)

    # ----------------------------------------------------------------- user-facing values
    def user_time(self, t: Tensor) -> Tensor:
        if not self.forward_only:
            return (self.sign * t).to(self.real_dtype)
        if self._same_time:  # (no kernel at all when the state is float64)
            return t
        base = t._base
        if (base is None or t.requires_grad or base.storage_offset() or not base.is_contiguous()
                or base.numel() > 16 * t.numel() or torch.compiler.is_compiling()):
            return t.to(self.real_dtype)
        # A view of a few times at once (a step's stage times): convert them all when the
        # first is asked for, and the others are views of that.
        if self._converted[0] is not base or self._converted[1] != base._version:
            self._converted = (base, base._version, base.to(self.real_dtype))
        return self._converted[2].as_strided(t.shape, t.stride(), t.storage_offset())

    def user_float(self, t: Any, lane: int = 0) -> float:
        return float(self.sign[lane] * t[lane]) if isinstance(t, Tensor) else float(t)

    def sign_column(self, dtype: torch.dtype) -> Tensor:
        col = self._sign_col.get(dtype)
        if col is None:
            col = self._sign_col[dtype] = self.sign.to(dtype)[:, None]
        return col


Clock = SharedClock | LaneClock
