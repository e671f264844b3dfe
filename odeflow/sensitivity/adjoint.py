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

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from ..integrate import run_loop
from ..norms import rms_norm
from ..problem import Problem, check_options, make_problem
from ..solvers import MethodSpec, get_method
from ..stats import SolveStats

__all__ = ["AdjointConfig", "make_adjoint_config", "solve_adjoint"]


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
    """Defaults as torchdiffeq: the forward's tolerances, method and options (less ``norm``)."""
    spec = get_method(adjoint_method if adjoint_method is not None else method)
    if adjoint_options is None:
        base = {k: v for k, v in (options or {}).items() if k != "norm"}
        adjoint_options = {k: v for k, v in base.items() if k in spec.valid_options}
    adj_opts = check_options(spec.name, adjoint_options, spec.valid_options)
    norm = adj_opts.get("norm")
    if norm is not None and not callable(norm) and norm != "seminorm":
        raise ValueError(
            f"adjoint_options['norm'] must be 'seminorm' or a callable, got {norm!r}"
        )
    return AdjointConfig(
        rtol=rtol if adjoint_rtol is None else adjoint_rtol,
        atol=atol if adjoint_atol is None else adjoint_atol,
        spec=spec,
        options=adj_opts,
    )


def _seminorm(state: tuple[Tensor, ...]) -> Tensor:
    # Only y and a count; g (the parameter gradient) is ignored.
    return torch.maximum(rms_norm(state[0]), rms_norm(state[1]))


def _augmented_dynamics(problem: Problem, params: tuple[Tensor, ...]) -> Callable:
    func = problem.func
    sign = problem.sign

    def aug(tau: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        y, a = state[0], state[1]
        with torch.enable_grad():
            y_in = y.detach().requires_grad_(True)
            dy = func.at(sign * tau, y_in)  # canonical derivative dy/dτ
            if dy.requires_grad:
                vjps = torch.autograd.grad(dy, (y_in, *params), -a, allow_unused=True)
            else:
                vjps = (None,) * (1 + len(params))
        da = vjps[0] if vjps[0] is not None else torch.zeros_like(a)
        if len(state) == 2:
            return dy.detach(), da
        dg = torch.cat([
            (v if v is not None else torch.zeros_like(p)).reshape(-1).to(a.dtype)
            for v, p in zip(vjps[1:], params)
        ])
        return dy.detach(), da, dg

    user = problem.user_func
    for name in ("callback_step", "callback_accept_step", "callback_reject_step"):
        cb = getattr(user, name + "_adjoint", None)
        if cb is not None:
            setattr(aug, name, cb)
    return aug


class _Adjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, problem: Problem, spec: MethodSpec, config: AdjointConfig,
                stats: SolveStats, y0: Tensor, *params: Tensor) -> Tensor:  # type: ignore[override]
        prob = replace(problem, y0=y0.detach())
        with torch.no_grad():
            result = run_loop(prob, spec)
            ys = torch.stack(result.ys)
        for name in ("n_steps", "n_accepted", "n_rejected", "status", "message"):
            setattr(stats, name, getattr(result.stats, name))
        stats.nfe = problem.func.nfe
        ctx.problem, ctx.config, ctx.stats = prob, config, stats
        ctx.save_for_backward(ys, *params)
        return ys

    @staticmethod
    def backward(ctx, grad_ys: Tensor):  # type: ignore[override]
        problem: Problem = ctx.problem
        config: AdjointConfig = ctx.config
        ys, *params = ctx.saved_tensors
        params = tuple(params)
        f = problem.func
        nfe_before = f.nfe
        aug = _augmented_dynamics(problem, params)
        options = dict(config.options)
        if options.get("norm") == "seminorm":
            options["norm"] = _seminorm
        dtype = ys.dtype
        a = grad_ys[-1].clone()
        g = (torch.zeros(sum(p.numel() for p in params), dtype=dtype, device=ys.device)
             if params else None)
        t_out = problem.t_out
        n_steps = 0
        for i in range(len(t_out) - 1, 0, -1):
            state = (ys[i], a) if g is None else (ys[i], a, g)
            times = torch.tensor([t_out[i], t_out[i - 1]], dtype=torch.float64)
            aug_problem = make_problem(aug, state, times, config.rtol, config.atol,
                                       config.spec.name, options)
            with torch.no_grad():
                result = run_loop(aug_problem, config.spec, callback_suffix="_adjoint")
            n_steps += result.stats.n_steps
            final = aug_problem.layout.unflatten(result.ys[-1])
            a = final[1] + grad_ys[i - 1]
            if g is not None:
                g = final[2]
        ctx.stats.nfe_backward += f.nfe - nfe_before
        ctx.stats.n_steps_backward += n_steps
        param_grads = []
        if g is not None:
            for p, piece in zip(params, torch.split(g, [p.numel() for p in params])):
                param_grads.append(piece.view(p.shape).to(p.dtype))
        return (None, None, None, None, a, *param_grads)


def solve_adjoint(problem: Problem, spec: MethodSpec, config: AdjointConfig,
                  stats: SolveStats, y0: Tensor, params: tuple[Tensor, ...]) -> Tensor:
    """Solve with adjoint gradients; returns the stacked flat outputs ``(T, n)``."""
    return _Adjoint.apply(problem, spec, config, stats, y0, *params)
