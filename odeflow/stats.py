"""Solve statistics and outcome codes, returned by every solve."""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field, fields

__all__ = ["Status", "SolveStats", "SolveError", "last_stats"]


class Status(enum.IntEnum):
    """Outcome of a solve. ``Status.SUCCESS`` and ``Status.EVENT`` are successful.

    Attributes:
        message: a sentence describing the outcome.
    """

    SUCCESS = 0, "The solver reached the last output time."
    EVENT = 1, "The solve stopped at an event (event_fn crossed zero)."
    MAX_STEPS_REACHED = 2, "The solver took max_num_steps steps without reaching the end."
    STEP_SIZE_UNDERFLOW = 3, "The step size fell below the resolution of the time variable."
    NONFINITE = 4, "func returned non-finite values (inf or nan)."
    NO_EVENT = 5, "event_fn did not cross zero before the end of the time span."

    def __new__(cls, value: int, message: str) -> Status:
        member = int.__new__(cls, value)
        member._value_ = value
        member.message = message
        return member

    def __str__(self) -> str:
        return self.name

    @property
    def ok(self) -> bool:
        """Whether the solve reached its end (or its event)."""
        return self in (Status.SUCCESS, Status.EVENT)


@dataclass
class SolveStats:
    """Counters of one solve.

    Attributes:
        nfe: evaluations of the user's ``func`` in the forward solve.
        n_steps: step attempts (accepted + rejected) in the forward solve.
        n_accepted: accepted steps.
        n_rejected: rejected steps.
        status: the :class:`Status` of the forward solve.
        message: a sentence describing ``status`` (with the time of a failure).
        nfe_backward: evaluations of ``func`` made by the backward pass (0 for
            ``gradient="direct"``, which replays the recorded graph); filled in when
            the backward pass runs, accumulated if it runs more than once.
        n_steps_backward: steps of the backward pass (adjoint: step attempts of the
            augmented solve; checkpoint: accepted steps replayed).
        n_jacobians: Jacobian evaluations of the implicit methods (a vmapped forward-mode
            Jacobian counts one call of ``func`` in ``nfe`` too).
        n_lu: LU factorisations of ``I - h γ J`` (implicit methods).
        n_newton_iters: Newton iterations (ESDIRK methods; Rosenbrock methods have none).
        n_newton_failures: step attempts rejected because Newton did not converge.
        n_linear_iters: Krylov (GMRES) iterations with ``options["linear_solver"]="krylov"``.
        n_linear_failures: GMRES solves that stopped at ``options["krylov_max_iters"]``
            without reaching ``krylov_tol`` (the step then sees an inexact solve: raise
            ``krylov_max_iters`` or ``krylov_restart`` if this is not 0).
        switches: ``method="auto"``: the ``(t, method)`` pairs where the method changed
            (per sample: ``(t, method, sample)``).

    With ``options={"per_sample": True}``, ``n_steps`` counts batched iterations (each one
    batched call per stage), while ``n_accepted`` and ``n_rejected`` are summed over the
    samples of the batch.
    """

    nfe: int = 0
    n_steps: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    status: Status = Status.SUCCESS
    message: str = Status.SUCCESS.message
    nfe_backward: int = 0
    n_steps_backward: int = 0
    n_jacobians: int = 0
    n_lu: int = 0
    n_newton_iters: int = 0
    n_newton_failures: int = 0
    n_linear_iters: int = 0
    n_linear_failures: int = 0
    switches: list = field(default_factory=list)

    def copy_forward(self, other: SolveStats) -> None:
        """Take ``other``'s forward-solve counters (all but ``nfe`` and the backward ones)."""
        for f in fields(SolveStats):  # (self may be a subclass with more counters)
            if f.name not in ("nfe", "nfe_backward", "n_steps_backward"):
                setattr(self, f.name, getattr(other, f.name))


class SolveError(RuntimeError):
    """A solve that could not finish: too many steps, step size underflow, non-finite values.

    Attributes:
        status: why it stopped.
        t: the time at which it stopped (in the user's time variable).
        stats: the statistics up to that point (complete: ``nfe`` and every count).
        partial_ys: the flat outputs reached before the failure (what ``solve(...,
            throw=False)`` returns before its ``nan`` rows), or ``None``.
    """

    def __init__(self, status: Status, t: float, detail: str, stats: SolveStats | None = None,
                 partial_ys: list | None = None):
        super().__init__(f"{status.message} Stopped at t={t!r}. {detail}".strip())
        self.status = status
        self.t = t
        self.stats = stats
        self.partial_ys = partial_ys


_LAST = threading.local()


def record_last_stats(stats: SolveStats) -> None:
    """Remember ``stats`` as this thread's most recent solve (read by :func:`last_stats`)."""
    _LAST.stats = stats


def last_stats() -> SolveStats | None:
    """The :class:`SolveStats` of this thread's most recent ``odeint*``/``solve`` call.

    ``odeint`` keeps torchdiffeq's return value, so this is where its statistics are read::

        ys = odeflow.odeint(f, y0, t)
        print(odeflow.last_stats().nfe)
    """
    return getattr(_LAST, "stats", None)
