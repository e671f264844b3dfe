"""Fixed-grid Adams methods: Adams–Bashforth (explicit) and Adams–Bashforth–Moulton (PECE).

The weights are those of the variable-step Adams formulas: the history of derivatives is
interpolated by a polynomial and integrated exactly over the step (Hairer, Nørsett &
Wanner, *Solving ODEs I*, §III.5), so any grid works, not only a uniform one. The first
``order - 1`` steps, before enough history exists, are taken with the classical RK4 so that
the start-up does not lower the global order.

Per sample (``dt`` a ``(B,)`` tensor) each lane's history holds its own grid, its weights
computed with one lane's operations (bit for bit); a lane with ``dt = 0`` gets zero weights
and keeps its history. The lanes of a per-sample fixed grid step in lockstep from the first
iteration (a lane that stops never resumes): one history length serves all lanes.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..tableaus import RK4_CLASSIC
from .base import Func, StepResult
from .explicit_rk import ExplicitRK

__all__ = ["Adams", "AdamsCarry"]

# Three-point Gauss–Legendre rule on [-1, 1]: exact for polynomials up to degree 5.
_GL_NODES = (-math.sqrt(0.6), 0.0, math.sqrt(0.6))
_GL_WEIGHTS = (5 / 9, 8 / 9, 5 / 9)


class AdamsCarry(NamedTuple):
    """History carried between steps: the most recent grid times and derivatives."""

    times: tuple[float, ...]
    derivs: tuple[Tensor, ...]


def integration_weights(nodes: tuple, a: Any, b: Any, dtype: torch.dtype | None = None
                        ) -> list:
    """``w_j = ∫_a^b L_j(s) ds`` for the Lagrange basis on ``nodes`` (at most 6 nodes):
    Python floats, or per sample (``a`` a ``(B,)`` tensor) :func:`lane_weights` in ``dtype``."""
    if isinstance(a, Tensor):
        return lane_weights(nodes, a, b, dtype)
    half, mid = 0.5 * (b - a), 0.5 * (a + b)
    weights = [0.0] * len(nodes)
    for x, w in zip(_GL_NODES, _GL_WEIGHTS):
        s = mid + half * x
        for j, tj in enumerate(nodes):
            basis = 1.0
            for m, tm in enumerate(nodes):
                if m != j:
                    basis *= (s - tm) / (tj - tm)
            weights[j] += w * half * basis
    return weights


def lane_weights(nodes: tuple[Tensor, ...], a: Tensor, b: Tensor, dtype: torch.dtype
                 ) -> list[Tensor]:
    """:func:`integration_weights` per lane (``nodes`` ``(B,)`` each, ``[a, b]`` per lane) as
    ``(B, 1)`` columns of ``dtype``, zero where ``a == b`` (a lane that does not step).

    The same operations in the same order as :func:`integration_weights` (a diagonal factor
    of 1 multiplies exactly), so each lane's weights are bit for bit those of its own solve.
    """
    t = torch.stack(nodes, 1)  # (B, k)
    x, w = _quadrature(t.device)
    half, mid = 0.5 * (b - a), 0.5 * (a + b)
    s = mid[:, None] + half[:, None] * x  # (B, G): every quadrature point at once
    # fac[:, g, j, m] = (s_g - t_m) / (t_j - t_m), and 1 where m = j
    fac = (s[:, :, None, None] - t[:, None, None, :]).div(t[:, None, :, None] - t[:, None, None, :])
    fac.diagonal(dim1=2, dim2=3).fill_(1.0)
    basis = fac[..., 0]
    for m in range(1, t.shape[1]):
        basis = basis * fac[..., m]
    terms = (w * half[:, None])[:, :, None] * basis  # (B, G, k)
    weights = terms[:, 0] + terms[:, 1] + terms[:, 2]  # (in the quadrature's order)
    # (duplicate nodes of a lane that never stepped would give nan: zero, not nan * 0)
    weights = torch.where((b > a)[:, None], weights, 0.0).to(dtype)
    return list(weights.unsqueeze(-1).unbind(1))


@functools.cache
def _quadrature(device: torch.device) -> tuple[Tensor, ...]:
    """The Gauss–Legendre nodes and weights as float64 tensors on ``device``."""
    return tuple(torch.tensor(v, dtype=torch.float64, device=device)
                 for v in (_GL_NODES, _GL_WEIGHTS))


def _weighted_sum(y: Tensor, derivs: tuple[Tensor, ...], weights: list) -> Tensor:
    """``y + Σ w_j f_j``, added in order (``w_j`` a float, or a ``(B, 1)`` column)."""
    for w, fj in zip(weights, derivs):
        y = torch.addcmul(y, w, fj) if isinstance(w, Tensor) else torch.add(y, fj, alpha=w)
    return y


class Adams:
    """Adams–Bashforth of order ``order`` (1–4) on any grid: explicit with ``max_iters = 0``,
    else the predictor of an Adams–Moulton corrector (PECE, iterated).

    The corrector interpolates ``order`` derivatives including the new point and is
    applied ``max_iters`` times (each a function evaluation), stopping early once the
    correction no longer changes the state at the working precision.

    References:
        Hairer, Nørsett & Wanner, *Solving Ordinary Differential Equations I*, §III.1
        (predictor–corrector schemes), §III.5.
    """

    #: takes one step size per lane (a per-sample batch)
    per_sample = True

    def __init__(self, order: int = 4, max_iters: int = 0):
        # (options.validate_options checks max_order and max_iters)
        self.order = order
        self.max_iters = max_iters
        self._starter = ExplicitRK(RK4_CLASSIC)

    # Interpolation and the end derivative are those of any fixed-grid method: the loop
    # uses linear or cubic Hermite on the step's end values.
    steps_to_outputs = False
    needs_f_end_for_dense = True

    def workspace(self, y0: Tensor) -> None:
        return None

    def init(self, y0: Tensor) -> AdamsCarry:
        """The empty history: the first ``order - 1`` steps are RK4 start-up steps."""
        return AdamsCarry((), ())

    def step(self, f: Func, t: Any, y: Tensor, f0: Tensor, dt: Any, state: AdamsCarry,
             ws: None = None, *, with_error: bool = False, f_last: Func | None = None,
             ) -> StepResult:
        """One step with the history ``state``; ``f0 = f(t, y)``. ``t``, ``dt``: floats, or
        ``(B,)`` tensors per sample (``y`` ``(B, n)``).

        ``f_last`` evaluates at the step's end instead of ``f`` (``perturb``: just before it).
        The new history is ``result.state``.
        """
        times, derivs = (t, *state.times)[: self.order], (f0, *state.derivs)[: self.order]
        if isinstance(dt, Tensor):
            # Per lane the new history where the lane stepped, else its old entries (the
            # length is one for all lanes; the entry it grows by is never read for a stopped
            # lane).
            n, moved = len(state.times), dt > 0
            times = tuple(torch.where(moved, a, b) for a, b in zip(times, state.times)) + times[n:]
            derivs = tuple(torch.where(moved[:, None], a, b)
                           for a, b in zip(derivs, state.derivs)) + derivs[n:]
        new_state = AdamsCarry(times, derivs)
        if len(times) < self.order:
            # Start-up: not enough history yet for the requested order.
            y_new = self._starter.step(f, t, y, f0, dt, None, None, with_error=False,
                                       f_last=f_last).y_new
            return StepResult(y_new, None, (f0,), new_state)
        y_new = _weighted_sum(y, derivs, integration_weights(times, t, t + dt, y.dtype))
        if self.max_iters:
            y_new = self._correct(f_last or f, t, y, dt, y_new, new_state)
        if isinstance(dt, Tensor) and torch.is_grad_enabled():  # a lane at rest stays at y
            y_new = torch.where((dt == 0)[:, None], y, y_new)
        return StepResult(y_new, None, (f0,), new_state)

    def _correct(self, f_end: Func, t: Any, y: Tensor, dt: Any, y_pred: Tensor,
                 carry: AdamsCarry) -> Tensor:
        """The Adams–Moulton corrector (``max_iters > 0``)."""
        t_new = t + dt
        nodes = (t_new, *carry.times[: self.order - 1])
        w = integration_weights(nodes, t, t_new, y.dtype)
        base = _weighted_sum(y, carry.derivs[: self.order - 1], w[1:])
        y_new = y_pred
        for _ in range(self.max_iters):
            y_next = _weighted_sum(base, (f_end(t_new, y_new),), w[:1])
            with torch.no_grad():  # (per sample: every lane converged; a converged lane's
                # value stays put while the others iterate)
                converged = bool(torch.equal(y_next, y_new))  # host sync: corrector test
            y_new = y_next
            if converged:
                break
        return y_new
