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

from ..dense import DenseOutput
from ..integrate import Hooks
from ..linalg import DenseFactor, ImplicitCounts, KrylovSolver, gmres
from ..problem import make_problem, retime
from ..run import run
from ..stats import SolveError, Status

__all__ = ["interpolating_dynamics", "InterpolatingAdjointSolver", "lanes_interpolating_backward"]

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


# ------------------------------------------------------------------------------- per sample
#: Gauss–Legendre nodes on [0, 1] and weights (3 points: exact for degree 5, above the
#: order-4 dense outputs the quadrature reads).
_GAUSS = ((0.5 - 0.1 * 15 ** 0.5, 5 / 18), (0.5, 8 / 18), (0.5 + 0.1 * 15 ** 0.5, 5 / 18))


class _LanesInterpolating:
    """The per-sample adjoint ``a`` in the backward time ``s = -τ`` with ``y(τ)`` from the
    forward dense output: ``da/ds = a ∂f/∂y(τ, y(τ))``, one lane per sample."""

    def __init__(self, f: Any, params: tuple[Tensor, ...], forward: Any, grid: Tensor):
        self.f, self.params, self.forward = f, params, forward
        self.lo, self.hi = grid[:, 0], grid[:, -1]
        self.grads: list[Tensor | None] = [None] * len(params)

    def _y(self, tau: Tensor) -> Tensor:
        # Stages past a step's end (kvaerno5's c = 1.23) read the end of the span, as the
        # joint interpolating adjoint does; a lane that does not step (a failed sample) may
        # read nan: its result is unused.
        tau = torch.minimum(torch.maximum(tau, self.lo), self.hi)
        return torch.nan_to_num(self.forward._lanes_one(tau, False))

    def __call__(self, s: Tensor, a: Tensor) -> Tensor:
        tau = -s.double()
        with torch.enable_grad():
            y_in = self._y(tau).requires_grad_(True)
            dy = self.f(tau, y_in)
            if not dy.requires_grad:
                return torch.zeros_like(a)
            # The stepper's Jacobian of this system is taken by differentiating it in a
            # (a requires grad then): keep the vector-Jacobian product's graph.
            (da,) = torch.autograd.grad(dy, y_in, a, create_graph=a.requires_grad,
                                        allow_unused=True)
        return torch.zeros_like(a) if da is None else da

    def quadrature(self, pieces: list) -> None:
        """``g += ∫ a ∂f/∂θ ds`` over the accepted backward steps in ``pieces`` (the loop's
        dense hook: ``(interpolant, accepted)``), by 3-point Gauss–Legendre on each step's
        own dense output, summed over the samples."""
        if not self.params:
            return
        for piece, ok in pieces:
            w = torch.where(ok, piece.dt, 0.0)
            with torch.enable_grad():
                total = 0.0
                for theta, weight in _GAUSS:
                    a = piece.evaluate(theta)
                    tau = -(piece.t + theta * piece.dt)
                    dy = self.f(tau, self._y(tau))
                    use = ok[:, None]  # where, not a zero weight: a skipped lane may be nan
                    total = total + torch.where(
                        use, dy * torch.where(use, (weight * w)[:, None].to(a.dtype) * a, 0.0),
                        0.0).sum()
                if not isinstance(total, Tensor) or not total.requires_grad:
                    continue
                got = torch.autograd.grad(total, self.params, allow_unused=True)
            for i, g in enumerate(got):
                if g is not None:
                    self.grads[i] = g if self.grads[i] is None else self.grads[i] + g


def lanes_interpolating_backward(ctx: Any, grad_ys: Tensor, ys: Tensor,
                                 params: tuple[Tensor, ...], options: dict[str, Any]
                                 ) -> tuple[Tensor, list[Tensor]]:
    """The per-sample adjoint after an implicit forward: every sample's ``a`` backwards on
    its own interval with the one loop (per-lane Newton), ``y`` read from the forward
    dense output; ``∂L/∂y`` added at each output time; parameter gradients by quadrature
    on the backward steps (outside the error control, as the explicit per-sample adjoint's
    seminorm). ``grad_ys`` and ``ys`` have the failed samples' entries cleared."""
    problem, config, failed = ctx.problem, ctx.config, ctx.failed
    C = problem.clock
    f = problem.func
    aug = _LanesInterpolating(f, params, DenseOutput(problem, ctx.pieces), C.grid)
    nfe_before = f.nfe
    a = grad_ys[-1].clone()
    n_steps = 0
    grid = C.grid
    hooks = Hooks(dense=[], skip=failed)
    aug_problem = None
    for i in range(grid.shape[1] - 1, 0, -1):
        seg = torch.stack([-grid[:, i], -grid[:, i - 1]], 1)
        if aug_problem is None:
            aug_problem = make_problem(aug, a, seg, float(config.rtol), float(config.atol),
                                       config.spec.name, options)
        else:
            aug_problem = retime(aug_problem, seg, a)
        with torch.no_grad():
            result = run(aug_problem, config.spec, hooks, fsal=False, use_callbacks=False)[0]
        n_steps += result.stats.n_steps
        codes = result.status.tolist()
        bad = [b for b, c in enumerate(codes) if Status(c) != Status.SUCCESS and
               not bool(failed[b])]
        if bad:
            raise SolveError(Status(codes[bad[0]]), float(-result.t_last[bad[0]]), (
                f"This was the adjoint's backward solve for samples {bad[:10]}; set "
                "adjoint_rtol/adjoint_atol/adjoint_options or use gradient='checkpoint'."),
                result.stats)
        aug.quadrature(hooks.dense)
        hooks.dense.clear()
        a = result.y_last + grad_ys[i - 1]
    ctx.stats.nfe_backward += f.nfe - nfe_before
    ctx.stats.n_steps_backward += n_steps
    grads = [g if g is None else g.to(p.dtype) for g, p in zip(aug.grads, params)]
    return a, [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]
