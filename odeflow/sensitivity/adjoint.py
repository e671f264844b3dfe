"""The adjoint sensitivity method: gradients by solving an augmented ODE backwards.

With ``a(t) = ∂L/∂y(t)``, the augmented state ``(y, a, g)`` obeys

    dy/dt = f(t, y, θ),   da/dt = -a ∂f/∂y,   dg/dt = -a ∂f/∂θ,

solved from each output time back to the previous one, starting from the forward
solution's ``y``, with the incoming ``∂L/∂y(t_i)`` added to ``a`` at every output time
(Chen, Rubanova, Bettencourt & Duvenaud, "Neural Ordinary Differential Equations",
NeurIPS 2018, Appendix B). ``y`` is integrated backwards together with ``a`` and ``g``
because the backward solve takes its own steps and needs ``y`` at them. Each evaluation
of the augmented system is one ``func`` call plus one vector–Jacobian product.

``adjoint_options=dict(norm="seminorm")`` leaves ``g`` out of the error norm (Kidger,
Chen & Lyons, ICML 2021): ``g`` never feeds back into ``y`` or ``a``, so its error does not
need controlling, and the backward solve takes fewer steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from ..dense import DenseOutput
from ..integrate import Hooks
from ..linalg import make_linear_solver
from ..norms import rms_norm
from ..options import validate_options
from ..problem import Problem, check_options, make_problem, retime
from ..run import failure, run
from ..solvers import MethodSpec, get_method
from ..stats import SolveError, SolveStats, Status
from .adjoint_jacobian import AdjointBlockSolver
from .interpolating_adjoint import (
    InterpolatingAdjointSolver,
    interpolating_dynamics,
    lanes_interpolating_backward,
)

__all__ = ["AdjointConfig", "make_adjoint_config", "attach_adjoint", "check_lanes_config"]


@dataclass(frozen=True)
class AdjointConfig:
    """How the backward (augmented) solve is run."""

    rtol: Any
    atol: Any
    spec: MethodSpec
    options: dict[str, Any]


def make_adjoint_config(rtol: Any, atol: Any, method: str | None, options: dict | None,
                        adjoint_rtol: Any, adjoint_atol: Any, adjoint_method: str | None,
                        adjoint_options: dict | None) -> AdjointConfig:
    """Defaults as torchdiffeq: the forward's tolerances, method and options (less ``norm``).

    An implicit forward method's backward solve defaults to ``kvaerno5``: implicit too, and
    its Newton iteration tolerates the block Jacobian the augmented system gets
    (``adjoint_jacobian.py``), where a Rosenbrock method would lose order.
    """
    if adjoint_method is None:
        adjoint_method = get_method(method).adjoint_default
    spec = get_method(adjoint_method if adjoint_method is not None else method)
    if adjoint_options is None:
        base = {k: v for k, v in (options or {}).items() if k != "norm"}
        adjoint_options = {k: v for k, v in base.items() if k in spec.valid_options}
    try:
        adj_opts = check_options(spec.name, adjoint_options, spec.valid_options)
        validate_options(adj_opts, adjoint=True)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"adjoint_options: {exc}") from None
    return AdjointConfig(
        rtol=rtol if adjoint_rtol is None else adjoint_rtol,
        atol=atol if adjoint_atol is None else adjoint_atol,
        spec=spec,
        options=adj_opts,
    )


def check_lanes_config(config: AdjointConfig, forward: MethodSpec | None = None) -> None:
    """Reject what the per-sample adjoint cannot honour (at ``solve``, not in backward)."""
    if forward is not None and forward.implicit and not config.spec.lanes_adjoint:
        raise ValueError("gradient='adjoint' with options['per_sample'] after an implicit "
                         "forward (interpolating) needs an ESDIRK or explicit Runge-Kutta "
                         f"adjoint_method (no df/dt terms), got {config.spec.name!r}")
    if not (forward is not None and forward.implicit) and (
            config.spec.implicit or not config.spec.per_sample):
        raise ValueError("gradient='adjoint' with options['per_sample'] needs an explicit "
                         f"Runge-Kutta adjoint_method, got {config.spec.name!r}")
    norm = config.options.get("norm")
    if norm is not None and norm != "seminorm":
        raise ValueError("with options['per_sample'], the adjoint always uses the seminorm "
                         "(parameter gradients are a quadrature outside error control); "
                         "adjoint_options['norm'] may only be 'seminorm'")
    for name, value in (("adjoint_rtol", config.rtol), ("adjoint_atol", config.atol)):
        if isinstance(value, Tensor):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and value >= 0):
            raise ValueError(f"with options['per_sample'], {name} must be a non-negative "
                             f"scalar (the per-sample adjoint takes no per-component "
                             f"tolerances; pass {name}=<number>), got {value!r}")


def _seminorm(state: tuple[Tensor, ...]) -> Tensor:
    # Only y and a count; g (the parameter gradient) is ignored.
    return torch.maximum(rms_norm(state[0]), rms_norm(state[1]))


def _seminorm_a(state: tuple[Tensor, ...]) -> Tensor:
    # The interpolating adjoint's state is (a, g): only a counts.
    return rms_norm(state[0])


def _without_y(norm: Callable, n: int) -> Callable:
    """A backward norm written for ``(y, a, g)`` applied to ``(a, g)`` (``y`` as zeros)."""
    def wrapped(state: tuple[Tensor, ...]) -> Tensor:
        return norm((torch.zeros_like(state[0]), *state))
    return wrapped


def _augmented_dynamics(problem: Problem, params: tuple[Tensor, ...]) -> Callable:
    func = problem.func
    sign = problem.sign

    def aug(tau: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        y, a = state[0], state[1]
        with torch.enable_grad():
            y_in = y.detach().requires_grad_(True)
            dy = func.at(sign * tau, y_in)  # canonical derivative dy/dτ
            if dy.requires_grad:
                # retain_graph: func may use a tensor computed once outside it from a parameter
                # (w = p * p, spline coefficients); that shared graph is walked at every
                # evaluation, as torchdiffeq does. dy's own graph is freed with dy either way.
                vjps = torch.autograd.grad(dy, (y_in, *params), -a, allow_unused=True,
                                            retain_graph=True)
            else:
                vjps = (None,) * (1 + len(params))
        da = vjps[0] if vjps[0] is not None else torch.zeros_like(a)
        if len(state) == 2:
            return dy.detach(), da
        dg = torch.cat([
            _flat_real(v if v is not None else torch.zeros_like(p)).to(a.dtype)
            for v, p in zip(vjps[1:], params)
        ])
        return dy.detach(), da, dg

    return _with_adjoint_callbacks(aug, problem)


def _with_adjoint_callbacks(aug: Callable, problem: Problem) -> Callable:
    """The user's ``callback_*_adjoint`` hooks become the augmented solve's plain callbacks
    (the loop runs ``aug`` with no suffix). The loop reports the augmented problem's own
    time, which is the forward's canonical time; map it and the (negative, backwards) step
    back to the user's time direction."""
    user = problem.user_func
    for name in ("callback_step", "callback_accept_step", "callback_reject_step"):
        cb = getattr(user, name + "_adjoint", None)
        if cb is not None:
            setattr(aug, name, _user_time_callback(cb, problem.sign))
    return aug


def _user_time_callback(cb: Callable, sign: float) -> Callable:
    def wrapped(t: Tensor, state: Any, dt: Tensor) -> Any:
        return cb(sign * t, state, sign * dt)

    return wrapped


class _Adjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, payload: tuple, spec: MethodSpec, config: AdjointConfig,
                stats: SolveStats, y0: Tensor, *params: Tensor) -> Tensor:  # type: ignore[override]
        problem, ys, pieces, failed = payload
        ctx.problem, ctx.config, ctx.stats, ctx.pieces = problem, config, stats, pieces
        ctx.failed = failed
        ctx.save_for_backward(ys, *params)
        return ys.clone()

    @staticmethod
    def backward(ctx, grad_ys: Tensor):  # type: ignore[override]
        if ctx.problem.per_sample:
            return _lanes_backward(ctx, grad_ys)
        problem: Problem = ctx.problem
        config: AdjointConfig = ctx.config
        ys, *params = ctx.saved_tensors
        params = tuple(params)
        f = problem.func
        nfe_before = f.nfe
        n = ys.shape[1]
        interpolating = ctx.pieces is not None
        options = _backward_options(config.options, problem, params)
        if interpolating:  # y(τ) from the forward dense output: see interpolating_adjoint.py
            trajectory = DenseOutput(problem, ctx.pieces).canonical
            aug = _with_adjoint_callbacks(
                interpolating_dynamics(f, params, trajectory, _flat_real), problem)
            if options.get("norm") is _seminorm:
                options["norm"] = _seminorm_a
            elif options.get("norm") is not None:
                options["norm"] = _without_y(options["norm"], n)
            if config.spec.implicit:
                options["linear_solver"] = InterpolatingAdjointSolver(
                    f, trajectory, n, params, make_linear_solver(config.options), _flat_real)
        else:
            aug = _augmented_dynamics(problem, params)
            if config.spec.implicit:
                # The augmented dynamics cannot be differentiated by autodiff (their a- and
                # g-parts are themselves gradients): the Jacobian comes in blocks from the
                # forward func (see adjoint_jacobian.py).
                options["linear_solver"] = AdjointBlockSolver(
                    f, n, make_linear_solver(config.options))
        options.pop("jacobian", None)
        dtype = ys.dtype
        a = grad_ys[-1].clone()
        sizes = [_real_numel(p) for p in params]
        g = torch.zeros(sum(sizes), dtype=dtype, device=ys.device) if params else None
        n_aug = 2 * n + (0 if g is None else g.numel())
        rtol = _backward_tolerance("adjoint_rtol", config.rtol, problem, n_aug)
        atol = _backward_tolerance("adjoint_atol", config.atol, problem, n_aug)
        if interpolating:  # no y in the state: drop its tolerances
            rtol = rtol[n:] if isinstance(rtol, Tensor) else rtol
            atol = atol[n:] if isinstance(atol, Tensor) else atol
        t_out = problem.t_out
        n_steps = 0
        aug_problem = None
        for i in range(len(t_out) - 1, 0, -1):
            if interpolating:
                state = (a,) if g is None else (a, g)
            else:
                state = (ys[i], a) if g is None else (ys[i], a, g)
            if aug_problem is None:  # validated once; later intervals only move in time
                times = torch.tensor([t_out[i], t_out[i - 1]], dtype=torch.float64)
                # Scalars are validated by make_problem; per-element tensors are put in after.
                aug_problem = make_problem(
                    aug, state, times, 1.0 if isinstance(rtol, Tensor) else rtol,
                    1.0 if isinstance(atol, Tensor) else atol, config.spec.name, options)
                if isinstance(rtol, Tensor) or isinstance(atol, Tensor):
                    aug_problem = replace(aug_problem, rtol=rtol, atol=atol)
            else:
                aug_problem = retime(aug_problem, (t_out[i], t_out[i - 1]),
                                     aug_problem.layout.flatten(state))
            with torch.no_grad():
                result = run(aug_problem, config.spec, callback_suffix="")[0]
            err = failure(aug_problem, result, fixed=not config.spec.adaptive)
            if err is not None:
                raise _backward_failure(err, problem, i) from None
            n_steps += result.stats.n_steps
            final = aug_problem.layout.unflatten(result.ys[-1])
            if interpolating:
                final = (None, *final)
            a = final[1] + grad_ys[i - 1]
            if g is not None:
                g = final[2]
        ctx.stats.nfe_backward += f.nfe - nfe_before
        ctx.stats.n_steps_backward += n_steps
        param_grads = []
        if g is not None:
            for p, piece in zip(params, torch.split(g, sizes)):
                if p.is_complex():
                    param_grads.append(torch.view_as_complex(piece.view(*p.shape, 2)))
                else:
                    param_grads.append(piece.view(p.shape).to(p.dtype))
        return (None, None, None, None, a, *param_grads)


class _LanesAugmented:
    """The per-sample adjoint system ``(y, a)`` in the backward time ``s = -τ`` (``τ`` the
    forward's canonical time), as a user function of the backward problem, plus the
    parameter quadrature.

    ``dy/ds = -f`` and ``da/ds = a ∂f/∂y``. The parameter gradient ``∫ a ∂f/∂θ ds`` is
    summed over the samples: it never feeds back into ``y`` or ``a``, so it is integrated
    as a quadrature with the accepted steps' own stages (one batched vector–Jacobian
    product per accepted iteration; :meth:`quadrature`, the loop's ``stage_hook``) and left
    out of the error control (the seminorm of Kidger, Chen & Lyons, ICML 2021).
    """

    def __init__(self, f: Any, params: tuple[Tensor, ...], b: Tensor):
        self.f, self.params, self.b = f, params, b
        self.stash: list[tuple[Tensor, Tensor]] = []
        self.grads: list[Tensor | None] = [None] * len(params)

    def __call__(self, s: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        y, a = state
        with torch.enable_grad():
            # A lane that does not step (a failed sample, a rejected trial) may carry inf or
            # nan here; the quadrature gives it a zero weight, which must not meet a nan.
            y_in = torch.nan_to_num(y.detach()).requires_grad_(True)
            dy = self.f(-s.double(), y_in)
            if dy.requires_grad:
                # retain_graph: the quadrature differentiates dy again, and func may use
                # a tensor computed once outside it from a parameter (w = p * p).
                (da,) = torch.autograd.grad(dy, y_in, a, retain_graph=True, allow_unused=True)
            else:
                da = None
        if self.params and dy.requires_grad:
            self.stash.append((dy, a))
        return -dy.detach(), torch.zeros_like(a) if da is None else da

    def quadrature(self, ok: Tensor, dt: Tensor) -> None:
        stash, self.stash = self.stash, []
        if not self.params or len(stash) < len(self.b) or not bool(ok.any()):
            return
        stash = stash[-len(self.b):]  # this iteration's stages, in order
        w = (dt * ok).to(self.b.dtype)[:, None]
        use = ok[:, None]  # where, not a zero weight: other samples' values may be nan
        with torch.enable_grad():
            total = sum(torch.where(use, dy * torch.where(use, self.b[i] * w * a, 0.0),
                                    0.0).sum()
                        for i, (dy, a) in enumerate(stash) if self.b[i] != 0)
            got = torch.autograd.grad(total, self.params, allow_unused=True, retain_graph=True)
        for i, g in enumerate(got):
            if g is not None:
                self.grads[i] = g if self.grads[i] is None else self.grads[i] + g


def _lanes_backward(ctx: Any, grad_ys: Tensor) -> tuple:
    """The per-sample adjoint: for every sample at once and each on its own interval, the
    system ``(y, a)`` backwards with the one loop, from the forward outputs, adding
    ``∂L/∂y`` at each output time; samples that failed forward get no gradient."""
    problem: Problem = ctx.problem
    config: AdjointConfig = ctx.config
    ys, *params = ctx.saved_tensors
    params = tuple(params)
    failed = ctx.failed
    C = problem.clock
    keep = ~failed[None, :, None]
    grad_ys = torch.where(keep, torch.nan_to_num(grad_ys), 0.0)
    ys = torch.where(keep, ys, ys[:1])
    f = problem.func
    options = {k: v for k, v in config.options.items() if k != "norm"}
    options["per_sample"] = True
    for name in ("jump_t", "step_t"):  # canonical backward time: s = -sign * t_user
        value = options.get(name)
        if value is not None:
            times = torch.as_tensor(value, dtype=torch.float64).to(C.device)
            times = times.expand(C.batch, -1) if times.ndim == 1 else times
            options[name] = -(C.sign[:, None] * times)
    if ctx.pieces is not None:  # after an implicit forward: y from its dense output
        return lanes_interpolating_backward(ctx, grad_ys, ys, params, options)
    rk = config.spec.build(config.options)
    aug = _LanesAugmented(f, params, rk.coefficients(ys.dtype, ys.device)[1])
    nfe_before = f.nfe
    a = grad_ys[-1].clone()
    n_steps = 0
    grid = C.grid
    hooks = Hooks(stage_hook=aug.quadrature, skip=failed)
    aug_problem = None
    for i in range(grid.shape[1] - 1, 0, -1):
        seg = torch.stack([-grid[:, i], -grid[:, i - 1]], 1)
        if aug_problem is None:
            aug_problem = make_problem(aug, (ys[i], a), seg, float(config.rtol),
                                       float(config.atol), config.spec.name, options)
        else:
            aug_problem = retime(aug_problem, seg, torch.cat([ys[i], a], -1))
        with torch.no_grad():
            result = run(aug_problem, config.spec, hooks, fsal=False, use_callbacks=False)[0]
        n_steps += result.stats.n_steps
        codes = result.status.tolist()
        bad = [b for b, c in enumerate(codes) if Status(c) != Status.SUCCESS and
               not bool(failed[b])]
        if bad:
            st = Status(codes[bad[0]])
            raise SolveError(st, float(-result.t_last[bad[0]]), (
                f"This was the adjoint's backward solve for samples {bad[:10]}; set "
                "adjoint_rtol/adjoint_atol/adjoint_options or use gradient='checkpoint'."),
                result.stats)
        a = result.y_last[:, ys.shape[2]:] + grad_ys[i - 1]
    ctx.stats.nfe_backward += f.nfe - nfe_before
    ctx.stats.n_steps_backward += n_steps
    grads = [g if g is None else g.to(p.dtype) for g, p in zip(aug.grads, params)]
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]
    return (None, None, None, None, a, *grads)


def _backward_failure(err: SolveError, problem: Problem, i: int) -> SolveError:
    span = (problem.user_time(problem.t_out[i]), problem.user_time(problem.t_out[i - 1]))
    detail = (f"This was the adjoint's backward solve (the augmented system from t={span[0]!r} "
              f"back to t={span[1]!r}), not the forward solve. Set its solver with "
              "adjoint_options (e.g. dict(norm='seminorm') or a larger max_num_steps), "
              "adjoint_rtol/adjoint_atol or adjoint_method, or use gradient='checkpoint'. "
              f"It said: {err}")
    out = SolveError(err.status, problem.user_time(err.t), detail, err.stats)
    out.partial_ys = getattr(err, "partial_ys", None)
    return out


def _real_numel(p: Tensor) -> int:
    return p.numel() * (2 if p.is_complex() else 1)


def _flat_real(v: Tensor) -> Tensor:
    return (torch.view_as_real(v) if v.is_complex() else v).reshape(-1)


def _backward_options(options: dict[str, Any], problem: Problem,
                      params: tuple[Tensor, ...]) -> dict[str, Any]:
    """The backward solve's options in its own time, which is the forward's canonical time.

    ``jump_t``/``step_t`` are given in the user's time; for a decreasing ``t`` the
    canonical time is its negative, so they are negated too (else they would miss every
    backward interval). A ``grid_constructor`` is called in the user's time, so it sees the
    backward interval as the user would (from ``t[i]`` back to ``t[i-1]``). A user's norm
    gets the augmented state as torchdiffeq gives it: ``(t_adjoint, *y, *a, *g)`` with
    ``y`` and ``a`` in the state's structure and one ``g`` per parameter, shaped like it
    (``t_adjoint`` is a 0-dim zero: odeflow computes time gradients outside the backward
    solve).
    """
    sign = problem.sign
    out = dict(options)
    norm = out.get("norm")
    if norm == "seminorm":
        out["norm"] = _seminorm
    elif norm is not None:
        out["norm"] = _user_adjoint_norm(norm, problem, params)
    for name in ("jump_t", "step_t"):
        value = out.get(name)
        if value is not None and sign < 0:
            if isinstance(value, Tensor):
                out[name] = -value.detach()
            else:
                out[name] = [-float(v) for v in value]
    constructor = out.get("grid_constructor")
    if constructor is not None and sign < 0:
        out["grid_constructor"] = lambda f, y0, t: -constructor(f, y0, -t)
    return out


def _user_adjoint_norm(norm: Callable, problem: Problem, params: tuple[Tensor, ...]) -> Callable:
    layout = problem.layout
    shapes = [p.shape + ((2,) if p.is_complex() else ()) for p in params]

    def as_user(x: Tensor) -> tuple[Tensor, ...]:
        out = layout.real_view(x)
        return out if isinstance(out, tuple) else (out,)

    def wrapped(state: tuple[Tensor, ...]) -> Tensor:
        y, a = state[0], state[1]
        parts = [y.new_zeros(()), *as_user(y), *as_user(a)]
        if len(state) > 2:
            sizes = [math.prod(s) for s in shapes]
            parts += [g.view(s) for g, s in zip(torch.split(state[2], sizes), shapes)]
        return norm(tuple(parts))

    return wrapped


def _backward_tolerance(name: str, tol: Any, problem: Problem, n_aug: int) -> Any:
    """A scalar tolerance as it is; a per-component one (tuple ``y0``) expanded over the
    augmented state ``(y, a, g)``: ``y`` and ``a`` get each component's value, ``g`` the
    smallest one."""
    if isinstance(tol, Tensor):
        if tol.numel() != 1:
            raise ValueError(f"{name} must be a scalar (or one per tuple component), got shape "
                             f"{tuple(tol.shape)}")
        return float(tol)
    if not isinstance(tol, (tuple, list)):
        return tol  # make_problem checks it
    layout = problem.layout
    if not layout.is_tuple or len(tol) != len(layout.sizes):
        raise ValueError(
            f"{name} given as a sequence needs one value per component of the tuple y0 "
            f"({len(layout.sizes) if layout.is_tuple else 'y0 is a tensor'}), got {len(tol)}"
        )
    values = [float(v) for v in tol]
    if any(not v >= 0 for v in values):
        raise ValueError(f"{name} must be non-negative, got {tol!r}")
    per_y = torch.cat([torch.full((size,), v, dtype=layout.real_dtype, device=layout.device)
                       for v, size in zip(values, layout.sizes)])
    n_g = n_aug - 2 * per_y.numel()
    tail = per_y.new_full((n_g,), min(values))
    return torch.cat([per_y, per_y, tail])


def attach_adjoint(problem: Problem, spec: MethodSpec, config: AdjointConfig,
                   stats: SolveStats, y0: Tensor, params: tuple[Tensor, ...], ys: Tensor,
                   pieces: list | None = None, failed: Tensor | None = None,
                   grid: Any = None) -> Tensor:
    """Give the outputs ``ys`` of a finished loop the adjoint gradient.

    ``ys`` (stacked flat, ``(T, n)`` or per sample ``(T, B, n)``, no graph) are at
    ``problem``'s output times, or at ``grid`` when given (an event solve passes
    ``(t0, t_event)``, per sample ``(B, 2)``). Backward solves the adjoint system from each
    output time back to the previous one with ``config`` and fills ``stats.nfe_backward``.
    ``pieces``, the forward loop's detached interpolants, make it the interpolating adjoint
    (``y`` read from them, not solved backwards: for stiff problems). ``failed`` samples
    get no gradient.
    """
    at = problem if grid is None else retime(problem, grid, problem.y0)
    return _Adjoint.apply((replace(at, y0=y0.detach()), ys, pieces, failed), spec, config,
                          stats, y0, *params)
