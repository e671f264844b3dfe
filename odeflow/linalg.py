"""Linear algebra of the implicit methods: Jacobians, factorised ``I - hγJ``, GMRES.

Every implicit step solves systems with the matrix ``M = I - hγ J`` (``J = ∂f/∂y`` at a
point, ``hγ`` the step size times the method's diagonal coefficient). A
:class:`LinearSolver` says how ``J`` is obtained and how ``M`` is solved:

* :class:`DenseSolver` (default): ``J`` by automatic differentiation — one call of
  ``func`` and one vmapped backward pass for all ``n`` rows — or by the user's
  ``options["jacobian"]``; ``M`` is factorised once by
  ``torch.linalg.lu_factor_ex`` and the factors are reused by every stage of a step (and,
  for ESDIRK methods, across steps while ``hγ`` and ``J`` stay usable).
* :class:`KrylovSolver` (``options["linear_solver"] = "krylov"``): matrix-free. ``J`` is
  never formed; ``M v`` costs one Jacobian–vector product and ``M x = b`` is solved by
  restarted GMRES (Saad & Schultz, SIAM J. Sci. Stat. Comput. 7, 1986), so a state of
  100k numbers needs memory for a few Krylov vectors only.

Both also give ``∂f/∂t`` (Rosenbrock methods need it for non-autonomous ``func``) in the
same call. Under autograd the dense Jacobian keeps its graph (:func:`autodiff_jacobian`)
and backpropagating through a Rosenbrock step is exact. The Krylov path's GMRES is not
differentiated (the Rosenbrock stepper refuses it under step-by-step differentiation; the
adjoint works).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Protocol

import torch
from torch import Tensor

from .stats import SolveStats

__all__ = ["ImplicitCounts", "LinearSolver", "Factor", "DenseSolver", "KrylovSolver",
           "autodiff_jacobian", "check_dense_size", "check_solver_dtype",
           "make_linear_solver", "gmres", "LINEAR_SOLVER_OPTIONS", "DENSE_MAX_BYTES"]

LINEAR_SOLVER_OPTIONS = ("jacobian", "linear_solver", "krylov_tol", "krylov_restart",
                         "krylov_max_iters")

#: The largest dense ``n × n`` matrix (in bytes) the default linear solver builds: 1 GiB,
#: ``n = 11585`` in float64, ``16384`` in float32. A step holds about five such matrices at
#: once (``J``, the identity cotangents of its vmapped backward, ``I - hγJ`` and its LU), so
#: the threshold keeps a step near 5 GiB; beyond it the build would exhaust memory, and its
#: failure would send autodiff to the row-by-row fallback, which is slower still.
DENSE_MAX_BYTES = 1 << 30


def check_solver_dtype(method: str, dtype: torch.dtype) -> None:
    """Refuse a state dtype torch's linear algebra lacks (LU, ``lstsq``): half precision.

    Raises:
        TypeError: naming the method, the dtype and what works instead.
    """
    if dtype in (torch.float16, torch.bfloat16, torch.complex32):
        raise TypeError(
            f"method={method!r} is implicit: it solves linear systems (LU or GMRES), which "
            f"torch does not implement in {dtype}. Integrate in float32 or float64 "
            "(y0.float(); cast func's parameters too, or let func return another dtype, which "
            f"is cast), or use an explicit method such as 'dopri5', which runs in {dtype} "
            "(with rtol/atol above its resolution, e.g. rtol=1e-3)"
        )


def check_dense_size(n: int, dtype: torch.dtype, batch: int = 1) -> None:
    """Refuse, before anything is built, a dense Jacobian larger than :data:`DENSE_MAX_BYTES`.

    Raises:
        ValueError: naming ``linear_solver="krylov"`` and the largest state the dense path
            takes in ``dtype``.
    """
    itemsize = dtype.itemsize
    if batch * n * n * itemsize <= DENSE_MAX_BYTES:
        return
    n_max = math.isqrt(DENSE_MAX_BYTES // (batch * itemsize))
    per = f" per sample of a batch of {batch}" if batch > 1 else ""
    raise ValueError(
        f"the state has n = {n} elements{per}: the default dense linear solver would build "
        f"a {n} x {n} Jacobian ({batch * n * n * itemsize / 2**30:.1f} GiB in {dtype}, and "
        f"about five matrices that size per step); it takes n <= {n_max}{per} in {dtype}. "
        "Pass options=dict(linear_solver='krylov') (matrix-free: memory for a few vectors "
        "of the state), or use an explicit method if the problem is not stiff"
    )


@dataclass
class ImplicitCounts(SolveStats):
    """Counters of one solve's linear algebra, shared (by reference) through its states:
    :class:`~odeflow.stats.SolveStats`' own ``n_jacobians`` … ``n_linear_failures`` and
    ``switches`` (its step counters stay 0 here), and how its Jacobians are taken. A counter
    of a per-sample ESDIRK solve is a ``(B,)`` tensor, one count per lane."""

    #: set on the first failure of the vmapped backward: one backward per row from then on
    reverse_mode: bool = False
    #: set when ``torch.func`` cannot trace ``func``: plain autograd under autograd too
    no_functorch: bool = False

    def add_to(self, stats: SolveStats) -> None:
        """Add the counters (a per-lane one summed over the lanes) into the solve's ``stats``."""
        for name in (fld.name for fld in fields(SolveStats) if fld.name.startswith("n_")):
            count = getattr(self, name)
            count = int(count.sum()) if isinstance(count, Tensor) else count
            setattr(stats, name, getattr(stats, name) + count)
        stats.switches.extend(self.switches)


class Factor(Protocol):
    """A factorised ``M = I - hγ J``."""

    h_gamma: float

    def solve(self, b: Tensor) -> Tensor: ...

    def solve_transpose(self, b: Tensor) -> Tensor: ...


class LinearSolver(Protocol):
    """How an implicit stepper gets ``J`` (and ``∂f/∂t``) and solves with ``I - hγ J``."""

    def jacobian(self, f: Any, t: float, y: Tensor, counts: ImplicitCounts,
                 with_time: bool = True, graph: bool = False) -> tuple[Any, Tensor | None]:
        ...

    def factor(self, jac: Any, h_gamma: float, counts: ImplicitCounts) -> Factor: ...


# ---------------------------------------------------------------------------------- Jacobians
def _user_time(f: Any, t: Any, y: Tensor) -> Tensor:
    """Canonical ``t`` as the user's time ``func`` gets (0-dim, or ``(B,)`` per sample), a
    leaf of its own (derivatives in ``t`` are taken at this level)."""
    if isinstance(t, Tensor):
        return f.clock.user_time(t).detach()
    return torch.scalar_tensor(f.sign * t, dtype=y.dtype, device=y.device)


def _signed(f: Any, x: Tensor, dims: int) -> Tensor:
    """``x`` (a derivative in the user's time, or a user Jacobian) in canonical time: times
    ``f.sign``, per sample the lane's sign over the ``dims`` trailing dimensions."""
    sign = f.sign
    if isinstance(sign, Tensor):
        sign = sign.to(x.dtype).reshape(-1, *([1] * dims))
    return x * sign


def _reverse_jacobian(f: Any, t: Any, y: Tensor, with_time: bool, graph: bool,
                      batched: bool) -> tuple[Tensor, Tensor | None]:
    """``(J, ∂f/∂t)`` in canonical time by reverse mode: one call of ``f``, then all ``n``
    rows in one vmapped backward pass (``batched``) or one backward pass per row. Per
    sample the ``n`` cotangents are shared by the lanes (they are independent)."""
    t_user = _user_time(f, t, y).requires_grad_(with_time)
    with torch.enable_grad():
        y_in = y if (graph and y.requires_grad) else y.detach().requires_grad_(True)
        out = f.at(t_user, y_in)
        n = out.shape[-1]
        if not out.requires_grad:  # func reads neither y nor t: autograd.grad would raise
            return y.new_zeros(*y.shape, n), None
        inputs = (y_in, t_user) if with_time else (y_in,)
        eye = torch.eye(n, dtype=out.dtype, device=out.device)
        eye = eye.reshape(n, *([1] * (out.ndim - 1)), n).expand(n, *out.shape)
        kw = dict(create_graph=graph, allow_unused=True)
        if batched:
            grads = torch.autograd.grad(out, inputs, eye, retain_graph=graph,
                                        is_grads_batched=True, **kw)
        else:  # the same rows one by one (an input that no row reaches: zero rows)
            rows = [torch.autograd.grad(out, inputs, e, retain_graph=True,
                                        materialize_grads=True, **kw) for e in eye]
            grads = [torch.stack(g) for g in zip(*rows)]
    jac = grads[0].movedim(0, -2) if grads[0] is not None else y.new_zeros(*y.shape, n)
    f_t = grads[1].movedim(0, -1) if with_time and grads[1] is not None else None
    if f_t is not None:
        f_t = _signed(f, f_t.to(y.dtype), 1)
        f_t = f_t if graph else f_t.detach()
    return (jac if graph else jac.detach()), f_t


def _functorch_jacobian(f: Any, t: Any, y: Tensor, with_time: bool
                        ) -> tuple[Tensor, Tensor | None]:
    """``(J, ∂f/∂t)`` keeping the graph to ``y`` and the parameters, by ``torch.func.jacrev``.

    Under autograd with a ``y`` that has a history (every step of a direct-mode solve),
    ``torch.autograd.grad`` from ``f(y)`` would walk that whole history at every step (the
    engine collects the dependencies of everything reachable): quadratic in the number of
    steps. ``jacrev`` differentiates at its own level, whose graph starts at ``y``. Per
    sample the lanes are independent, so ``d(Σ_b f_b)/dy_b`` is sample ``b``'s Jacobian.
    """
    t_user = _user_time(f, t, y)
    lanes = isinstance(t, Tensor)

    def g(yy: Tensor, tt: Tensor) -> Tensor:
        out = f.at(tt, yy)
        return out.sum(0) if lanes else out

    if with_time:
        jac, f_t = torch.func.jacrev(g, argnums=(0, 1))(y, t_user)
        return jac.movedim(0, -2), _signed(f, f_t.movedim(0, -1).to(y.dtype), 1)
    return torch.func.jacrev(g)(y, t_user).movedim(0, -2), None


def autodiff_jacobian(f: Any, t: Any, y: Tensor, counts: ImplicitCounts,
                      with_time: bool = True, graph: bool = False
                      ) -> tuple[Tensor, Tensor | None]:
    """``(∂f/∂y, ∂f/∂t)`` at ``(t, y)`` by automatic differentiation: ``(n, n)`` and
    ``(n,)`` for a joint solve (``t`` a float, ``y`` ``(n,)``), ``(B, n, n)`` and ``(B, n)``
    per sample (``t`` ``(B,)``, ``y`` ``(B, n)``).

    Reverse mode with all rows in one vmapped backward pass: for the small and medium
    states of stiff problems it is several times faster than ``torch.func.jacfwd``
    (0.23 ms against 1.8 ms for Robertson's 3 equations here), and it needs one call of
    ``func``. A ``func`` whose backward cannot be vmapped falls back to one backward pass
    per row. ``graph``: keep the graph of ``J`` (under autograd, when ``f(t, y)`` depends on
    something that requires grad: a Rosenbrock step's gradient needs ``∂J/∂θ``). Without
    ``graph``, ``∂f/∂t`` is ``None`` when ``func`` does not read ``t`` (it is exactly zero:
    a Rosenbrock step then skips its ``∂f/∂t`` terms).
    """
    counts.n_jacobians += 1
    if graph and not counts.no_functorch:
        try:
            return _functorch_jacobian(f, t, y, with_time)
        except (RuntimeError, NotImplementedError, TypeError):
            counts.no_functorch = True
            f.nfe -= 1  # the failed attempt did not finish a call
    if not counts.reverse_mode:
        try:
            return _reverse_jacobian(f, t, y, with_time, graph, batched=True)
        except (RuntimeError, NotImplementedError, TypeError):
            counts.reverse_mode = True
    return _reverse_jacobian(f, t, y, with_time, graph, batched=False)


def _time_derivative(f: Any, t: Any, y: Tensor, counts: ImplicitCounts) -> Tensor:
    """``∂f/∂t`` alone (with a user Jacobian): one forward-mode call, else reverse mode."""
    t_user = _user_time(f, t, y)
    if not counts.reverse_mode:
        try:
            return _signed(f, torch.func.jvp(lambda tt: f.at(tt, y), (t_user,),
                                             (torch.ones_like(t_user),))[1], 1)
        except (RuntimeError, NotImplementedError, TypeError):
            counts.reverse_mode = True
            f.nfe -= 1
    return _reverse_jacobian(f, t, y.detach(), True, False, batched=False)[1]


# -------------------------------------------------------------------------------- dense path
@dataclass
class DenseFactor:
    """LU factors of ``I - hγ J`` (batched ``(B, n, n)`` in per-sample mode)."""

    lu: Tensor
    pivots: Tensor
    h_gamma: Any

    def solve(self, b: Tensor) -> Tensor:
        return torch.linalg.lu_solve(self.lu, self.pivots, b.unsqueeze(-1)).squeeze(-1)

    def solve_transpose(self, b: Tensor) -> Tensor:
        return torch.linalg.lu_solve(self.lu, self.pivots, b.unsqueeze(-1),
                                     adjoint=True).squeeze(-1)


class DenseSolver:
    """Dense ``J`` (autodiff or ``user_jacobian``) and LU factorisation of ``I - hγ J``.

    ``user_jacobian(t, y)`` takes the user's time and flat state and returns the Jacobian
    of the user's ``func`` with respect to the flat state: ``(n, n)`` for a joint solve
    (``t`` 0-dim, ``y`` ``(n,)``); per sample (``options["per_sample"]``) ``t`` is ``(B,)``,
    ``y`` ``(B, n)`` and it returns ``(B, n, n)``, row ``b`` sample ``b``'s own Jacobian.
    """

    def __init__(self, user_jacobian: Callable | None = None):
        self.user_jacobian = user_jacobian

    def jacobian(self, f: Any, t: Any, y: Tensor, counts: ImplicitCounts,
                 with_time: bool = True, graph: bool = False) -> tuple[Tensor, Tensor | None]:
        """``(J, ∂f/∂t)`` at canonical ``(t, y)``: ``(n, n)``, or ``(B, n, n)`` per sample."""
        n = y.shape[-1]
        check_dense_size(n, y.dtype, batch=y.numel() // max(n, 1))
        if self.user_jacobian is None:
            return autodiff_jacobian(f, t, y, counts, with_time, graph)
        counts.n_jacobians += 1
        jac = self.user_jacobian(_user_time(f, t, y), y)
        want = (*y.shape, n)
        if not isinstance(jac, Tensor) or tuple(jac.shape) != want:
            shape = tuple(jac.shape) if isinstance(jac, Tensor) else type(jac).__name__
            what = "each sample's Jacobian" if y.ndim > 1 else "the Jacobian"
            raise ValueError(f"options['jacobian'] must return a {want} tensor ({what} of "
                             f"func w.r.t. the flattened state), got {shape}")
        # host sync: once per user Jacobian, beside an n x n LU. Without it a NaN Jacobian
        # surfaces later as "func returned non-finite values", blaming the wrong function.
        if not bool(torch.isfinite(jac).all()):
            at = f.clock.user_time(t).tolist() if isinstance(t, Tensor) else f.sign * t
            raise ValueError(f"options['jacobian'] returned non-finite values at "
                             f"t={at!r} (func itself is finite there)")
        return (_signed(f, jac.to(y.dtype), 2),
                _time_derivative(f, t, y, counts) if with_time else None)

    def factor(self, jac: Tensor, h_gamma: Any, counts: ImplicitCounts) -> DenseFactor:
        """LU of ``I - hγ J``; ``h_gamma`` is a float, or a ``(B,)`` tensor for ``(B, n, n)``."""
        counts.n_lu += 1
        eye = torch.eye(jac.shape[-1], dtype=jac.dtype, device=jac.device)
        hg = h_gamma.reshape(-1, 1, 1).to(jac.dtype) if isinstance(h_gamma, Tensor) else h_gamma
        # A singular M gives inf/nan in the solves; the stepper reports that step as failed.
        return DenseFactor(*torch.linalg.lu_factor_ex(eye - hg * jac)[:2], h_gamma)


# ------------------------------------------------------------------------------- krylov path
@dataclass
class KrylovFactor:
    """``I - hγ J`` applied matrix-free, ``J`` at ``point = (f, user t, y)`` by Jacobian–vector
    products (nothing is formed); solves by restarted GMRES."""

    point: tuple  # what KrylovSolver.jacobian returns in place of J
    h_gamma: float
    solver: KrylovSolver  # its GMRES settings
    counts: ImplicitCounts

    def solve(self, b: Tensor) -> Tensor:
        f, t_user, y = self.point
        return self._gmres(lambda v: torch.func.jvp(lambda x: f.at(t_user, x), (y,), (v,))[1], b)

    def solve_transpose(self, b: Tensor) -> Tensor:
        f, t_user, y = self.point

        def vjp(v: Tensor) -> Tensor:
            with torch.enable_grad():
                y_in = y.detach().requires_grad_(True)
                out = f.at(t_user, y_in)
                got = (torch.autograd.grad(out, y_in, v, allow_unused=True)[0]
                       if out.requires_grad else None)
            return got if got is not None else torch.zeros_like(v)  # f free of y: J = 0

        return self._gmres(vjp, b)

    def _gmres(self, jvp: Callable[[Tensor], Tensor], b: Tensor) -> Tensor:
        k = self.solver
        with torch.no_grad():
            x, iters = gmres(lambda v: v - self.h_gamma * jvp(v), b, tol=k.tol,
                             restart=k.restart, max_iters=k.max_iters)
        self.counts.n_linear_iters += iters
        # gmres only uses all max_iters products when it has not converged before (one
        # that converges on the very last product counts too: rare, and harmless).
        self.counts.n_linear_failures += iters >= k.max_iters
        return x


class KrylovSolver:
    """Matrix-free ``J`` (Jacobian–vector products) with GMRES solves."""

    def __init__(self, tol: float = 1e-8, restart: int = 30, max_iters: int = 200):
        self.tol, self.restart, self.max_iters = tol, restart, max_iters

    def jacobian(self, f: Any, t: float, y: Tensor, counts: ImplicitCounts,
                 with_time: bool = True, graph: bool = False) -> tuple[tuple, Tensor | None]:
        """``J`` as the point ``(f, user t, y)`` its products are taken at, and ``∂f/∂t``."""
        counts.n_jacobians += 1
        f_t = _time_derivative(f, t, y.detach(), counts) if with_time else None
        return (f, _user_time(f, t, y), y.detach()), f_t

    def factor(self, jac: tuple, h_gamma: float, counts: ImplicitCounts) -> KrylovFactor:
        return KrylovFactor(jac, h_gamma, self, counts)


def gmres(matvec: Callable[[Tensor], Tensor], b: Tensor, *, tol: float = 1e-8,
          restart: int = 30, max_iters: int = 200) -> tuple[Tensor, int]:
    """Solve ``A x = b`` by restarted GMRES: Arnoldi with modified Gram–Schmidt, the small
    least-squares problem kept triangular by Givens rotations as the basis grows (Saad,
    *Iterative Methods for Sparse Linear Systems*, 2nd ed., §6.5.3), so that each iteration
    knows its residual norm without solving it (real or complex ``b``).

    Stops when ``‖b - A x‖ ≤ tol · ‖b‖`` or after ``max_iters`` products; returns
    ``(x, iterations)``. A non-converged solve returns its best iterate (a non-finite ``b``
    or product ends the solve with a non-finite one): the implicit step that called it sees
    the resulting error and shrinks the step.
    """
    shape = b.shape
    b = b.reshape(-1)
    x = b * 0  # zeros; non-finite where b is, so that a non-finite b gives a non-finite x
    target = tol * float(torch.linalg.vector_norm(b))
    if target == 0.0:
        return x.reshape(shape), 0
    iters = 0
    while iters < max_iters:
        r = b - matvec(x.reshape(shape)).reshape(-1) if iters else b.clone()
        beta = float(torch.linalg.vector_norm(r))
        if not beta > target:  # (converged, or a non-finite iterate)
            break
        basis, rotations, g, cols = [r / beta], [], [beta], []  # cols: R's columns
        for _ in range(min(restart, max_iters - iters)):
            w = matvec(basis[-1].reshape(shape)).reshape(-1)
            iters += 1
            col = []
            for v in basis:
                col.append(torch.vdot(v, w))
                w = w - col[-1] * v
            col.append(torch.linalg.vector_norm(w).to(w.dtype))
            col = torch.stack(col).tolist()  # host sync: the new column, one read
            h_next = abs(col[-1])
            for i, (c, s) in enumerate(rotations):
                col[i], col[i + 1] = c * col[i] + s * col[i + 1], c * col[i + 1] - (
                    s.conjugate() * col[i])
            k, (a, h) = len(rotations), col[-2:]
            rho = math.hypot(abs(a), abs(h))
            # The rotation that zeroes h under a: [c s; -conj(s) c] with c real.
            c, s = (abs(a) / rho, (a / abs(a)) * h.conjugate() / rho) if a != 0 else (
                (0.0, 1.0) if rho else (1.0, 0.0))
            rotations.append((c, s))
            cols.append(col[:k] + [c * a + s * h])
            g.append(-s.conjugate() * g[k])
            g[k] *= c
            if abs(g[-1]) <= target or not h_next > 1e-300:  # (converged, breakdown, nan)
                break
            basis.append(w / h_next)
        m = len(cols)
        y = [0.0] * m  # R y = g[:m] by back substitution
        for i in reversed(range(m)):
            rest = g[i] - sum(cols[j][i] * y[j] for j in range(i + 1, m))
            y[i] = rest / cols[i][i] if cols[i][i] != 0 else 0.0
        x = x + torch.stack(basis[:m], dim=1) @ torch.tensor(y, dtype=b.dtype, device=b.device)
        if abs(g[m]) <= target:
            break
    return x.reshape(shape), iters


# ---------------------------------------------------------------------------------- options
def make_linear_solver(options: dict[str, Any]) -> Any:
    """The :class:`LinearSolver` chosen by ``options`` (``"dense"`` unless told otherwise).

    ``options["linear_solver"]`` may also be a ready :class:`LinearSolver` object (the
    adjoint's backward solve passes its own structured one).
    """
    kind = options.get("linear_solver", "dense")
    user_jac = options.get("jacobian")
    if user_jac is not None and not callable(user_jac):
        raise TypeError("options['jacobian'] must be callable(t, y) -> (n, n) tensor")
    if not isinstance(kind, str) and hasattr(kind, "jacobian") and hasattr(kind, "factor"):
        return kind
    if kind == "dense":
        return DenseSolver(user_jac)
    if kind == "krylov":
        if user_jac is not None:
            raise ValueError("options['jacobian'] is a dense Jacobian; it cannot be used with "
                             "options['linear_solver']='krylov' (which needs none)")
        tol = options.get("krylov_tol", 1e-8)
        restart = options.get("krylov_restart", 30)
        max_iters = options.get("krylov_max_iters", 200)
        if not (isinstance(tol, (int, float)) and 0 < tol < 1 and math.isfinite(tol)):
            raise ValueError(f"options['krylov_tol'] must be a number in (0, 1), got {tol!r}")
        for name, value in (("krylov_restart", restart), ("krylov_max_iters", max_iters)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"options['{name}'] must be a positive int, got {value!r}")
        return KrylovSolver(float(tol), restart, max_iters)
    raise ValueError(f"options['linear_solver'] must be 'dense' or 'krylov', got {kind!r}")
