"""The step contract every SDE method follows, and what a method declares about itself.

A method is a small class holding configuration only (its options). Its step is a pure
function of its inputs::

    y1, state1 = method.step(sde, t, dt, y, dW, state, levy)

where ``sde`` is an :class:`~odeflow.sde.base.SDEFunctions`, ``dW`` the Brownian
increment over ``[t, t + dt]`` (shape (B, m)), ``state`` the tuple of tensors the method
carries between steps (``()`` for most; see :meth:`SDEMethod.init_state`) and ``levy`` a
:class:`Levy` holding what the method declared it needs. Methods never loop and never
query the Brownian motion: the stepper of odeflow.sde.steps does, on
odeflow's one loop.

Requirements are declared on the class (no name lists elsewhere):

1. ``name``: the ``method=`` string (a member of ``METHODS``).
2. ``sde_types`` and ``noise_types`` it supports.
3. ``levy``: what the step reads from ``levy`` — ``"none"``, ``"space-time"`` (``U``)
   or ``"area"`` (``A``); the Brownian motion must provide it.
4. ``strong_orders``: strong order per noise type; ``weak_order``.
5. ``option_keys``: the ``options=`` keys it accepts.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

from ..settings import LEVY_AREA_APPROXIMATIONS, NOISE_TYPES

__all__ = ["Levy", "SDEMethod", "LEVY_PROVIDERS"]

#: Which ``levy_area_approximation`` settings of a Brownian motion provide each need.
LEVY_PROVIDERS = {
    "none": tuple(LEVY_AREA_APPROXIMATIONS.all()),
    "space-time": (LEVY_AREA_APPROXIMATIONS.space_time, LEVY_AREA_APPROXIMATIONS.davie,
                   LEVY_AREA_APPROXIMATIONS.foster),
    "area": (LEVY_AREA_APPROXIMATIONS.davie, LEVY_AREA_APPROXIMATIONS.foster),
}


def axpy(y: Tensor, x: Tensor, a: float | Tensor) -> Tensor:
    """``y + a x`` in one kernel: ``a`` a step-size factor, a float for a shared grid or a
    ``(B, 1)`` tensor of per-sample steps (:mod:`odeflow.sde.per_sample`)."""
    return torch.add(y, x, alpha=a) if isinstance(a, (int, float)) else torch.addcmul(y, x, a)


def two_stage(sde, t: float, dt, y: Tensor, dW: Tensor, c: float, b1: float,
              b2: float) -> Tensor:
    """A two-stage Stratonovich Runge–Kutta step with one Brownian increment (Kloeden &
    Platen 1992, §11.1): ``k(s, x) = f(s, x) dt + g(s, x) dW``, ``k1 = k(t, y)``,
    ``k2 = k(t + c dt, y + c k1)``, ``y1 = y + b1 k1 + b2 k2`` (Heun: ``c = 1``,
    ``b = (1/2, 1/2)``; midpoint: ``c = 1/2``, ``b = (0, 1)``)."""
    f, g_dW = sde.f_and_g_prod(t, y, dW)
    k1 = f * dt + g_dW
    f2, g2_dW = sde.f_and_g_prod(t + c * dt, y + c * k1, dW)
    k2 = f2 * dt + g2_dW
    y1 = y + (k2 if b2 == 1 else b2 * k2)
    return y1 + b1 * k1 if b1 else y1


class Levy(NamedTuple):
    """Iterated integrals of the step besides ``dW``.

    Attributes:
        U: ``∫_t^{t+dt} (W(s) - W(t)) ds`` (= I_(1,0)), shape (B, m), or None.
        A: the Lévy area, shape (B, m, m), or None.
    """

    U: Tensor | None = None
    A: Tensor | None = None


class SDEMethod:
    """Base class of a method; see the module docstring for the contract."""

    name: ClassVar[str]
    sde_types: ClassVar[tuple[str, ...]]
    noise_types: ClassVar[tuple[str, ...]] = tuple(NOISE_TYPES.all())
    levy: ClassVar[str] = "none"
    strong_orders: ClassVar[dict[str, float]]
    weak_order: ClassVar[float] = 1.0
    option_keys: ClassVar[tuple[str, ...]] = ()
    #: how many drift / diffusion evaluations one step makes (documentation and tests)
    evals_per_step: ClassVar[tuple[int, int]] = (1, 1)

    def __init__(self, **options):
        unknown = set(options) - set(self.option_keys)
        if unknown:
            raise ValueError(f"method {self.name!r} does not accept options {sorted(unknown)}; "
                             f"valid options: {list(self.option_keys) or 'none'}")
        self.options = dict(options)

    @classmethod
    def levy_area_approximations(cls) -> tuple[str, ...]:
        """The Brownian ``levy_area_approximation`` settings this method can run with."""
        return LEVY_PROVIDERS[cls.levy]

    @classmethod
    def strong_order(cls, noise_type: str) -> float:
        return cls.strong_orders.get(noise_type, cls.strong_orders["general"])

    def init_state(self, sde, t0, y0: Tensor) -> tuple[Tensor, ...]:
        """The carried state before the first step (``()`` unless the method carries one)."""
        return ()

    def step(self, sde, t, dt, y: Tensor, dW: Tensor, state: tuple, levy: Levy
             ) -> tuple[Tensor, tuple]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(options={self.options})"
