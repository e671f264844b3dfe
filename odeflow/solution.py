"""What a solve returns: :class:`Solution` (and :class:`EventSolution` for event solves)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from .dense import DenseOutput
from .problem import State
from .stats import SolveStats, Status

__all__ = ["Solution", "EventSolution", "SampleStats"]


@dataclass
class SampleStats:
    """Per-sample statistics of a ``per_sample`` solve (``Solution.sample_stats``).

    Attributes:
        status: each sample's outcome, a list of :class:`~odeflow.Status` members.
        codes: the same as a ``(B,)`` int64 tensor of status codes (for masks).
        n_steps: ``(B,)`` step attempts of each sample.
        n_accepted: ``(B,)`` accepted steps.
        n_rejected: ``(B,)`` rejected steps.
    """

    codes: Tensor
    n_steps: Tensor
    n_accepted: Tensor
    n_rejected: Tensor
    status: list[Status] = field(init=False)

    def __post_init__(self) -> None:
        self.status = [Status(v) for v in self.codes.tolist()]

    def statuses(self) -> list[Status]:
        """The statuses as :class:`~odeflow.Status` members (same as ``status``)."""
        return list(self.status)


@dataclass
class Solution:
    """The result of :func:`solve`.

    Attributes:
        ys: the solution at ``ts``: a tensor ``(len(ts), *y0.shape)``, or a tuple of such
            tensors for a tuple ``y0``.
        ts: the output times (the ``t`` that was passed, or up to the event time).
        stats: evaluation and step counts and the outcome (:class:`SolveStats`).
        event_t: the event time for an event-terminated solve, else ``None``.
        dense: the :class:`~odeflow.DenseOutput` of ``solve(..., dense=True)``, else
            ``None``; :meth:`evaluate` and :meth:`derivative` use it.
        sample_stats: with ``options={"per_sample": True}``, each sample's ``status``
            (:class:`~odeflow.Status` members), ``n_steps``, ``n_accepted`` and
            ``n_rejected`` (:class:`SampleStats`), else ``None``.
    """

    ys: State
    ts: Tensor
    stats: SolveStats
    event_t: Tensor | None = None
    dense: DenseOutput | Any = None
    sample_stats: Any = None

    def evaluate(self, t: Tensor | float) -> State:
        """The solution at any time ``t`` (scalar or 1-D) of the span; needs ``dense=True``.

        Raises:
            ValueError: the solve kept no dense output, or ``t`` is outside the span.
        """
        return self._dense_output().evaluate(t)

    def derivative(self, t: Tensor | float) -> State:
        """``dy/dt`` of the dense output at ``t`` (scalar or 1-D); needs ``dense=True``."""
        return self._dense_output().derivative(t)

    def _dense_output(self) -> DenseOutput:
        if self.dense is None:
            raise ValueError("this Solution kept no dense output; call solve(..., dense=True)")
        return self.dense


@dataclass
class EventSolution(Solution):
    """A :class:`~odeflow.Solution` of an event-terminated solve.

    Attributes:
        event_index: which value of ``event_fn(t, y).reshape(-1)`` ended the solve (``0``
            for a scalar ``event_fn``), or ``None`` if no event happened; per sample a
            ``(B,)`` tensor (``-1`` for a sample without an event).
    """

    event_index: Any = None
