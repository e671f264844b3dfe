"""``sdeint``: torchsde's entry point, with torchsde's arguments, defaults and returns.

Input goes through small validators (each error names the argument and the fix), the
user's SDE is wrapped once in :class:`~odeflow.sde.base.SDEFunctions`, a method class is
selected from its own declarations, and odeflow's one loop steps it
(:mod:`odeflow.sde.steps`).
Statistics are returned by :func:`last_stats` (and :func:`odeflow.last_stats`).
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..stats import SolveError, record_last_stats
from .adjoint import ReversibleHeunAdjoint, StochasticAdjoint
from .adjoint_sde import ADJOINT_METHODS, ADJOINT_NOISE
from .base import LogqpSDE, SDEFunctions, check_types, rename_methods
from .brownian import BaseBrownian, BrownianInterval
from .checkpoint import solve_sde_checkpointed
from .methods import ALL_METHODS, LEVY_PROVIDERS, select
from .per_sample import lane_times, noise_span, solve_sde_lanes
from .settings import LEVY_AREA_APPROXIMATIONS, METHODS, NOISE_TYPES, SDE_TYPES
from .steps import SDEStats, SDESteps, solve_sde

__all__ = ["sdeint", "sdeint_adjoint", "last_stats", "default_method"]

_LAST = threading.local()


def last_stats() -> SDEStats | None:
    """The :class:`~odeflow.sde.steps.SDEStats` of this thread's most recent ``sdeint``."""
    return getattr(_LAST, "stats", None)


def default_method(sde_type: str, noise_type: str) -> str:
    """torchsde's default: ``srk`` for Itô (``euler`` for general noise), else ``midpoint``."""
    if sde_type == SDE_TYPES.ito:
        return METHODS.euler if noise_type == NOISE_TYPES.general else METHODS.srk
    return METHODS.midpoint


def _check_ts(ts, y0: Tensor) -> tuple[Tensor, Any]:
    """``ts`` as a tensor and as Python floats for shared times; per-sample times
    (``(batch, T)``, see :mod:`odeflow.sde.per_sample`) as a float64 CPU tensor."""
    if (torch.is_tensor(ts) and ts.dim() == 2) or (
            isinstance(ts, (list, tuple)) and ts and all(isinstance(r, (list, tuple)) for r in ts)):
        return lane_times(ts, y0)
    if torch.is_tensor(ts):
        if ts.dim() != 1:
            raise ValueError(f"ts must be 1-D (shared times) or of shape (batch, T) (per-sample "
                             f"times), got shape {tuple(ts.shape)}")
        if ts.requires_grad:
            raise ValueError("ts must not require grad (gradients with respect to times are "
                             "not supported by sdeint)")
        values = [float(v) for v in ts.detach().cpu().tolist()]
    elif isinstance(ts, (list, tuple)) and all(isinstance(v, (int, float)) for v in ts):
        values = [float(v) for v in ts]
        ts = torch.tensor(values, dtype=y0.dtype, device=y0.device)
    else:
        raise ValueError("Evaluation times `ts` must be a 1-D Tensor or list/tuple of floats.")
    if len(values) < 1:
        raise ValueError("ts must hold at least one time")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError("Evaluation times `ts` must be strictly increasing; got "
                         f"{values[:6]}{'...' if len(values) > 6 else ''}")
    return ts, values


def _scalar(name: str, value) -> float:
    if torch.is_tensor(value):
        if value.requires_grad:
            raise ValueError(f"{name} must not require grad")
        value = value.item()
    if not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


def sdeint(sde, y0: Tensor, ts, bm: BaseBrownian | None = None, method: str | None = None,
           dt=1e-3, adaptive: bool = False, rtol=1e-5, atol=1e-4, dt_min=1e-5,
           options: dict | None = None, names: dict | None = None, logqp: bool = False,
           extra: bool = False, extra_solver_state=None, throw: bool = True,
           gradient: str = "direct", **unused_kwargs):
    """Solve an SDE; a drop-in for ``torchsde.sdeint``.

    Args:
        sde: an object with ``noise_type``, ``sde_type``, drift ``f(t, y)`` and diffusion
            ``g(t, y)`` (or the fused ``f_and_g``, ``g_prod``, ``f_and_g_prod``); see
            :mod:`odeflow.sde.base` for shapes per noise type.
        y0: initial state, shape (batch, d).
        ts: strictly increasing output times (1-D tensor or list of floats); ``ys[0] = y0``.
            odeflow extension: a ``(batch, T)`` tensor gives each sample its own times
            (fixed steps on its own grid ``ts[b, 0] + k dt``; ``f``/``g`` then get ``t`` of
            shape (batch, 1); see :mod:`odeflow.sde.per_sample`).
        bm: Brownian motion of shape (batch, m); default: a :class:`BrownianInterval` on
            ``[ts[0], ts[-1]]`` with the Lévy area the method needs.
        method: a name in ``METHODS``; default ``srk`` (Itô; ``euler`` for general noise)
            or ``midpoint`` (Stratonovich).
        dt: fixed step, or initial step when ``adaptive``.
        adaptive: step doubling with ``rtol``/``atol`` (not advised for ``euler`` with
            non-additive noise, which may converge to the wrong solution); ``dt_min`` is
            the smallest step it takes.
        options: method options (e.g. ``{"grad_free": True}`` for milstein).
        names: read the SDE's methods under other names, e.g. ``{"drift": "foo"}``.
        logqp: also return the increments of ``∫ ½|u|² dt`` with ``g u = f - h`` (needs
            ``h``), shape (T - 1, batch).
        extra: also return the method's final carried state (a tuple of tensors).
        extra_solver_state: that state, to start from (reversible_heun).
        throw: with ``False`` a failure (non-finite values) fills the remaining outputs
            with ``nan`` and is reported in :func:`last_stats` instead of raising.
        gradient: ``"direct"`` (backpropagation through the solver) or ``"checkpoint"``
            (an odeflow extension: the same gradients, to rounding, by replaying one step
            at a time in the backward pass, so memory holds one state per step instead of
            every step's graph; fixed steps, every method but ``reversible_heun``;
            gradients go to ``y0`` and ``sde.parameters()``, so ``sde`` must be an
            ``nn.Module``). See :mod:`odeflow.sde.checkpoint`.

    Returns:
        ``ys`` of shape (T, batch, d); ``(ys, log_ratio)`` if ``logqp``; with ``extra``
        the final solver state is appended.

    Raises:
        ValueError: bad types, shapes, times, method/noise combinations or options.
        odeflow.stats.SolveError: a non-finite state with ``throw=True``.

    Example::

        ys = sdeint(sde, torch.zeros(32, 3), torch.linspace(0, 1, 11), method="euler", dt=0.01)
    """
    if unused_kwargs:
        raise ValueError(f"sdeint got unexpected arguments {sorted(unused_kwargs)}")
    if gradient not in ("direct", "checkpoint"):
        raise ValueError(f"gradient must be 'direct' or 'checkpoint', got {gradient!r}")
    setup = _prepare(sde, y0, ts, bm, method, dt, adaptive, rtol, atol, dt_min, options, names,
                     logqp)
    state = setup.solver.init_state(setup.funcs, setup.t0, setup.y0) \
        if extra_solver_state is None else tuple(extra_solver_state)
    params = _checkpoint_params(sde, setup) if gradient == "checkpoint" else None
    ys, state = _solve(setup, state, throw, params)
    return _returns(ys, state, logqp, extra)


def _checkpoint_params(sde, setup: _Setup) -> tuple | None:
    """The tensors ``gradient="checkpoint"`` differentiates (None: nothing to replay)."""
    if setup.adaptive:
        raise ValueError("gradient='checkpoint' needs fixed steps (adaptive=False): an "
                         "adaptive step keeps two half steps, which a replay would not redo")
    if setup.method == METHODS.reversible_heun:
        raise ValueError("gradient='checkpoint' does not replay reversible_heun (it carries a "
                         "state between steps); use sdeint_adjoint(method='reversible_heun'), "
                         "exact in constant memory")
    if not isinstance(sde, torch.nn.Module):
        raise ValueError("gradient='checkpoint' differentiates sde.parameters(): sde must be an "
                         "nn.Module")
    params = tuple(p for p in sde.parameters() if p.requires_grad)
    return params if params or setup.y0.requires_grad else None


@dataclass
class _Setup:
    """What ``sdeint`` and ``sdeint_adjoint`` share after checking their arguments."""

    sde: Any
    funcs: SDEFunctions
    solver: Any
    method: str
    y0: Tensor
    ts: Tensor
    times: Any  # shared: a list of floats; per sample: a (batch, T) float64 CPU tensor
    bm: Any
    dt: float
    adaptive: bool
    rtol: float
    atol: float
    dt_min: float
    lanes: bool = False  # per-sample times (odeflow.sde.per_sample)
    t0: Any = None  # the start time as f and g get it: a float, or a (batch, 1) tensor


def _prepare(sde, y0, ts, bm, method, dt, adaptive, rtol, atol, dt_min, options, names,
             logqp) -> _Setup:
    """Check the arguments, wrap the SDE, select the method, make the Brownian motion."""
    sde = rename_methods(sde, names)
    if not hasattr(sde, "noise_type") or not hasattr(sde, "sde_type"):
        raise ValueError("sde must have the attributes noise_type and sde_type (subclass "
                         "odeflow.sde.SDEIto / SDEStratonovich, or set them)")
    check_types(sde.noise_type, sde.sde_type)
    if not torch.is_tensor(y0):
        raise ValueError("`y0` must be a torch.Tensor.")
    if y0.dim() != 2:
        raise ValueError(f"`y0` must be a 2-dimensional tensor of shape (batch, channels), got "
                         f"shape {tuple(y0.shape)}")
    dt, rtol, atol, dt_min = (_scalar(n, v) for n, v in
                              (("dt", dt), ("rtol", rtol), ("atol", atol), ("dt_min", dt_min)))
    if not dt > 0:
        raise ValueError(f"dt must be positive, got {dt}")
    if logqp:
        sde = LogqpSDE(sde)
        y0 = torch.cat((y0, y0.new_zeros((y0.size(0), 1))), dim=1)
    method = default_method(sde.sde_type, sde.noise_type) if method is None else method
    if method not in METHODS:
        raise ValueError(f"Expected method in {METHODS}, but found {method!r}.")
    # Warned before the compatibility checks, as torchsde does.
    if adaptive and method == METHODS.euler and sde.noise_type != NOISE_TYPES.additive:
        warnings.warn("Numerical solution is not guaranteed to converge to the correct solution "
                      "when using adaptive time-stepping with the Euler--Maruyama method with "
                      "non-additive noise.", stacklevel=3)
    method_cls = select(method, sde.sde_type)
    if sde.noise_type not in method_cls.noise_types:
        raise ValueError(f"method {method!r} does not support noise_type={sde.noise_type!r}; it "
                         f"supports {list(method_cls.noise_types)}")
    solver = method_cls(**(options or {}))
    ts_tensor, times = _check_ts(ts, y0)
    lanes = ts_tensor.dim() == 2
    if lanes and y0.size(0) == 1:  # one sample: its own times are shared times
        ts_tensor, times, lanes = ts_tensor[0], times[0].tolist(), False
    if lanes and adaptive:
        raise ValueError("per-sample `ts` of shape (batch, T) takes fixed steps only: pass "
                         "adaptive=False (the default) or one 1-D ts for the batch")
    t0 = ts_tensor[:, :1].to(y0.dtype) if lanes else times[0]
    span = noise_span(times, dt) if lanes else (times[0], times[-1])

    if bm is not None:
        if tuple(bm.shape)[:1] != (y0.size(0),) or len(bm.shape) != 2:
            raise ValueError(f"`bm` must be of shape (batch, noise_channels) with batch = "
                             f"{y0.size(0)}; got {tuple(bm.shape)}")
        if bm.dtype != y0.dtype:
            raise ValueError(f"the Brownian motion's dtype {bm.dtype} differs from y0's {y0.dtype}")
        if torch.device(bm.device) != y0.device:
            raise ValueError(f"the Brownian motion is on {bm.device}, y0 on {y0.device}")
    funcs = SDEFunctions(sde)
    m = funcs.check(t0 if lanes else ts_tensor[0], y0,
                    None if bm is None else tuple(bm.shape))
    funcs.counts.drift = funcs.counts.diffusion = 0
    if bm is None:
        need = {"none": LEVY_AREA_APPROXIMATIONS.none,
                "space-time": LEVY_AREA_APPROXIMATIONS.space_time,
                "area": LEVY_AREA_APPROXIMATIONS.foster}[solver.levy]
        # The dt hint makes queries near the grid t0 + k dt cheap; per-sample rows that start
        # elsewhere step off it, but their queries still fall in cells of width dt instead
        # of walking a deep tree from the root at each of the rows' positions.
        bm = BrownianInterval(t0=span[0], t1=span[1], size=(y0.size(0), m), dtype=y0.dtype,
                              device=y0.device, levy_area_approximation=need,
                              dt=None if adaptive else dt)
    elif bm.levy_area_approximation not in LEVY_PROVIDERS[solver.levy]:
        raise ValueError(f"method {method!r} needs the Brownian motion's levy_area_approximation "
                         f"in {list(LEVY_PROVIDERS[solver.levy])}, got "
                         f"{bm.levy_area_approximation!r}")

    return _Setup(sde, funcs, solver, method, y0, ts_tensor, times, bm, dt, adaptive, rtol, atol,
                  dt_min, lanes, t0)


def _solve(setup: _Setup, state: tuple, throw: bool, params: tuple | None = None
           ) -> tuple[Tensor, tuple]:
    """Run the solve from ``state`` (``params``: checkpointed, differentiating them); record
    the statistics for :func:`last_stats`."""
    y0, funcs, times = setup.y0, setup.funcs, setup.times
    stats = SDEStats()
    try:
        if params is not None:
            if setup.lanes:
                raise NotImplementedError(
                    "gradient='checkpoint' replays one shared grid of steps; per-sample ts of "
                    "shape (batch, T) works with gradient='direct'")
            ys, state, loop_stats = solve_sde_checkpointed(
                SDESteps(setup.solver, funcs, setup.bm, state, y0.shape, setup.dt_min), y0,
                setup.ts, times, setup.dt, params, throw)
        elif setup.lanes:
            ys, state, loop_stats = solve_sde_lanes(setup.solver, funcs, setup.bm, state, y0,
                                                    setup.ts, setup.dt, throw)
        else:
            stepper = SDESteps(setup.solver, funcs, setup.bm, state, y0.shape, setup.dt_min)
            ys, state, loop_stats = solve_sde(stepper, y0, setup.ts, times, setup.dt,
                                              setup.adaptive, setup.rtol, setup.atol,
                                              setup.dt_min, throw)
        stats.copy_forward(loop_stats)
    except SolveError as err:
        if err.stats is not None:
            stats.copy_forward(err.stats)
        raise
    finally:
        stats.nfe_drift, stats.nfe_diffusion = funcs.counts.drift, funcs.counts.diffusion
        stats.nfe = stats.nfe_drift + stats.nfe_diffusion
        _LAST.stats = stats
        record_last_stats(stats)
    return ys, state


def _returns(ys: Tensor, state, logqp: bool, extra: bool):
    """torchsde's return values: ``ys``, ``(ys, log_ratio)``, each with the state if ``extra``."""
    if logqp:
        ys, log_ratio = ys[..., :-1], ys[..., -1]
        out = (ys, log_ratio[1:] - log_ratio[:-1])
        return out + (state,) if extra else out
    return (ys, state) if extra else ys


def sdeint_adjoint(sde, y0: Tensor, ts, bm: BaseBrownian | None = None, method: str | None = None,
                   adjoint_method: str | None = None, dt=1e-3, adaptive: bool = False,
                   adjoint_adaptive: bool = False, rtol=1e-5, adjoint_rtol=1e-5, atol=1e-4,
                   adjoint_atol=1e-4, dt_min=1e-5, options: dict | None = None,
                   adjoint_options: dict | None = None, adjoint_params=None,
                   names: dict | None = None, logqp: bool = False, extra: bool = False,
                   extra_solver_state=None, throw: bool = True, **unused_kwargs):
    """Solve an SDE with gradients by an adjoint; a drop-in for ``torchsde.sdeint_adjoint``.

    The forward solve is :func:`sdeint`'s, without a graph. The backward pass is

    * the stochastic adjoint (Li et al. 2020; :mod:`odeflow.sde.adjoint_sde`): the adjoint
      SDE solved backwards on the same Brownian motion with ``adjoint_method``, for every
      method, SDE type and noise type. Its gradients are those of the SDE's solution and
      approach backpropagation through the forward solve as ``dt -> 0`` (not equal to it
      at a given ``dt``; use ``sdeint`` for that);
    * for ``method="reversible_heun"`` with ``adjoint_method="adjoint_reversible_heun"``
      (its default), the algebraically reversible adjoint (Kidger et al. 2021;
      :mod:`odeflow.sde.adjoint`): equal to backpropagation through the forward solve to
      rounding, fixed steps only.

    Memory does not grow with the number of steps in either case.

    Args:
        sde, y0, ts, bm, method, dt, adaptive, rtol, atol, dt_min, options, names, logqp,
        extra, extra_solver_state, throw: as :func:`sdeint`.
        adjoint_method: the method of the backward solve; default as torchsde:
            ``adjoint_reversible_heun`` for ``reversible_heun``, else ``milstein`` (Itô,
            diagonal noise), ``euler`` (Itô, other noise) or ``midpoint`` (Stratonovich).
            One of ``euler``, ``milstein``, ``midpoint``, ``heun``, ``euler_heun``,
            ``log_ode`` (not for general or additive noise) that supports the adjoint's
            noise type (additive noise has a general-noise adjoint). A method of the other
            SDE type solves the adjoint in that form (an odeflow extension).
        adjoint_adaptive, adjoint_rtol, adjoint_atol: step-size control of the backward
            solve (its initial or fixed step is ``dt``).
        adjoint_options: options of ``adjoint_method`` (``grad_free`` is not available:
            the adjoint's diffusion matrix is never formed).
        adjoint_params: the tensors whose gradients the adjoint computes; default
            ``sde.parameters()`` (then ``sde`` must be an ``nn.Module``). Other tensors
            the SDE uses get no gradient (with the reversible Heun adjoint, only through
            the SDE's evaluation at ``ts[0]``).

    Returns:
        As :func:`sdeint`. The final solver state (``extra=True``) gets gradients only
        with the reversible Heun adjoint. Gradients with respect to ``ts`` are not
        computed (as in torchsde, ``ts`` must not require grad).

    Raises:
        NotImplementedError: ``adaptive`` steps with the reversible Heun adjoint.
        ValueError: as :func:`sdeint`; an unknown or unsuitable ``adjoint_method``;
            ``adjoint_params`` missing for a non-Module SDE.
    """
    if unused_kwargs:
        raise ValueError(f"sdeint_adjoint got unexpected arguments {sorted(unused_kwargs)}")
    if adjoint_params is None and not isinstance(sde, torch.nn.Module):
        raise ValueError("`sde` must be an instance of nn.Module to specify the adjoint "
                         "parameters; alternatively they can be specified explicitly via the "
                         "`adjoint_params` argument. If there are no parameters then it is "
                         "allowable to set `adjoint_params=()`.")
    adjoint_rtol, adjoint_atol = (_scalar(n, v) for n, v in
                                  (("adjoint_rtol", adjoint_rtol), ("adjoint_atol", adjoint_atol)))
    setup = _prepare(sde, y0, ts, bm, method, dt, adaptive, rtol, atol, dt_min, options, names,
                     logqp)
    if setup.lanes:
        raise NotImplementedError("sdeint_adjoint takes one 1-D ts for the batch (its backward "
                                  "retraces one shared grid); per-sample ts of shape (batch, T) "
                                  "works with sdeint, which backpropagates through the solver")
    params = tuple(sde.parameters()) if adjoint_params is None else tuple(adjoint_params)
    if not all(torch.is_tensor(p) for p in params):
        raise ValueError("adjoint_params must be tensors")
    params = tuple(p for p in params if p.requires_grad)
    state0 = setup.solver.init_state(setup.funcs, setup.t0, setup.y0) \
        if extra_solver_state is None else tuple(extra_solver_state)
    reversible = setup.method == METHODS.reversible_heun
    if adjoint_method is None:
        adjoint_method = METHODS.adjoint_reversible_heun if reversible else \
            _default_adjoint_method(setup.funcs.sde_type, setup.funcs.noise_type)
    if adjoint_method == METHODS.adjoint_reversible_heun:
        if not reversible:
            raise ValueError("adjoint_method='adjoint_reversible_heun' needs "
                             f"method='reversible_heun'; got method={setup.method!r}")
        ys, state = _reversible_heun_adjoint(setup, state0, params, adaptive or adjoint_adaptive,
                                             adjoint_options, throw)
    else:
        if reversible:
            warnings.warn(f"method='reversible_heun', but adjoint_method={adjoint_method!r}: the "
                          "stochastic adjoint is used, whose gradients are not exact at a "
                          "given dt (adjoint_method='adjoint_reversible_heun' is)", stacklevel=2)
        plan = _adjoint_plan(setup, adjoint_method, adjoint_options, adjoint_adaptive,
                             adjoint_rtol, adjoint_atol)
        final = []

        def run():
            ys, state = _solve(setup, state0, throw)
            final.append(state)
            plan.stats = last_stats()
            return ys

        if len(setup.times) == 1:
            ys, state = setup.y0.unsqueeze(0), state0
        elif setup.y0.requires_grad or params:
            ys = StochasticAdjoint.apply(run, plan, setup.y0, *params)
            state = final[0]
        else:  # nothing to differentiate: the plain solve, without a graph (as the Function)
            with torch.no_grad():
                ys, state = _solve(setup, state0, throw)
    return _returns(ys, state, logqp, extra)


def _default_adjoint_method(sde_type: str, noise_type: str) -> str:
    """torchsde's: ``milstein`` for Itô diagonal noise, ``euler`` for other Itô, else
    ``midpoint``."""
    if sde_type == SDE_TYPES.ito:
        return METHODS.milstein if noise_type == NOISE_TYPES.diagonal else METHODS.euler
    return METHODS.midpoint


@dataclass
class _AdjointPlan:
    """What the stochastic adjoint's backward needs (see ``StochasticAdjoint``)."""

    funcs: SDEFunctions
    bm: Any
    times: list
    dt: float
    dt_min: float
    solver: Any
    sde_type: str
    adaptive: bool
    rtol: float
    atol: float
    stats: SDEStats | None = None


def _adjoint_plan(setup: _Setup, adjoint_method, adjoint_options, adaptive: bool, rtol: float,
                  atol: float) -> _AdjointPlan:
    """Check ``adjoint_method`` and its options against the adjoint SDE; select its class."""
    if adjoint_method not in ADJOINT_METHODS:
        raise ValueError(f"adjoint_method must be one of {list(ADJOINT_METHODS)} (methods that "
                         "need the diffusion matrix cannot solve the adjoint SDE, which never "
                         f"forms it), got {adjoint_method!r}")
    funcs = setup.funcs
    noise = ADJOINT_NOISE[funcs.noise_type]
    sde_type = funcs.sde_type
    if not any(sde_type in c.sde_types for c in ALL_METHODS if c.name == adjoint_method):
        sde_type = next(t for t in SDE_TYPES.all() if t != funcs.sde_type)
    method_cls = select(adjoint_method, sde_type)
    if noise not in method_cls.noise_types or (adjoint_method == METHODS.log_ode_midpoint
                                               and noise == NOISE_TYPES.general):
        raise ValueError(f"adjoint_method {adjoint_method!r} does not support the adjoint of "
                         f"noise_type={funcs.noise_type!r} (whose noise type is {noise!r})")
    if (adjoint_options or {}).get("grad_free"):
        raise ValueError("adjoint_options={'grad_free': True} is not available: the adjoint "
                         "SDE never forms its diffusion matrix")
    solver = method_cls(**(adjoint_options or {}))
    if setup.bm.levy_area_approximation not in LEVY_PROVIDERS[solver.levy]:
        raise ValueError(f"adjoint_method {adjoint_method!r} needs the Brownian motion's "
                         f"levy_area_approximation in {list(LEVY_PROVIDERS[solver.levy])}, got "
                         f"{setup.bm.levy_area_approximation!r}")
    return _AdjointPlan(funcs, setup.bm, setup.times, setup.dt, setup.dt_min, solver, sde_type,
                        adaptive, rtol, atol)


def _reversible_heun_adjoint(setup: _Setup, state0: tuple, params: tuple, adaptive: bool,
                             adjoint_options, throw: bool) -> tuple[Tensor, tuple]:
    """``reversible_heun`` with its algebraically reversible adjoint (fixed steps)."""
    if adaptive:
        raise NotImplementedError("the reversible Heun adjoint retraces the forward's fixed "
                                  "grid: adaptive=True / adjoint_adaptive=True are not "
                                  "supported with adjoint_method='adjoint_reversible_heun'")
    if adjoint_options:
        raise ValueError(f"adjoint_method 'adjoint_reversible_heun' takes no adjoint_options; "
                         f"got {sorted(adjoint_options)}")
    if len(state0) != 3 or not all(torch.is_tensor(s) for s in state0):
        raise ValueError("extra_solver_state for reversible_heun is the tuple (f(z), g(z), z) "
                         "returned with extra=True")
    if len(setup.times) == 1:
        return setup.y0.unsqueeze(0), state0
    def run(start):
        return _solve(setup, start, throw)

    ys, *state = ReversibleHeunAdjoint.apply(run, setup, setup.y0, *state0, *params)
    return ys, tuple(state)
