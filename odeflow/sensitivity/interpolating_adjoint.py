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
from .adjoint_jacobian import Trajectory, flat_grads

__all__ = ["interpolating_dynamics", "LanesQuadrature"]


def interpolating_dynamics(func: Any, params: tuple[Tensor, ...], trajectory: Trajectory,
                           lanes: bool = False) -> Callable:
    """``(a, g)`` dynamics in the forward's canonical time ``τ`` (the backward solve's user
    time), with ``y(τ)`` from ``trajectory``. Per sample (``lanes``) the state is ``(a,)``,
    one lane per sample, ``τ`` is ``(B,)`` and ``g`` is a quadrature outside the state
    (:class:`LanesQuadrature`)."""
    sign = func.sign
    last: list[Any] = [None, None]  # τ and y(τ): a stage's Newton iterations share τ

    def aug(tau: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        a = state[0]
        if lanes:
            # A lane that does not step (a failed sample) may read nan: its result is unused.
            if last[0] is None or not torch.equal(tau, last[0]):  # host sync: one a call
                last[:] = tau.clone(), torch.nan_to_num(trajectory(tau.double()))
        else:
            key = float(tau)  # host sync: the interpolant is chosen on the host
            if key != last[0]:
                last[:] = key, trajectory(key)
        with torch.enable_grad():
            y_in = last[1].detach().requires_grad_(True)
            dy = func(tau.double(), y_in) if lanes else func.at(sign * tau, y_in)
            wrt = (y_in,) if lanes else (y_in, *params)
            # retain_graph: as in adjoint.py (a graph func shares across evaluations). Per
            # sample the stepper's Jacobian is taken by differentiating this system in a
            # (a requires grad then): the product keeps its graph. A func that reads neither
            # y nor params passes no gradient.
            vjps = (torch.autograd.grad(dy, wrt, -a, allow_unused=True, retain_graph=True,
                                        create_graph=lanes and a.requires_grad)
                    if dy.requires_grad else (None,) * len(wrt))
        da = vjps[0] if vjps[0] is not None else torch.zeros_like(a)
        if len(state) == 1:
            return (da,)
        return da, flat_grads(vjps[1:], params, a.dtype)

    return aug


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
        self.pieces: list = []  # the loop's Hooks.dense
        self.grads: list[Tensor | None] = [None] * len(params)

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
                if not isinstance(total, Tensor) or not total.requires_grad:
                    continue
                # retain_graph: a graph func shares across flushes (w = p * p made outside)
                got = torch.autograd.grad(total, self.params, allow_unused=True,
                                          retain_graph=True)
            self.grads = add_grads(self.grads, got)
