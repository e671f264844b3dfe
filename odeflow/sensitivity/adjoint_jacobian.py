"""The linear algebra of an implicit backward (adjoint) solve.

The augmented system of ``adjoint.py`` (state ``(y, a, g)``) has a block lower triangular
Jacobian::

    [  J         0    0 ]
    [ -∂(Jᵀa)/∂y -Jᵀ  0 ]
    [ -∂(f_θᵀa)/∂y  -f_θᵀ  0 ]

The solver uses its block diagonal ``diag(J, -Jᵀ, 0)`` (in the backward solve's own time
direction): two ``n × n`` LU factorisations, whatever the number of parameters, so a
neural network's ``θ`` never enters a matrix. For the ESDIRK methods this is the iteration
matrix of a simplified Newton method, which still converges to the exact stage values (the
neglected part is strictly lower block triangular: the iteration error vanishes after three
iterations on a linear problem). A Rosenbrock method needs the exact Jacobian for its full
order; with this one it stays convergent but may take more steps, which is why an implicit
forward solve's backward solve uses ``kvaerno5`` by default.

The interpolating adjoint (``interpolating_adjoint.py``) has no ``y`` in its state: its
Jacobian ``[[-Jᵀ, 0], [-(∂f/∂θ)ᵀ, 0]]`` is exact and cheap in blocks. The same solver then
factorises the ``n × n`` block ``I + hγ Jᵀ`` (one LU, any number of parameters) and handles
the ``g`` block by one vector–Jacobian product per solve, so Rosenbrock methods keep their
order in that backward solve too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..linalg import DenseFactor, ImplicitCounts, KrylovFactor, KrylovSolver

__all__ = ["AdjointBlockSolver", "flat_grads"]

#: ``y(τ)`` of the forward solve at canonical time ``τ`` (its dense output's ``canonical``):
#: a float, or per sample a ``(B,)`` tensor.
Trajectory = Callable[[Any], Tensor]


def flat_grads(grads: Any, params: tuple[Tensor, ...], dtype: torch.dtype) -> Tensor:
    """Gradients w.r.t. ``params`` (``None``: zero) as the augmented state's flat real ``g``
    of ``dtype`` (a complex parameter as (real, imaginary) pairs)."""
    flat = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]
    return torch.cat([(torch.view_as_real(g) if g.is_complex() else g).reshape(-1).to(dtype)
                      for g in flat])


@dataclass
class _BlockJacobian:
    jac: Any  # the forward Jacobian J (canonical forward time), or the Krylov point (f, t, y)
    orient: float  # +1 or -1: the backward solve's time runs with or against the forward's
    tau: float  # the forward's canonical time
    y: Tensor  # the forward state J was taken at


@dataclass
class _BlockFactor:
    """``M``'s diagonal blocks ``I - hγ o J`` (the ``y`` part, if any) and ``I + hγ o Jᵀ``,
    ``o`` the orientation, each as its solve; with ``vjp_theta`` the exact ``g`` block
    ``[hγ o (∂f/∂θ)ᵀ, I]`` of the interpolating adjoint."""

    solves: tuple[Callable[[Tensor], Tensor], ...]  # (y part, a part) or (a part,)
    vjp_theta: Callable[[Tensor], Tensor] | None  # x -> (∂f/∂θ)ᵀ x, flat
    n: int
    h_gamma: float  # (the Factor contract: the ESDIRK stepper reads it)
    orient: float

    def solve(self, b: Tensor) -> Tensor:
        n = self.n
        xs = [solve(b[i * n:(i + 1) * n]) for i, solve in enumerate(self.solves)]
        rest = b[len(xs) * n:]
        if self.vjp_theta is not None:
            rest = rest - (self.h_gamma * self.orient) * self.vjp_theta(xs[-1])
        return torch.cat([*xs, rest])

    def solve_transpose(self, b: Tensor) -> Tensor:
        raise NotImplementedError("the backward solve is not differentiated")


class AdjointBlockSolver:
    """A :class:`~odeflow.linalg.LinearSolver` for an implicit backward solve.

    Args:
        forward_func: the forward problem's counted ``func`` (canonical forward time).
        n: the size of the flat forward state.
        inner: the forward solve's linear solver (dense with autodiff or the user's
            ``options["jacobian"]``, or Krylov): it provides ``J``.
        trajectory: the interpolating adjoint's ``y(τ)`` (its state is ``(a, g)``), or
            ``None`` (the state is ``(y, a, g)``).
        params: with ``trajectory``, the parameters ``g`` is the gradient of (may be empty).
    """

    def __init__(self, forward_func: Any, n: int, inner: Any,
                 trajectory: Trajectory | None = None, params: tuple[Tensor, ...] = ()):
        self.forward_func, self.n, self.inner = forward_func, n, inner
        self.trajectory, self.params = trajectory, params

    def jacobian(self, f: Any, t: float, y: Tensor, counts: ImplicitCounts,
                 with_time: bool = True, graph: bool = False) -> tuple[_BlockJacobian, Any]:
        # The backward solve's canonical time t' maps to the forward's canonical time
        # τ = f.sign · t' (its func is the augmented dynamics in τ, times f.sign).
        tau = f.sign * t
        if self.trajectory is None:
            jac, f_t = self.inner.jacobian(self.forward_func, tau, y[:self.n], counts,
                                           with_time=with_time, graph=False)
            aug_t = torch.zeros_like(y)
            if f_t is not None:
                aug_t[:self.n] = f_t  # d/dt' (sign · f(sign t')) = f_t; the a, g parts: omitted
            return _BlockJacobian(jac, f.sign, tau, y[:self.n]), aug_t
        y_fwd = self.trajectory(tau)
        jac, _ = self.inner.jacobian(self.forward_func, tau, y_fwd, counts, with_time=False)
        aug_t = None
        if with_time:
            # The (a, g) dynamics depend on τ through y(τ) and J(τ): ∂/∂t' by central
            # differences of the backward func itself (two calls; Rosenbrock methods only).
            delta = 1e-6 * max(1.0, abs(t))
            aug_t = (f(t + delta, y) - f(t - delta, y)) / (2 * delta)
        return _BlockJacobian(jac, f.sign, tau, y_fwd), aug_t

    def factor(self, jac: _BlockJacobian, h_gamma: float, counts: ImplicitCounts) -> Any:
        with_y = self.trajectory is None
        vjp = self._vjp_theta(jac) if self.params and not with_y else None
        hg_o = h_gamma * jac.orient
        if isinstance(self.inner, KrylovSolver):  # GMRES on I - c J and its transpose
            def krylov(c: float) -> KrylovFactor:
                return KrylovFactor(jac.jac, c, self.inner, counts)
            solves = ((krylov(hg_o).solve,) if with_y else ()) + (krylov(-hg_o).solve_transpose,)
        else:
            counts.n_lu += 1
            J = jac.jac * jac.orient
            eye = torch.eye(self.n, dtype=J.dtype, device=J.device)
            mats = ((eye - h_gamma * J,) if with_y else ()) + (eye + h_gamma * J.T,)
            solves = tuple(DenseFactor(*torch.linalg.lu_factor_ex(m)[:2], h_gamma).solve
                           for m in mats)
        return _BlockFactor(solves, vjp, self.n, h_gamma, jac.orient)

    def _vjp_theta(self, jac: _BlockJacobian) -> Callable[[Tensor], Tensor]:
        """``x -> (∂f/∂θ)ᵀ x`` at ``(τ, y(τ))``: one graph of ``f``, one backward per use."""
        func, params = self.forward_func, self.params
        t_user = torch.scalar_tensor(func.sign * jac.tau, dtype=jac.y.dtype,
                                     device=jac.y.device)
        with torch.enable_grad():
            out = func.at(t_user, jac.y.detach())

        def vjp(x: Tensor) -> Tensor:
            if not out.requires_grad:
                return flat_grads((None,) * len(params), params, x.dtype)
            with torch.enable_grad():
                got = torch.autograd.grad(out, params, x, retain_graph=True, allow_unused=True)
            return flat_grads(got, params, x.dtype)

        return vjp
