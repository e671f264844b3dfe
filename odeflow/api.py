"""Public entry points: ``solve`` (returns a :class:`Solution`) and torchdiffeq's ``odeint*``.

(The module is ``api``, not ``odeint``, so that ``odeflow.odeint`` is always the function.)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .dense import DenseOutput
from .options import validate_options
from .pipeline import run_solve
from .problem import State, check_options
from .sensitivity import GRADIENTS
from .sensitivity.adjoint import make_adjoint_config
from .solution import Solution
from .solvers import get_method, warn_unsupported_callbacks

__all__ = ["Solution", "solve", "odeint", "odeint_adjoint", "odeint_dense", "odeint_event"]

#: A model that calls a solve can be compiled with ``torch.compile``: the solve itself runs
#: eagerly (one graph break each side). Its adaptive loop decides on the host at every step,
#: which would break a traced graph at every step and take minutes to compile.
_eager = torch.compiler.disable


@_eager
def solve(
    func: Callable[[Tensor, State], State],
    y0: State,
    t: Tensor,
    *,
    rtol: float | Sequence[float] = 1e-7,
    atol: float | Sequence[float] = 1e-9,
    method: str | None = None,
    options: dict[str, Any] | None = None,
    event_fn: Callable[[Tensor, State], Tensor] | None = None,
    gradient: str = "direct",
    adjoint_rtol: float | None = None,
    adjoint_atol: float | None = None,
    adjoint_method: str | None = None,
    adjoint_options: dict[str, Any] | None = None,
    adjoint_params: Sequence[Tensor] | None = None,
    event_direction: int | Sequence[int] | None = None,
    throw: bool = True,
    dense: bool = False,
    progress: bool = False,
) -> Solution:
    """Solve ``dy/dt = func(t, y)``, ``y(t[0]) = y0``, and return the solution at ``t``.

    Args:
        func: the vector field ``func(t, y)``; ``t`` is a 0-dim tensor (the state's real
            dtype and device), ``y`` has ``y0``'s structure; returns ``dy/dt`` alike.
        y0: initial state: a floating or complex tensor of any shape, or a tuple of tensors
            of one dtype and device.
        t: 1-D strictly increasing or strictly decreasing output times; ``t[0]`` is the
            initial time.
        rtol, atol: relative and absolute tolerances of adaptive methods (non-negative; for
            a tuple ``y0`` optionally one per component).
        method: one of :data:`odeflow.METHODS`; ``None`` means ``"dopri5"``.
        options: method options, named as in torchdiffeq (``step_size``, ``first_step``,
            ``max_num_steps``, ``norm``, ``jump_t``, ...) plus ``controller``. Unknown keys
            raise ``ValueError``.
        event_fn: stop where ``event_fn(t, y)`` crosses zero (see :func:`odeflow.odeint_event`);
            ``t`` is then ``[t0, t1]``, a bounded search (``t1 = ±inf`` lifts the bound;
            ``options["max_num_steps"]`` still applies), and the result has ``event_t``
            (and ``event_index``). ``odeint``/``odeint_adjoint`` use only ``t[0]``, as
            torchdiffeq does.
        event_direction: with ``event_fn``: ``+1`` rising crossings only, ``-1`` falling,
            ``0``/``None`` both; one value, or one per event value.
        gradient: ``"direct"`` (backprop through the solver), ``"adjoint"`` or
            ``"checkpoint"`` (exact backprop gradients at low memory); see
            :mod:`odeflow.sensitivity`.
        adjoint_rtol, adjoint_atol, adjoint_method, adjoint_options: the backward solve of
            ``gradient="adjoint"`` (default: the forward's); ``adjoint_options=
            dict(norm="seminorm")`` leaves parameter gradients out of its error control.
        adjoint_params: tensors whose gradients ``"adjoint"``/``"checkpoint"`` compute
            (default: ``func.parameters()`` for an ``nn.Module``; for a plain function with
            ``"checkpoint"``, the tensors ``func(t0, y0)`` depends on).
        dense: keep every step's interpolant, so that ``Solution.evaluate(t)`` and
            ``.derivative(t)`` give the solution anywhere in the span (adaptive methods at
            the order of their interpolant, fixed grids cubic Hermite; no gradient flows
            through them). Costs memory of a few states per step; nothing when off.
        progress: show a bar of ``t`` across the span (tqdm when installed, a text line on
            stderr otherwise), refreshed at most 10 times a second.
        throw: raise :class:`SolveError` on failure; if ``False``, return the solution with
            the outputs reached before the failure, ``nan`` at the later times, and the
            failure in ``stats.status`` (``stats`` is complete either way).

    Returns:
        A :class:`Solution` with ``ys``, ``ts``, ``stats`` (and ``event_t``).

    Raises:
        ValueError, TypeError: invalid arguments (the message names the argument).
        SolveError: the solve failed (too many steps, step size underflow, non-finite
            values) and ``throw`` is true.

    Example:
        >>> sol = odeflow.solve(lambda t, y: -y, torch.ones(3), torch.linspace(0, 1, 5))
        >>> sol.ys.shape, sol.stats.nfe
        (torch.Size([5, 3]), ...)
    """
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient={gradient!r} is not one of {GRADIENTS}")
    spec = get_method(method)
    opts = check_options(spec.name, options, spec.valid_options)
    validate_options(opts)
    adjoint_config = make_adjoint_config(  # checked now, not first inside backward()
        rtol, atol, method, options, adjoint_rtol, adjoint_atol, adjoint_method,
        adjoint_options) if gradient == "adjoint" else None
    warn_unsupported_callbacks(func, spec, adjoint_config.spec if adjoint_config else None)
    return run_solve(func, y0, t, rtol=rtol, atol=atol, spec=spec, options=opts,
                     event_fn=event_fn, gradient=gradient, adjoint_config=adjoint_config,
                     adjoint_params=adjoint_params, event_direction=event_direction,
                     throw=throw, dense=dense, progress=progress)


@_eager
def odeint(
    func: Callable[[Tensor, State], State],
    y0: State,
    t: Tensor,
    *,
    rtol: float | Sequence[float] = 1e-7,
    atol: float | Sequence[float] = 1e-9,
    method: str | None = None,
    options: dict[str, Any] | None = None,
    event_fn: Callable[[Tensor, State], Tensor] | None = None,
    gradient: str = "direct",
    adjoint_params: Sequence[Tensor] | None = None,
) -> State | tuple[Tensor, State]:
    """Integrate ``dy/dt = func(t, y)`` from ``y(t[0]) = y0``: torchdiffeq's ``odeint``.

    Same arguments and return value as ``torchdiffeq.odeint`` (so a script ports by changing
    its import), plus ``gradient``. See :func:`solve` for the arguments; the statistics of
    the call are available afterwards from :func:`odeflow.last_stats`. ``adjoint_params``
    (with ``gradient="adjoint"``/``"checkpoint"``) lists the tensors to differentiate; a
    plain function with ``gradient="checkpoint"`` needs none (see :func:`solve`).

    Returns:
        ``ys`` with ``ys[i] = y(t[i])`` (a tensor ``(len(t), *y0.shape)`` or a tuple of
        them); with ``event_fn``, ``(event_t, ys)`` as :func:`odeint_event` returns: as in
        torchdiffeq, every element of ``t`` but ``t[0]`` is then ignored (``t[1]`` only
        gives the direction) and the search runs until the event.

    Example:
        >>> t = torch.linspace(0, 1, 11)
        >>> ys = odeflow.odeint(lambda t, y: -2 * y, torch.tensor([1.0]), t)
        >>> ys.shape
        torch.Size([11, 1])

    References:
        Chen, Rubanova, Bettencourt & Duvenaud, "Neural Ordinary Differential Equations",
        NeurIPS 2018.
    """
    return _torchdiffeq(func, y0, t, event_fn, rtol=rtol, atol=atol, method=method,
                        options=options, gradient=gradient, adjoint_params=adjoint_params)


@_eager
def odeint_adjoint(
    func: Callable[[Tensor, State], State],
    y0: State,
    t: Tensor,
    *,
    rtol: float | Sequence[float] = 1e-7,
    atol: float | Sequence[float] = 1e-9,
    method: str | None = None,
    options: dict[str, Any] | None = None,
    event_fn: Callable[[Tensor, State], Tensor] | None = None,
    adjoint_rtol: float | None = None,
    adjoint_atol: float | None = None,
    adjoint_method: str | None = None,
    adjoint_options: dict[str, Any] | None = None,
    adjoint_params: Sequence[Tensor] | None = None,
) -> State | tuple[Tensor, State]:
    """``odeint`` whose gradients come from the adjoint method: torchdiffeq's ``odeint_adjoint``.

    Memory does not grow with the number of steps. ``func`` must be an ``nn.Module`` or
    ``adjoint_params`` must list the tensors it uses. The backward solve uses
    ``adjoint_rtol``/``adjoint_atol``/``adjoint_method``/``adjoint_options`` (default: the
    forward's); ``adjoint_options=dict(norm="seminorm")`` usually saves backward steps.
    Backward evaluation counts appear in ``odeflow.last_stats().nfe_backward`` after
    ``backward()``.

    Prefer ``odeint(..., gradient="checkpoint")`` when one state per step fits in memory:
    it gives the exact gradient of the forward solution, usually faster.

    Example:
        >>> ys = odeflow.odeint_adjoint(model, y0, t, adjoint_options=dict(norm="seminorm"))
        >>> ys[-1].sum().backward()

    References:
        Chen et al., NeurIPS 2018, Appendix B; Kidger, Chen & Lyons, "'Hey, that's not an
        ODE': Faster ODE Adjoints via Seminorms", ICML 2021.
    """
    if adjoint_params is None and not isinstance(func, torch.nn.Module):
        raise ValueError("odeint_adjoint needs func to be a torch.nn.Module, or adjoint_params="
                         "(tensors func uses) to know which parameters to differentiate")
    return _torchdiffeq(func, y0, t, event_fn, rtol=rtol, atol=atol, method=method,
                        options=options, gradient="adjoint", adjoint_rtol=adjoint_rtol,
                        adjoint_atol=adjoint_atol, adjoint_method=adjoint_method,
                        adjoint_options=adjoint_options, adjoint_params=adjoint_params)


def _torchdiffeq(func: Callable, y0: State, t: Tensor, event_fn: Callable | None,
                 **kwargs: Any) -> State | tuple[Tensor, State]:
    """``solve`` with torchdiffeq's return values (see :func:`odeint`); an event search runs
    in the direction of ``t[1] - t[0]``, forward for a single time."""
    if event_fn is None:
        return solve(func, y0, t, **kwargs).ys
    if not isinstance(t, Tensor) or t.ndim != 1 or t.numel() == 0:
        shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"t must be a non-empty 1-D tensor whose first element is the "
                         f"initial time, got {shape}")
    backward = t.numel() > 1 and bool(t[1] < t[0])  # host sync: once per solve
    sol = solve(func, y0, _unbounded(t[:1], backward), event_fn=event_fn, **kwargs)
    return sol.event_t, sol.ys


def _unbounded(t0: Tensor, backward: bool) -> Tensor:
    """The search times ``[t0, ±inf]`` (``t0`` of shape ``(1,)``)."""
    return torch.cat([t0, t0.detach() + (-math.inf if backward else math.inf)])


@_eager
def odeint_dense(
    func: Callable[[Tensor, State], State],
    y0: State,
    t0: Tensor | float,
    t1: Tensor | float,
    *,
    rtol: float | Sequence[float] = 1e-7,
    atol: float | Sequence[float] = 1e-9,
    method: str | None = None,
    options: dict[str, Any] | None = None,
) -> DenseOutput:
    """Solve from ``t0`` to ``t1`` and return the dense solution: torchdiffeq's ``odeint_dense``.

    Returns a :class:`~odeflow.dense.DenseOutput`; call it with a time or a 1-D tensor of
    times in ``[t0, t1]`` to get the solution there (``.derivative(t)`` gives ``dy/dt``).
    Any adaptive method (torchdiffeq's takes dopri5 only), tensor or tuple states; the
    values carry no gradient. Statistics are in :func:`odeflow.last_stats`.

    Example:
        >>> dense = odeflow.odeint_dense(lambda t, y: -y, torch.ones(1), 0.0, 2.0)
        >>> float(dense(1.0))  # ≈ exp(-1)
        0.367...
    """
    if not get_method(method).adaptive:
        raise ValueError(f"odeint_dense needs an adaptive method, got method={method!r}")
    if isinstance(options, dict) and options.get("per_sample"):
        raise ValueError("odeint_dense does not support options['per_sample']; use "
                         "solve(..., dense=True)")
    first = y0 if isinstance(y0, Tensor) else y0[0]
    times = torch.stack([torch.as_tensor(v, dtype=torch.float64).reshape(()) for v in (t0, t1)])
    with torch.no_grad():
        return solve(func, y0, times.to(first.device), rtol=rtol, atol=atol, method=method,
                     options=options, dense=True).dense


@_eager
def odeint_event(
    func: Callable[[Tensor, State], State],
    y0: State,
    t0: Tensor | float,
    *,
    event_fn: Callable[[Tensor, State], Tensor],
    reverse_time: bool = False,
    odeint_interface: Callable[..., Any] = odeint,
    **kwargs: Any,
) -> tuple[Tensor, State]:
    """Solve from ``t0`` until ``event_fn(t, y)`` crosses zero: torchdiffeq's ``odeint_event``.

    The search has no end time; it is bounded by ``options["max_num_steps"]`` (default
    100000 steps) and raises :class:`~odeflow.SolveError` past it. The event time is
    differentiable (implicit function theorem, exact for the discretised solution with
    ``odeint``; as accurate as the adjoint solve with ``odeint_adjoint``).

    Args:
        func: the vector field ``func(t, y)``.
        y0: initial state (tensor or tuple of tensors).
        t0: initial time (0-dim tensor, may require grad; a number becomes a tensor of the
            state's real dtype).
        event_fn: ``event_fn(t, y) -> Tensor`` of any fixed shape; the first value to cross
            zero ends the solve (``odeflow.last_stats().message`` says which; ``solve``
            returns it as ``event_index``). A value exactly zero at ``t0`` is not an event.
        reverse_time: search towards decreasing time.
        odeint_interface: :func:`odeflow.odeint`, :func:`odeflow.odeint_adjoint` or a
            ``functools.partial`` of them (e.g. ``partial(odeint, gradient="checkpoint")``).
        **kwargs: passed to ``odeint_interface`` (``rtol``, ``atol``, ``method``,
            ``options``, ``adjoint_params``, ...), plus ``event_direction`` (``+1`` rising,
            ``-1`` falling, ``0`` both; one value or one per value of ``event_fn``).

    Returns:
        ``(event_t, solution)``: ``event_t`` a 0-dim tensor of ``t0``'s dtype;
        ``solution`` the state at ``[t0, event_t]`` (shape ``(2, *y0.shape)``, or a tuple).

    Example:
        >>> event_t, ys = odeflow.odeint_event(lambda t, y: -torch.ones_like(y),
        ...                                    torch.tensor([1.0]), torch.tensor(0.0),
        ...                                    event_fn=lambda t, y: y[0])
        >>> float(event_t)
        1.0
    """
    direction = kwargs.pop("event_direction", None)
    if direction is not None:  # a copy of event_fn that carries it to solve
        event_fn = functools.partial(event_fn)
        event_fn.direction = direction  # type: ignore[attr-defined]
    if not isinstance(t0, Tensor):
        first = y0 if isinstance(y0, Tensor) else y0[0]
        t0 = torch.tensor(float(t0), dtype=first.real.dtype, device=first.device)
    return odeint_interface(func, y0, _unbounded(t0.reshape(-1)[:1], reverse_time),
                            event_fn=event_fn, **kwargs)

