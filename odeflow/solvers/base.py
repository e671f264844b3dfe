"""The stepper contract: what every solver family gives the one loop, and nothing more.

A stepper holds configuration only. Everything that changes during a solve travels
explicitly: the loop passes the solver's ``state`` into :meth:`Stepper.step` and keeps the
``state`` of the :class:`StepResult` when it accepts the step. The same contract serves a
joint solve (``t`` and ``dt`` Python floats, ``y`` the flat state ``(n,)``) and a
per-sample one (``t`` and ``dt`` ``(B,)`` float64 tensors, one per lane, ``y`` ``(B, n)``):
"per sample" is a property of the loop's clock (:mod:`odeflow.lanes`), not a second
protocol.

Implementer rules (the loop in ``integrate.py`` and the checkpointed replay rely on them):

1. ``step`` makes exactly one attempt from ``(t, y)`` with step ``dt``; it never loops over
   steps and never adapts ``dt``. Per sample, a lane with ``dt = 0`` does not step (its
   result is discarded; under autograd it must stay exactly at ``y`` so that no nan enters
   the graph).
2. ``f0`` is the derivative at the step's start; the loop owns it (first-same-as-last
   reuse, one-sided evaluations at jumps and with ``perturb``). ``result.stages[0]`` is
   ``f0``. ``f(t, y)`` takes the clock's time (float, or ``(B,)``); ``f_last``, when given,
   replaces ``f`` for the stages with ``c = 1`` (evaluated left of a jump).
3. Solver state (an Adams history, a Jacobian and its LU factors) is returned in
   ``result.state`` and passed back by the loop; nothing is stored on ``self``.
4. A step that cannot be completed (e.g. a Newton iteration that diverges) returns
   ``ok=False``: the loop rejects it and shrinks ``dt``; it is not a "non-finite" failure.
5. ``error`` is the embedded error estimate (``None`` without ``with_error`` or for a
   method without one); the loop scales and normalises it (per lane per sample).
6. ``f_end`` returns the derivative at the accepted step's end (the first-same-as-last
   stage when the method has one, else one evaluation); ``interpolant`` returns the step's
   dense output (:class:`~odeflow.interp.Interpolant`, ``theta`` a float or ``(B,)``);
   ``interpolate`` is the hot-path form of ``interpolant(...).evaluate`` for one lane.
7. Under autograd (``ws is None``) every operation must keep the graph intact: no writes
   into reused buffers.

Capabilities are declared by the stepper class (``per_sample``: takes one ``dt`` per lane;
``implicit``; ``fsal``; ``steps_to_outputs``: no interpolant of the method's order, outputs
are step ends; ``needs_f_end_for_dense``; ``order``/``error_order``) and read through
:class:`~odeflow.solvers.MethodSpec`, so no list of method names lives outside ``solvers/``.
``step(..., fsal_stage=False)`` may skip a first-same-as-last stage that nothing will read.
Adding a solver family touches ``solvers/`` only (and ``linalg.py`` if it solves linear
systems): a class with :class:`Stepper`'s attributes and methods, its method names in the
registry table of ``solvers/__init__.py`` (family, options, class) and its construction in
``MethodSpec.build``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

from torch import Tensor

from ..interp import Interpolant

__all__ = ["StepResult", "Stepper", "Func", "NO_CONTEXT"]

Func = Callable[[Any, Tensor], Tensor]
NO_CONTEXT = contextlib.nullcontext()  # reusable: one object for every fused step


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
    per_sample: bool
    steps_to_outputs: bool
    needs_f_end_for_dense: bool

    def workspace(self, y0: Tensor) -> Any: ...

    def init(self, y0: Tensor) -> Any: ...

    def step(self, f: Func, t: Any, y: Tensor, f0: Tensor, dt: Any, state: Any,
             ws: Any, *, with_error: bool = True, f_last: Func | None = None) -> StepResult: ...

    def f_end(self, f: Func, t_new: Any, y_new: Tensor, result: StepResult) -> Tensor: ...

    def interpolant(self, t: Any, dt: Any, y: Tensor, y_new: Tensor,
                    stages: Sequence[Tensor], f_new: Tensor | None,
                    f: Func | None = None) -> Interpolant: ...

    def interpolate(self, y: Tensor, y_new: Tensor, dt: float, stages: Sequence[Tensor],
                    f_new: Tensor | None, theta: float, ws: Any) -> Tensor: ...
