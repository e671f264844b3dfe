"""The adjoint of a stiff solve: ``y`` from the forward dense output, not solved backwards.

The plain adjoint re-solves ``y`` backwards in time beside ``a`` and ``g``. For a stiff
problem that is unstable: the eigenvalues of ``J`` that make the forward solve stiff make
the backward ``y`` grow like ``exp(|λ| t)``, and the gradient comes out wrong (Kim, Ji,
Deng, Ma & Rackauckas, "Stiff neural ordinary differential equations", Chaos 31, 2021,
Section III). After an implicit forward solve the gradient therefore reads ``y(τ)`` from the
forward solve's dense output (kept, detached, one interpolant per step) and integrates
only ``(a, g)`` backwards::

    da/dτ = -J(τ, y(τ))ᵀ a        dg/dτ = -(∂f/∂θ)ᵀ a

Memory is one interpolant per forward step instead of O(1); ``a``'s equation is the
adjoint of a stable one, hence stable backwards.

Its Jacobian is exact and cheap in blocks (``adjoint_jacobian.py``). Per sample, ``g`` is
a quadrature over the backward steps' dense output instead (:class:`LanesQuadrature`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from . import add_grads
from .adjoint_jacobian import Trajectory

__all__ = ["trajectory_reader", "LanesQuadrature"]


def trajectory_reader(trajectory: Trajectory, lanes: bool) -> Callable[[Tensor], Tensor]:
    """``τ -> y(τ)`` for the backward dynamics (``adjoint.py``), read from ``trajectory`` at
    the forward's canonical time ``τ`` (per sample ``(B,)``, one lane per sample)."""
    last: list[Any] = [None, None]  # τ and y(τ): a stage's Newton iterations share τ

    def y_at(tau: Tensor) -> Tensor:
        if lanes:
            # A lane that does not step (a failed sample) may read nan: its result is unused.
            if last[0] is None or not torch.equal(tau, last[0]):  # host sync: one a call
                last[:] = tau.clone(), torch.nan_to_num(trajectory(tau.double()))
        else:
            key = float(tau)  # host sync: the interpolant is chosen on the host
            if key != last[0]:
                last[:] = key, trajectory(key)
        return last[1]

    return y_at


# ------------------------------------------------------------------------------- per sample
#: Gauss–Legendre nodes on [0, 1] and weights (3 points: exact for degree 5, above the
#: order-4 dense outputs the quadrature reads).
_GAUSS = ((0.5 - 0.1 * 15 ** 0.5, 5 / 18), (0.5, 8 / 18), (0.5 + 0.1 * 15 ** 0.5, 5 / 18))


class LanesQuadrature:
    """Per sample, the parameter gradient ``∫ a ∂f/∂θ`` of the interpolating adjoint,
    summed over the samples: the loop's dense hook collects the accepted backward steps
    (``(interpolant, accepted)``); :meth:`flush` integrates ``a`` over them by 3-point
    Gauss–Legendre on each step's own dense output, with ``y(τ)`` from ``trajectory``
    (outside the error control, as the explicit per-sample adjoint's seminorm)."""

    def __init__(self, f: Any, params: tuple[Tensor, ...], trajectory: Trajectory):
        self.f, self.params, self.trajectory = f, params, trajectory
        self.pieces: list = []
        self.grads: list[Tensor | None] = [None] * len(params)

    def append(self, piece: tuple) -> None:
        """The loop's ``Hooks.dense``: keep an accepted step, integrating every 64 of them
        (the backward solve's memory stays bounded)."""
        self.pieces.append(piece)
        if len(self.pieces) >= 64:
            self.flush()

    def flush(self) -> None:
        """Add the collected steps' share to ``grads`` and forget them."""
        pieces, self.pieces[:] = list(self.pieces), []
        if not self.params:
            return
        for piece, ok in pieces:
            w = torch.where(ok, piece.dt, 0.0)
            use = ok[:, None]  # where, not a zero weight: a skipped lane may be nan
            with torch.enable_grad():
                total = 0.0
                for theta, weight in _GAUSS:
                    a = piece.evaluate(theta)
                    tau = -(piece.t + theta * piece.dt)  # the backward solve runs in -τ
                    dy = self.f(tau, torch.nan_to_num(self.trajectory(tau)))
                    total = total + torch.where(
                        use, dy * torch.where(use, (weight * w)[:, None].to(a.dtype) * a, 0.0),
                        0.0).sum()
                if not total.requires_grad:  # func reads no parameter
                    continue
                # retain_graph: a graph func shares across flushes (w = p * p made outside)
                got = torch.autograd.grad(total, self.params, allow_unused=True,
                                          retain_graph=True)
            self.grads = add_grads(self.grads, got)
