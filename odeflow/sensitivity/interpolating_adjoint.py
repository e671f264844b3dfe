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

Its Jacobian is exact and cheap in blocks: ``[[-Jᵀ, 0], [-(∂f/∂θ)ᵀ, 0]]``. The linear
solver here factorises the ``n × n`` block ``I + hγ Jᵀ`` (one LU, any number of
parameters) and handles the ``g`` block by one vector–Jacobian product per solve, so
Rosenbrock methods keep their order in the backward solve too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..linalg import DenseFactor, ImplicitCounts, KrylovSolver, gmres

__all__ = ["interpolating_dynamics", "InterpolatingAdjointSolver"]

#: ``y(τ)`` of the forward solve at canonical time ``τ`` (its dense output's ``canonical``).
Trajectory = Callable[[float], Tensor]


def interpolating_dynamics(func: Any, params: tuple[Tensor, ...], trajectory: Trajectory,
                           flat_real: Callable[[Tensor], Tensor]) -> Callable:
    """``(a, g)`` dynamics in the forward's canonical time ``τ`` (the backward solve's user
    time), with ``y(τ)`` from ``trajectory``."""
    sign = func.sign

    def aug(tau: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        a = state[0]
        y = trajectory(float(tau))  # host sync: the interpolant is chosen on the host
        with torch.enable_grad():
            y_in = y.detach().requires_grad_(True)
            dy = func.at(sign * tau, y_in)
            # retain_graph: func may use a tensor computed once outside it from a parameter
            # (w = p * p, spline coefficients); that shared graph is walked at every
            # evaluation, as torchdiffeq does. dy's own graph is freed with dy either way.
            vjps = torch.autograd.grad(dy, (y_in, *params), -a, allow_unused=True,
                                        retain_graph=True)
        da = vjps[0] if vjps[0] is not None else torch.zeros_like(a)
        if len(state) == 1:
            return (da,)
        dg = torch.cat([flat_real(v if v is not None else torch.zeros_like(p)).to(a.dtype)
                        for v, p in zip(vjps[1:], params)])
        return da, dg

    return aug


@dataclass
class _AdjointJacobian:
    tau: float
    y: Tensor
    jac: Any  # J of the forward func at (τ, y(τ)): dense, or a Krylov operator
    orient: float  # the backward solve's canonical time runs as orient · τ


@dataclass
class _AdjointFactor:
    """``M = [[I + hγ o Jᵀ, 0], [hγ o (∂f/∂θ)ᵀ, I]]`` (``o`` the orientation)."""

    a_part: Any  # DenseFactor of I + hγ o Jᵀ, or None with Krylov
    op: Any  # Krylov operator (or None)
    krylov: KrylovSolver | None
    vjp_theta: Callable[[Tensor], Tensor] | None  # x -> (∂f/∂θ)ᵀ x, flat
    n: int
    h_gamma: float
    orient: float
    counts: ImplicitCounts

    def solve(self, b: Tensor) -> Tensor:
        n, hg, o = self.n, self.h_gamma, self.orient
        if self.a_part is not None:
            x_a = self.a_part.solve(b[:n])
        else:
            assert self.krylov is not None
            k = self.krylov
            x_a, iters = gmres(lambda v: v + hg * o * self.op.rmatvec(v), b[:n], tol=k.tol,
                               restart=k.restart, max_iters=k.max_iters)
            self.counts.n_linear_iters += iters
            self.counts.n_linear_failures += iters >= k.max_iters  # see KrylovFactor._count
        if self.vjp_theta is None:
            return x_a
        return torch.cat([x_a, b[n:] - (hg * o) * self.vjp_theta(x_a)])

    def solve_transpose(self, b: Tensor) -> Tensor:
        raise NotImplementedError("the backward solve is not differentiated")


class InterpolatingAdjointSolver:
    """A :class:`~odeflow.linalg.LinearSolver` for the ``(a, g)`` backward solve.

    Args:
        forward_func: the forward problem's counted ``func``.
        trajectory: ``y(τ)`` from the forward dense output.
        n: the size of the flat forward state.
        params: the parameters ``g`` is the gradient of (may be empty).
        inner: the forward solve's linear solver (it provides ``J``).
        flat_real: flattens a parameter-shaped gradient as the state's ``g`` does.
    """

    def __init__(self, forward_func: Any, trajectory: Trajectory, n: int,
                 params: tuple[Tensor, ...], inner: Any, flat_real: Callable):
        self.forward_func, self.trajectory, self.n = forward_func, trajectory, n
        self.params, self.inner, self.flat_real = params, inner, flat_real

    def jacobian(self, f: Any, t: float, y: Tensor, counts: ImplicitCounts,
                 with_time: bool = True, graph: bool = False) -> tuple[_AdjointJacobian, Any]:
        tau = f.sign * t
        y_fwd = self.trajectory(tau)
        jac, _ = self.inner.jacobian(self.forward_func, tau, y_fwd, counts, with_time=False)
        f_t = None
        if with_time:
            # The (a, g) dynamics depend on τ through y(τ) and J(τ): ∂/∂t' by central
            # differences of the backward func itself (two calls; Rosenbrock methods only).
            delta = 1e-6 * max(1.0, abs(t))
            f_t = (f(t + delta, y) - f(t - delta, y)) / (2 * delta)
        return _AdjointJacobian(tau, y_fwd, jac, f.sign), f_t

    def factor(self, jac: _AdjointJacobian, h_gamma: float,
               counts: ImplicitCounts) -> _AdjointFactor:
        a_part = op = krylov = None
        if isinstance(self.inner, KrylovSolver):
            op, krylov = jac.jac, self.inner
        else:
            counts.n_lu += 1
            J = jac.jac
            eye = torch.eye(self.n, dtype=J.dtype, device=J.device)
            lu, piv, _ = torch.linalg.lu_factor_ex(eye + (h_gamma * jac.orient) * J.T)
            a_part = DenseFactor(lu, piv, h_gamma)
        vjp = self._vjp_theta(jac) if self.params else None
        return _AdjointFactor(a_part, op, krylov, vjp, self.n, h_gamma, jac.orient, counts)

    def _vjp_theta(self, jac: _AdjointJacobian) -> Callable[[Tensor], Tensor]:
        """``x -> (∂f/∂θ)ᵀ x`` at ``(τ, y(τ))``: one graph of ``f``, one backward per use."""
        func, params = self.forward_func, self.params
        t_user = torch.scalar_tensor(func.sign * jac.tau, dtype=jac.y.dtype,
                                     device=jac.y.device)
        with torch.enable_grad():
            out = func.at(t_user, jac.y.detach())

        def vjp(x: Tensor) -> Tensor:
            if not out.requires_grad:
                return torch.cat([self.flat_real(torch.zeros_like(p)) for p in params])
            with torch.enable_grad():
                got = torch.autograd.grad(out, params, x, retain_graph=True, allow_unused=True)
            return torch.cat([self.flat_real(g if g is not None else torch.zeros_like(p))
                              .to(x.dtype) for g, p in zip(got, params)])

        return vjp
