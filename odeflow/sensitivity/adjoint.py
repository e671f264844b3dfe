"""The adjoint sensitivity method: gradients by solving an augmented ODE backwards.

With ``a(t) = ∂L/∂y(t)``, the augmented state ``(y, a, g)`` obeys

    dy/dt = f(t, y, θ),   da/dt = -a ∂f/∂y,   dg/dt = -a ∂f/∂θ,

solved backwards from the last output time to the first in one solve that lands on every
output time between: there ``a`` gains the incoming ``∂L/∂y(t_i)`` and ``y`` starts again
from the forward solution's (Chen, Rubanova, Bettencourt & Duvenaud, "Neural Ordinary
Differential Equations", NeurIPS 2018, Appendix B). ``y`` is integrated backwards together
with ``a`` and ``g`` because the backward solve takes its own steps and needs ``y`` at them.
Each evaluation of the augmented system is one ``func`` call plus one vector–Jacobian
product.

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
from ..options import DEFAULT_MAX_NUM_STEPS, validate_options
from ..problem import Problem, check_options, check_tolerance, make_problem, retime
from ..run import failure, run
from ..solvers import CALLBACKS, MethodSpec, get_method
from ..stats import SolveError, SolveStats, Status
from . import add_grads, first_good_lane
from .adjoint_jacobian import AdjointBlockSolver, flat_grads
from .interpolating_adjoint import LanesQuadrature, trajectory_reader

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
    """Defaults as torchdiffeq: the forward's tolerances, method and options (less ``norm``),
    except the method after an implicit forward, and per sample after a multistep or SciPy
    forward (:meth:`MethodSpec.adjoint_default`)."""
    if adjoint_method is None:
        per_sample = bool((options or {}).get("per_sample", False))
        adjoint_method = get_method(method).adjoint_default(per_sample) or method
    spec = get_method(adjoint_method)
    if spec.external:
        raise ValueError("adjoint_method='scipy_solver' is not supported: the backward solve "
                         "restarts its state at every output time, which SciPy's solve cannot; "
                         "name an odeflow method (after a SciPy forward the default is dopri5)")
    if adjoint_options is None:
        adjoint_options = {k: v for k, v in (options or {}).items()
                           if k != "norm" and k in spec.valid_options}
    try:
        adj_opts = check_options(spec.name, adjoint_options, spec.valid_options)
        validate_options(adj_opts, adjoint=True)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"adjoint_options: {exc}") from None
    return AdjointConfig(rtol if adjoint_rtol is None else adjoint_rtol,
                         atol if adjoint_atol is None else adjoint_atol, spec, adj_opts)


def check_lanes_config(config: AdjointConfig, problem: Problem, forward: MethodSpec) -> None:
    """Reject what the per-sample adjoint cannot honour (at ``solve``, not in backward)."""
    if forward.implicit and not config.spec.lanes_adjoint:
        raise ValueError("gradient='adjoint' with options['per_sample'] after an implicit "
                         "forward (interpolating) needs an ESDIRK or explicit Runge-Kutta "
                         f"adjoint_method (no df/dt terms), got {config.spec.name!r}")
    if not forward.implicit and (config.spec.implicit or not config.spec.per_sample
                               or not config.spec.replayable):  # (RK stages: quadrature)
        raise ValueError("gradient='adjoint' with options['per_sample'] needs an explicit "
                         f"Runge-Kutta adjoint_method, got {config.spec.name!r}")
    norm = config.options.get("norm")
    if norm is not None and norm != "seminorm":
        raise ValueError("with options['per_sample'], the adjoint always uses the seminorm "
                         "(parameter gradients are a quadrature outside error control); "
                         "adjoint_options['norm'] may only be 'seminorm'")
    for name, value in (("adjoint_rtol", config.rtol), ("adjoint_atol", config.atol)):
        if isinstance(check_tolerance(name, value, problem.layout), Tensor):
            raise ValueError(f"with options['per_sample'], {name} must be a scalar (the "
                             f"per-sample adjoint takes no per-component tolerances; pass "
                             f"{name}=<number>), got {value!r}")


class _Quadrature:
    """Per sample, the parameter gradient ``∫ a ∂f/∂θ`` summed over the samples.

    It never feeds back into ``y`` or ``a``, so it is integrated as a quadrature with the
    accepted steps' own stages (one batched vector–Jacobian product per accepted
    iteration: the loop's ``stage_hook``) and left out of the error control (the seminorm
    of Kidger, Chen & Lyons, ICML 2021), instead of one ``g`` per sample in the state.
    """

    def __init__(self, params: tuple[Tensor, ...], b: Tensor):
        self.params, self.b = params, b
        # host sync: once, not per stage of every backward iteration
        self.used = [i for i, bi in enumerate(b.tolist()) if bi != 0]
        self.stash: list[tuple[Tensor, Tensor]] = []  # (dy, a) of each evaluation
        self.grads: list[Tensor | None] = [None] * len(params)

    def __call__(self, ok: Tensor, dt: Tensor) -> None:
        stash, self.stash = self.stash, []
        if not self.params or len(stash) < len(self.b) or not bool(ok.any()):
            return
        stash = stash[-len(self.b):]  # this iteration's stages, in order
        w = (dt * ok).to(self.b.dtype)[:, None]
        use = ok[:, None]  # where, not a zero weight: other samples' values may be nan
        with torch.enable_grad():
            total = sum(torch.where(use, dy * torch.where(use, self.b[i] * w * a, 0.0),
                                    0.0).sum()
                        for i, (dy, a) in enumerate(stash) if i in self.used)
            got = torch.autograd.grad(total, self.params, allow_unused=True, retain_graph=True)
        self.grads = add_grads(self.grads, got)


def _augmented_dynamics(problem: Problem, params: tuple[Tensor, ...],
                        quadrature: _Quadrature | None, y_at: Callable | None) -> Callable:
    """``(y, a[, g])`` dynamics in the forward's canonical time ``τ`` (the backward solve's
    user time). Per sample, ``g`` is not in the state: the explicit adjoint keeps each
    evaluation's ``(dy, a)`` for ``quadrature`` instead. With ``y_at`` (the interpolating
    adjoint, see interpolating_adjoint.py) the state is ``(a[, g])`` and ``y(τ)`` is read."""
    func, sign, lanes = problem.func, problem.clock.sign, problem.per_sample

    def aug(tau: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        if y_at is not None:
            y, a = y_at(tau), state[0]
        else:
            # Per sample, a lane that does not step (a failed sample, a rejected trial) may
            # carry inf or nan; the quadrature gives it a zero weight, which must not meet a nan.
            y, a = (torch.nan_to_num(state[0]) if lanes else state[0]), state[1]
        with torch.enable_grad():
            y_in = y.detach().requires_grad_(True)
            dy = func.at((sign * tau).to(tau.dtype), y_in)  # canonical derivative dy/dτ
            wrt = (y_in,) if lanes else (y_in, *params)
            # retain_graph: func may use a tensor computed once outside it from a parameter
            # (w = p * p, spline coefficients); that shared graph is walked at every
            # evaluation, as torchdiffeq does, and the quadrature differentiates dy again.
            # create_graph: per sample an implicit method takes its Jacobian by
            # differentiating this system in a (a requires grad then).
            vjps = (torch.autograd.grad(dy, wrt, -a, allow_unused=True, retain_graph=True,
                                        create_graph=lanes and a.requires_grad)
                    if dy.requires_grad else (None,) * len(wrt))
        da = vjps[0] if vjps[0] is not None else torch.zeros_like(a)
        if quadrature is not None and params and dy.requires_grad:
            quadrature.stash.append((dy, a))
        out = (da,) if y_at is not None else (dy.detach(), da)
        return out if len(state) == len(out) else (*out, flat_grads(vjps[1:], params, a.dtype))

    return aug


class _Adjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, payload: tuple, config: AdjointConfig, stats: SolveStats,
                y0: Tensor, *params: Tensor) -> Tensor:  # type: ignore[override]
        ctx.problem, ys, ctx.pieces, ctx.failed = payload
        ctx.config, ctx.stats = config, stats
        ctx.save_for_backward(ys, *params)
        return ys.clone()

    @staticmethod
    def backward(ctx, grad_ys: Tensor):  # type: ignore[override]
        """The system backwards with the one loop, in one solve from the last output time to
        the first, adding ``∂L/∂y`` at each. Per sample, every sample at once on its own
        times; samples that failed forward get no gradient."""
        problem: Problem = ctx.problem
        config: AdjointConfig = ctx.config
        ys, params = ctx.saved_tensors[0], ctx.saved_tensors[1:]
        f, C, lanes = problem.func, problem.clock, problem.per_sample
        interpolating = ctx.pieces is not None
        good = first_good_lane(ctx.failed) if lanes else 0
        if good is None:  # every sample failed (at t0: no step to interpolate); no gradient
            return (None, None, None, torch.zeros_like(grad_ys[-1]),
                    *(torch.zeros_like(p) for p in params))
        options = _backward_options(config.options, problem, params)
        hooks, quadrature = Hooks(skip=ctx.failed if lanes else None), None
        # After an implicit forward, y(τ) from its dense output: see interpolating_adjoint.py
        trajectory = DenseOutput(problem, ctx.pieces).canonical if interpolating else None
        if lanes:
            keep = ~ctx.failed[None, :, None]
            grad_ys = torch.where(keep, torch.nan_to_num(grad_ys), 0.0)
            ys = torch.where(keep, ys, ys[:1, good:good + 1])
            if interpolating:
                quadrature = hooks.dense = LanesQuadrature(f, params, trajectory)
            else:
                b = config.spec.build(config.options).coefficients(ys.dtype, ys.device)[1]
                quadrature = hooks.stage_hook = _Quadrature(params, b)
        aug = _augmented_dynamics(problem, params, quadrature if not interpolating else None,
                                  trajectory_reader(trajectory, lanes) if interpolating else None)
        if interpolating and options.get("norm") is not None:
            # A norm written for (y, a, g) sees y as zeros (the seminorm counts a alone).
            norm = options["norm"]
            options["norm"] = lambda s: norm((torch.zeros_like(s[0]), *s))
        # The user's callback_*_adjoint hooks become the augmented solve's plain callbacks;
        # the loop reports the forward's canonical time and the (backwards) step: map them
        # back to the user's time direction.
        for name in CALLBACKS:
            cb = getattr(problem.user_func, name + "_adjoint", None)
            if cb is not None:
                setattr(aug, name, lambda t, st, dt, cb=cb, s=C.sign: cb(s * t, st, s * dt))
        if config.spec.implicit and not lanes:  # (per sample: the per-lane Newton's own)
            # The augmented dynamics cannot be differentiated by autodiff (their a- and
            # g-parts are themselves gradients): the Jacobian comes in blocks from the
            # forward func (see adjoint_jacobian.py).
            options["linear_solver"] = AdjointBlockSolver(
                f, ys.shape[-1], make_linear_solver(config.options), trajectory, params)
        a = grad_ys[-1].clone()
        sizes = [p.numel() * (2 if p.is_complex() else 1) for p in params]
        g = (ys.new_zeros(sum(sizes)),) if params and not lanes else ()
        n_g, with_y = sum(sizes) * len(g), not interpolating
        rtol = _backward_tolerance("adjoint_rtol", config.rtol, problem, n_g, with_y)
        atol = _backward_tolerance("adjoint_atol", config.atol, problem, n_g, with_y)
        # One backward solve from the last output time to the first, landing on each output
        # time between (step_t: _backward_options), where the state jumps (_OutputJumps).
        span = torch.stack([C.grid[:, -1], C.grid[:, 0]], 1) if lanes else torch.tensor(
            [C.grid[-1], C.grid[0]], dtype=torch.float64)
        state = (a, *g) if interpolating else (ys[-1], a, *g)
        aug_problem = replace(make_problem(  # scalar tolerances are validated by make_problem
            aug, state, span, 1.0 if isinstance(rtol, Tensor) else rtol,
            1.0 if isinstance(atol, Tensor) else atol, options),
            rtol=rtol, atol=atol)
        if C.n_out > 2:
            hooks.land = _OutputJumps(-C.grid if lanes else [-v for v in C.grid], ys, grad_ys,
                                      aug_problem.layout, interpolating)
        nfe_before = f.nfe
        with torch.no_grad():  # (per sample every stage is evaluated: the quadrature's)
            result = run(aug_problem, config.spec, hooks, fsal=not lanes)[0]
        _check_backward(problem, aug_problem, result, config)
        if isinstance(quadrature, LanesQuadrature):
            quadrature.flush()
        final = aug_problem.layout.unflatten(result.y_last if lanes else result.ys[-1])
        final = (None, *final) if interpolating else final
        a, g = final[1] + grad_ys[0], tuple(final[2:])
        ctx.stats.nfe_backward += f.nfe - nfe_before
        ctx.stats.n_steps_backward += result.stats.n_steps
        if quadrature is not None:
            grads = [torch.zeros_like(p) if q is None else q.to(p.dtype)
                     for q, p in zip(quadrature.grads, params)]
        else:
            grads = [torch.view_as_complex(piece.view(*p.shape, 2)) if p.is_complex()
                     else piece.view(p.shape).to(p.dtype)
                     for p, piece in zip(params, torch.split(g[0], sizes) if g else ())]
        return (None, None, None, a, *grads)


class _OutputJumps:
    """The backward state's jumps at the forward's output times between the first and the
    last (the loop's ``land`` hook): ``a`` gains ``∂L/∂y(t_i)``, and the plain adjoint's
    ``y`` starts again from the forward solution's ``y(t_i)``. ``times``: the output times in
    the backward solve's canonical time (per sample ``(B, T)``); ``k`` each lane's next
    output index, counting down."""

    def __init__(self, times: Any, ys: Tensor, grad_ys: Tensor, layout: Any, interpolating: bool):
        self.times, self.ys, self.grad_ys = times, ys, grad_ys
        self.layout, self.interpolating = layout, interpolating
        self.k: Any = ys.shape[0] - 2
        if isinstance(times, Tensor):
            self.k = torch.full((ys.shape[1],), self.k, device=ys.device)
            self.lane = torch.arange(ys.shape[1], device=ys.device)

    def _jumped(self, y: Tensor, k: Any, lane: Any = slice(None)) -> Tensor:
        state = self.layout.unflatten(y)
        a = state[0 if self.interpolating else 1] + self.grad_ys[k, lane]
        new = (a, *state[1:]) if self.interpolating else (self.ys[k, lane], a, *state[2:])
        return self.layout.flatten(new)

    def __call__(self, t: Any, y: Tensor, landed: Any) -> Tensor | None:
        k = self.k
        if not isinstance(k, Tensor):  # one lane, on the host
            if k < 1 or t != self.times[k]:
                return None
            self.k -= 1
            return self._jumped(y, k)
        at = landed & (k > 0) & (t == self.times.gather(1, k[:, None])[:, 0])
        self.k = k - at.long()
        return torch.where(at[:, None], self._jumped(y, k, self.lane), y)


def _check_backward(problem: Problem, aug_problem: Problem, result: Any, config: AdjointConfig
                    ) -> None:
    """Raise the error of a failed backward solve (per sample, the samples that
    failed forward are skipped: they keep a success status), saying that it is the
    adjoint's backward solve and what to set."""
    if problem.per_sample:
        codes = result.status.tolist()
        bad = [b for b, c in enumerate(codes) if Status(c) != Status.SUCCESS]
        if bad:
            raise SolveError(Status(codes[bad[0]]), problem.clock.user_float(
                -result.t_last, bad[0]), (
                f"This was the adjoint's backward solve for samples {bad[:10]}; set "
                "adjoint_rtol/adjoint_atol/adjoint_options or use gradient='checkpoint'."),
                result.stats)
        return
    err = failure(aug_problem, result, fixed=config.spec.family == "fixed")
    if err is None:
        return
    C = problem.clock
    span = (C.sign * C.grid[-1], C.sign * C.grid[0])
    detail = (f"This was the adjoint's backward solve (the augmented system from t={span[0]!r} "
              f"back to t={span[1]!r}), not the forward solve. Set its solver with "
              "adjoint_options (e.g. dict(norm='seminorm') or a larger max_num_steps), "
              "adjoint_rtol/adjoint_atol or adjoint_method, or use gradient='checkpoint'. "
              f"It said: {err}")
    raise SolveError(err.status, C.sign * err.t, detail, err.stats,
                     partial_ys=err.partial_ys) from None


def _backward_options(options: dict[str, Any], problem: Problem,
                      params: tuple[Tensor, ...]) -> dict[str, Any]:
    """The backward solve's options in its own time, which is the forward's canonical time.

    ``jump_t``/``step_t`` are given in the user's time; for a decreasing ``t`` the
    canonical time is its negative, so they are negated too (else they would miss every
    backward interval; per sample, row by row). A ``grid_constructor`` is called in the
    user's time, so it sees the backward interval as the user would (from ``t[i]`` back to
    ``t[i-1]``). A user's norm gets the augmented state as torchdiffeq gives it:
    ``(t_adjoint, *y, *a, *g)`` with ``y`` and ``a`` in the state's structure and one ``g``
    per parameter, shaped like it (``t_adjoint`` is a 0-dim zero: odeflow computes time
    gradients outside the backward solve). Per sample the parameter gradient is a
    quadrature outside the error control, and no norm is given. The output times between
    the first and the last join ``step_t``: the one backward solve lands on each.
    """
    C = problem.clock
    out = {k: v for k, v in options.items() if k != "jacobian"}  # the forward J, not ours
    norm = out.pop("norm", None)
    out.pop("per_sample", None)  # one sample's per-sample solve runs (and adjoins) jointly
    if C.per_sample:
        out["per_sample"] = True
    elif norm == "seminorm":  # only y and a count; g (the parameter gradient) is ignored
        out["norm"] = lambda s: torch.maximum(rms_norm(s[0]), rms_norm(s[1]))
    elif norm is not None:
        out["norm"] = _user_adjoint_norm(norm, problem, params)
    for name in ("jump_t", "step_t"):
        value = out.get(name)
        if value is None:
            continue
        if C.per_sample:
            times = torch.as_tensor(value, dtype=torch.float64).to(C.device)
            out[name] = C.sign[:, None] * times.expand(C.batch, -1)
        elif C.sign < 0:
            out[name] = -value.detach() if isinstance(value, Tensor) else [-float(v)
                                                                          for v in value]
    constructor = out.get("grid_constructor")
    if constructor is not None and not C.per_sample and C.sign < 0:
        out["grid_constructor"] = lambda f, y0, t: -constructor(f, y0, -t)
    if C.n_out > 2:  # the output times between the first and the last: steps end there
        inner = C.grid[:, 1:-1] if C.per_sample else list(C.grid[1:-1])
        given = out.get("step_t")
        out["step_t"] = inner if given is None else (
            torch.cat([given, inner], 1) if C.per_sample else [*given, *inner])
        # (the per-interval solves each had max_num_steps)
        out["max_num_steps"] = (C.n_out - 1) * out.get("max_num_steps", DEFAULT_MAX_NUM_STEPS)
    return out


def _user_adjoint_norm(norm: Callable, problem: Problem, params: tuple[Tensor, ...]) -> Callable:
    layout = problem.layout
    shapes = [p.shape + ((2,) if p.is_complex() else ()) for p in params]
    sizes = [math.prod(s) for s in shapes]

    def as_user(x: Tensor) -> tuple[Tensor, ...]:
        out = layout.real_view(x)
        return out if isinstance(out, tuple) else (out,)

    def wrapped(state: tuple[Tensor, ...]) -> Tensor:
        y, a = state[0], state[1]
        parts = [y.new_zeros(()), *as_user(y), *as_user(a)]
        if len(state) > 2:
            parts += [g.view(s) for g, s in zip(torch.split(state[2], sizes), shapes)]
        return norm(tuple(parts))

    return wrapped


def _backward_tolerance(name: str, tol: Any, problem: Problem, n_g: int, with_y: bool) -> Any:
    """A scalar tolerance as it is; a per-component one (tuple ``y0``) expanded over the
    augmented state ``(y, a, g)`` (``(a, g)`` without ``with_y``: the interpolating
    adjoint): ``y`` and ``a`` get each component's value, ``g`` the smallest one."""
    tol = check_tolerance(name, tol, problem.layout)
    if not isinstance(tol, Tensor):
        return tol
    return torch.cat([*(tol,) * (1 + with_y), tol.new_full((n_g,), float(tol.min()))])


def attach_adjoint(problem: Problem, config: AdjointConfig, stats: SolveStats, y0: Tensor,
                   params: tuple[Tensor, ...], ys: Tensor, pieces: list | None = None,
                   failed: Tensor | None = None, grid: Any = None) -> Tensor:
    """Give the outputs ``ys`` of a finished loop the adjoint gradient.

    ``ys`` (stacked flat, ``(T, n)`` or per sample ``(T, B, n)``, no graph) are at
    ``problem``'s output times, or at ``grid`` when given (an event solve passes
    ``(t0, t_event)``, per sample ``(B, 2)``). Backward solves the adjoint system from the
    last output time back to the first with ``config`` and fills ``stats.nfe_backward``.
    ``pieces``, the forward loop's detached interpolants, make it the interpolating adjoint
    (``y`` read from them, not solved backwards: for stiff problems). ``failed`` samples
    get no gradient.
    """
    at = problem if grid is None else retime(problem, grid, problem.y0)
    return _Adjoint.apply((replace(at, y0=y0.detach()), ys, pieces, failed), config, stats,
                          y0, *params)
