"""Step-size control: the initial step heuristic and the I / PI / PID controllers.

One lane's work is scalar, in Python floats: on the CPU that is far cheaper than tensor
arithmetic on 0-dim tensors, and on a GPU the one host synchronisation per step (reading
the error norm) happens in the loop, not here. Per sample the same functions
(:meth:`PIDController.propose`, :func:`initial_step`) work on tensors of one value per
lane, without any host synchronisation. Controllers never evaluate
``func`` except :func:`initial_step`, which needs one extra evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = ["PIDController", "ControllerState", "initial_step", "starting_step",
           "CONTROLLER_PRESETS"]


class ControllerState(NamedTuple):
    """Memory of a PID controller: the error ratios of the last two accepted steps."""

    err_prev: float = 1.0
    err_prev2: float = 1.0


@dataclass(frozen=True)
class PIDController:
    """Proposes the next step size from the error ratio of the last attempt.

    The step factor after an accepted step is, in Söderlind's notation,
    ``safety * ε_n^(-β1/k) * ε_{n-1}^(-β2/k) * ε_{n-2}^(-β3/k)``, where ``ε`` is the
    error ratio (the norm of the scaled error, accept when ``ε ≤ 1``) and ``k`` is the
    order of the embedded error estimate plus one. After a rejection the plain integral
    rule ``safety * ε_n^(-1/k)`` is used, as Hairer & Wanner recommend. The factor is
    clipped to ``[dfactor, ifactor]`` (and, unless ``shrink_on_accept``, an accepted
    step never shrinks the next one, as in torchdiffeq).

    Presets (``options={"controller": name}``):

    * ``"integral"`` (default): ``β = (1, 0, 0)``; torchdiffeq's step-size *rule* (the same
      factor formula, safety, ``ifactor`` and ``dfactor``). It does not reproduce
      torchdiffeq's steps one for one: dopri5 here estimates its error with Dormand &
      Prince's embedded pair (torchdiffeq uses other weights, which give a different error
      estimate; see ``tools/dopri5_estimators.py``), and the last step is shortened to land
      on the end time (torchdiffeq steps past it and interpolates back).
    * ``"pi"``: ``β = (0.7, -0.4, 0)``, Gustafsson's PI controller as given by Hairer &
      Wanner, *Solving ODEs II*, §IV.2, eq. (2.43c).
    * ``"pid"``: ``β = (1/18, 1/9, 1/18)``, Söderlind's H312PID filter, from G. Söderlind,
      "Digital filters in adaptive time-stepping", ACM TOMS 29(1), 2003, Table III.

    Args:
        beta1, beta2, beta3: filter coefficients (see above).
        safety: safety factor applied to every proposal.
        ifactor: largest factor by which a step may grow.
        dfactor: smallest factor by which a step may shrink.
        shrink_on_accept: allow an accepted step to shrink the next one (PI/PID filters
            rely on it to avoid rejections).
    """

    beta1: float = 1.0
    beta2: float = 0.0
    beta3: float = 0.0
    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    shrink_on_accept: bool = False

    def __post_init__(self) -> None:
        for name in ("safety", "ifactor", "dfactor"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if self.dfactor > 1 or self.ifactor < 1:
            raise ValueError(
                f"need dfactor <= 1 <= ifactor, got dfactor={self.dfactor}, ifactor={self.ifactor}"
            )

    def init(self, clock: Any = None) -> ControllerState:
        """The controller's memory before the first step (one per lane of ``clock``)."""
        if clock is None or not clock.per_sample:
            return ControllerState()
        return ControllerState(clock.full(1.0), clock.full(1.0))

    def propose(self, dt: Any, err: Any, accepted: Any, k: int, state: ControllerState
                ) -> tuple[Any, ControllerState]:
        """Next step size after an attempt of size ``dt`` with error ratio ``err``.

        Python floats for one lane, or float64 tensors of one value per lane (``accepted``
        a mask; a lane's memory changes only when its step is accepted; no host
        synchronisation). Both give the same values: the lane rule is the scalar one with
        its branches as masks (``test_propose_on_lanes_is_propose_elementwise``). The
        memory is kept only by filters that read it (``beta2``, ``beta3``).
        """
        if isinstance(err, Tensor):
            return self._propose_lanes(dt, err, accepted, k, state)
        finite = math.isfinite(err)
        safe = max(err, 1e-300) if finite else 1.0
        if not accepted:  # the integral rule, never growing
            shrink = max(self.safety * safe ** (-1.0 / k), self.dfactor) if finite else (
                self.dfactor)
            return dt * min(shrink, 1.0), state
        if err == 0:
            factor = self.ifactor
        else:
            grow = self.safety * safe ** (-self.beta1 / k)
            if self.beta2:
                grow = grow * state.err_prev ** (-self.beta2 / k)
            if self.beta3:
                grow = grow * state.err_prev2 ** (-self.beta3 / k)
            floor = self.dfactor if self.shrink_on_accept else 1.0
            factor = min(max(grow, floor), self.ifactor)
        if not (self.beta2 or self.beta3):
            return dt * factor, state
        return dt * factor, ControllerState(max(err, 1e-10), state.err_prev)

    def _propose_lanes(self, dt: Tensor, err: Tensor, accepted: Tensor, k: int,
                       state: ControllerState) -> tuple[Tensor, ControllerState]:
        """:meth:`propose` per lane in few kernels (each costs microseconds of dispatch on a
        ``(B,)`` tensor): a non-finite error is mapped to ``1e300``, whose factor
        ``safety * 1e300^(-1/k)`` is below any ``dfactor`` (for ``k`` < 400), so the
        rejection branch needs no mask of its own; an integral filter (``beta1 = 1``)
        shares the power with the rejection rule."""
        safe = torch.nan_to_num(err, nan=1e300, posinf=1e300).clamp_(min=1e-300)
        grow = None if self.beta1 == 1.0 else self.safety * safe ** (-self.beta1 / k)
        base = safe.pow_(-1.0 / k).mul_(self.safety)  # (in place: fresh tensors, no graph)
        shrink = base.clamp(self.dfactor, 1.0)
        grow = base if grow is None else grow
        if self.beta2:
            grow = grow * state.err_prev ** (-self.beta2 / k)
        if self.beta3:
            grow = grow * state.err_prev2 ** (-self.beta3 / k)
        floor = self.dfactor if self.shrink_on_accept else 1.0
        grow = grow.clamp_(floor, self.ifactor)
        if self.beta2 or self.beta3 or self.safety * 1e300 ** (self.beta1 / k) < self.ifactor:
            # a zero error's 1e-300 might not reach ifactor here: it grows by ifactor
            grow = torch.where(err == 0, self.ifactor, grow)
        new_dt = torch.where(accepted, grow, shrink, out=grow).mul_(dt)
        if not (self.beta2 or self.beta3):
            return new_dt, state
        memory = torch.where(accepted, err.clamp(min=1e-10), state.err_prev)
        older = torch.where(accepted, state.err_prev, state.err_prev2)
        return new_dt, ControllerState(memory, older)


CONTROLLER_PRESETS: dict[str, dict[str, float | bool]] = {
    "integral": dict(beta1=1.0, beta2=0.0, beta3=0.0),
    "pi": dict(beta1=0.7, beta2=-0.4, beta3=0.0, shrink_on_accept=True),
    "pid": dict(beta1=1 / 18, beta2=1 / 9, beta3=1 / 18, shrink_on_accept=True),
}


def initial_step(
    func: Callable[[Any, Tensor], Tensor],
    t0: Any,
    y0: Tensor,
    f0: Tensor,
    order: int,
    rtol: float | Tensor,
    atol: float | Tensor,
    norm: Callable[[Tensor], Tensor],
) -> Any:
    """Starting step size by the algorithm of Hairer, Nørsett & Wanner.

    *Solving Ordinary Differential Equations I*, 2nd ed., §II.4, "Automatic Step Size
    Control", p. 169: compare the sizes of ``y0``, ``f0`` and a finite-difference estimate
    of the second derivative. Costs one evaluation of ``func``. ``order`` is the order of
    the embedded error estimate (4 for dopri5), the value Hairer's DOPRI5 code, SciPy and
    torchdiffeq use, so the first step is sized for the error that is controlled.

    ``t0`` is a float (one lane: returns a float) or ``(B,)`` per lane (returns ``(B,)``).
    """
    if isinstance(t0, Tensor):
        def probe(h0: Tensor) -> Tensor:
            return func(t0 + h0, y0 + h0.to(y0.dtype)[:, None] * f0)

        h = starting_step(probe, y0.detach(), f0.detach(), order, rtol, atol, norm)
        return torch.where(torch.isfinite(h), h, 1e-6)

    # One lane: starting_step's scalar arithmetic in Python floats (a few microseconds each
    # instead of a kernel), with the same roundings as the tensor form (its ``0.01 / d`` is
    # ``(1 / d) * 0.01``) and the same nan propagation.
    with torch.no_grad():
        scale = y0.abs() * rtol + atol
        # host sync: both norms in one read
        d0, d1 = torch.stack((norm(y0 / scale), norm(f0 / scale))).double().view(-1).tolist()
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        f1 = func(t0 + h0, torch.add(y0, f0, alpha=h0))
        d2 = float(norm((f1 - f0) / scale).double() / h0)  # host sync
    dmax = d1 if d1 >= d2 or d1 != d1 else d2
    if dmax <= 1e-15:
        h1 = max(h0 * 1e-3, 1e-6)
    elif order == 1:  # torch's x ** 0.5 rounds as neither math.sqrt nor pow: its own kernel
        h1 = float(torch.scalar_tensor((1.0 / dmax) * 0.01, dtype=torch.float64) ** 0.5)
    else:
        h1 = ((1.0 / dmax) * 0.01) ** (1.0 / (order + 1))
    h = 100 * h0
    h = h if h <= h1 or h != h else h1
    return h if math.isfinite(h) else 1e-6  # f non-finite at the probe: as the lanes' form


def starting_step(
    probe: Callable[[Tensor], Tensor],
    y0: Tensor,
    f0: Tensor,
    order: int,
    rtol: float | Tensor,
    atol: float | Tensor,
    norm: Callable[[Tensor], Tensor],
) -> Tensor:
    """The arithmetic of :func:`initial_step`, on tensors (float64).

    ``norm`` reduces to a scalar, or to one value per sample (``per_sample`` solves);
    ``probe(h0)`` returns ``f(t0 + h0, y0 + h0 f0)`` for the probe step ``h0``.
    """
    with torch.no_grad():
        scale = y0.abs() * rtol + atol
        d0 = norm(y0 / scale).double()
        d1 = norm(f0 / scale).double()
        # torch.where evaluates both branches; the masked inf/nan never reach the result.
        h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / d1)
        f1 = probe(h0)
        d2 = norm((f1 - f0) / scale).double() / h0
        dmax = torch.maximum(d1, d2)
        h1 = torch.where(dmax <= 1e-15, torch.clamp(h0 * 1e-3, min=1e-6),
                         (0.01 / dmax) ** (1.0 / (order + 1)))
        return torch.minimum(100 * h0, h1)
