"""The linear algebra of an implicit backward (adjoint) solve.

The augmented state is ``(y, a, g)`` with ``dy/dτ = f``, ``da/dτ = -Jᵀ a`` and
``dg/dτ = -(∂f/∂θ)ᵀ a``. Its Jacobian is block lower triangular::

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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..linalg import DenseFactor, ImplicitCounts, KrylovSolver, gmres

__all__ = ["AdjointBlockSolver"]


@dataclass
class _BlockJacobian:
    jac: Any  # the forward Jacobian J (canonical forward time): dense, or an operator
    orient: float  # +1 or -1: the backward solve's time runs with or against the forward's


@dataclass
class _BlockFactor:
    y_part: DenseFactor  # I - hγ (orient J)
    a_part: DenseFactor  # I - hγ (-orient Jᵀ)
    n: int
    h_gamma: float

    def solve(self, b: Tensor, transpose: bool = False) -> Tensor:
        n, name = self.n, "solve_transpose" if transpose else "solve"
        return torch.cat([getattr(self.y_part, name)(b[:n]), getattr(self.a_part, name)(b[n:2 * n]),
                          b[2 * n:]])

    def solve_transpose(self, b: Tensor) -> Tensor:
        return self.solve(b, transpose=True)


@dataclass
class _BlockKrylovFactor:
    """Matrix-free blocks: GMRES on ``v - hγ o J v`` and on ``v + hγ o Jᵀ v``."""

    op: Any  # odeflow.linalg.JacobianOperator of the forward func
    orient: float
    n: int
    h_gamma: float
    solver: KrylovSolver
    counts: ImplicitCounts

    def _gmres(self, matvec: Any, b: Tensor) -> Tensor:
        s = self.solver
        x, iters = gmres(matvec, b, tol=s.tol, restart=s.restart, max_iters=s.max_iters)
        self.counts.n_linear_iters += iters
        self.counts.n_linear_failures += iters >= s.max_iters  # see KrylovFactor._count
        return x

    def solve(self, b: Tensor, transpose: bool = False) -> Tensor:
        n, hg, o = self.n, self.h_gamma, self.orient
        fwd, bwd = self.op.matvec, self.op.rmatvec
        if transpose:
            fwd, bwd = bwd, fwd
        with torch.no_grad():
            x_y = self._gmres(lambda v: v - hg * o * fwd(v), b[:n])
            x_a = self._gmres(lambda v: v + hg * o * bwd(v), b[n:2 * n])
        return torch.cat([x_y, x_a, b[2 * n:]])

    def solve_transpose(self, b: Tensor) -> Tensor:
        return self.solve(b, transpose=True)


class AdjointBlockSolver:
    """A :class:`~odeflow.linalg.LinearSolver` for the augmented backward solve.

    Args:
        forward_func: the forward problem's counted ``func`` (canonical forward time).
        n: the size of the flat forward state.
        inner: the forward solve's linear solver (dense with autodiff or the user's
            ``options["jacobian"]``, or Krylov): it provides ``J``.
    """

    def __init__(self, forward_func: Any, n: int, inner: Any):
        self.forward_func = forward_func
        self.n = n
        self.inner = inner

    def jacobian(self, f: Any, t: float, y: Tensor, counts: ImplicitCounts,
                 with_time: bool = True, graph: bool = False) -> tuple[_BlockJacobian, Tensor]:
        # The backward solve's canonical time t' maps to the forward's canonical time
        # τ = f.sign · t' (its func is the augmented dynamics in τ, times f.sign).
        tau = f.sign * t
        jac, f_t = self.inner.jacobian(self.forward_func, tau, y[:self.n], counts,
                                       with_time=with_time, graph=False)
        aug_t = torch.zeros_like(y)
        if f_t is not None:
            aug_t[:self.n] = f_t  # d/dt' (sign · f(sign t')) = f_t; the a, g parts: omitted
        return _BlockJacobian(jac, f.sign), aug_t

    def factor(self, jac: _BlockJacobian, h_gamma: float, counts: ImplicitCounts) -> Any:
        if isinstance(self.inner, KrylovSolver):
            return _BlockKrylovFactor(jac.jac, jac.orient, self.n, h_gamma, self.inner, counts)
        counts.n_lu += 1
        J = jac.jac * jac.orient
        eye = torch.eye(self.n, dtype=J.dtype, device=J.device)
        lu_y, piv_y, _ = torch.linalg.lu_factor_ex(eye - h_gamma * J)
        lu_a, piv_a, _ = torch.linalg.lu_factor_ex(eye + h_gamma * J.T)
        return _BlockFactor(DenseFactor(lu_y, piv_y, h_gamma), DenseFactor(lu_a, piv_a, h_gamma),
                            self.n, h_gamma)
