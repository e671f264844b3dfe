"""The stepper contract: what every solver family gives the loops, and nothing more.

A stepper holds configuration only. Everything that changes during a solve travels
explicitly: the loop passes the solver's ``state`` into :meth:`Stepper.step` and keeps the
``state`` of the :class:`StepResult` when it accepts the step.

Implementer rules (the loops in ``integrate.py`` and the checkpointed replay rely on them):

1. ``step`` makes exactly one attempt from ``(t, y)`` with step ``dt``; it never loops over
   steps and never adapts ``dt``.
2. ``f0`` is the derivative at the step's start; the loop owns it (first-same-as-last
   reuse, one-sided evaluations at jumps and with ``perturb``). ``result.stages[0]`` is
   ``f0``.
3. Solver state (an Adams history, later a Jacobian and its LU factors) is returned in
   ``result.state`` and passed back by the loop; nothing is stored on ``self``.
4. A step that cannot be completed (e.g. a Newton iteration that diverges) returns
   ``ok=False``: the loop rejects it and shrinks ``dt``; it is not a "non-finite" failure.
5. ``error`` is the embedded error estimate (``None`` without ``with_error`` or for a
   method without one); the loop scales and normalises it.
6. ``f_end`` returns the derivative at the accepted step's end (the first-same-as-last
   stage when the method has one, else one evaluation); ``interpolant`` returns the step's
   dense output (:class:`~odeflow.interp.Interpolant`); ``interpolate`` is the hot-path
   form of ``interpolant(...).evaluate``.
7. Under autograd (``ws is None``) every operation must keep the graph intact: no writes
   into reused buffers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

from torch import Tensor

from ..interp import Interpolant

__all__ = ["StepResult", "Stepper", "Func"]

Func = Callable[[float, Tensor], Tensor]


class StepResult(NamedTuple):
    """The outcome of one attempt of :meth:`Stepper.step`."""

    y_new: Tensor  # the proposed state at t + dt
    error: Tensor | None  # embedded error estimate, or None
    stages: Sequence[Tensor]  # what the dense output needs; stages[0] is f0
    state: Any = None  # the solver state to carry if the step is accepted
    ok: bool = True  # False: the step failed (reject it and shrink dt)


class Stepper(Protocol):
    """A solver family behind the contract (see the module docstring for its rules)."""

    order: int
    error_order: int
    #: outputs must be step end points (no interpolant of the method's order)
    steps_to_outputs: bool
    #: the dense output needs ``f`` at the step's end (cubic Hermite)
    needs_f_end_for_dense: bool

    def workspace(self, y0: Tensor) -> Any: ...

    def init(self, y0: Tensor) -> Any: ...

    def step(self, f: Func, t: float, y: Tensor, f0: Tensor, dt: float, state: Any,
             ws: Any, *, with_error: bool = True, f_last: Func | None = None) -> StepResult: ...

    def f_end(self, f: Func, t_new: float, y_new: Tensor, result: StepResult) -> Tensor: ...

    def interpolant(self, t: float, dt: float, y: Tensor, y_new: Tensor,
                    stages: Sequence[Tensor], f_new: Tensor | None,
                    f: Func | None = None) -> Interpolant: ...

    def interpolate(self, y: Tensor, y_new: Tensor, dt: float, stages: Sequence[Tensor],
                    f_new: Tensor | None, theta: float, ws: Any) -> Tensor: ...
