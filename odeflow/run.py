"""Run the loop for a method (``solve``'s pipeline and the adjoint's backward solves), and
turn the lanes' statuses into results or errors that say what to change."""

from __future__ import annotations

import math
from typing import Any

import torch

from .config import loop_config
from .integrate import FAILURES, Hooks, LoopResult, integrate
from .options import DEFAULT_MAX_NUM_STEPS
from .problem import Problem
from .solvers.fixed_grid import FixedGridSteps
from .solvers.scipy_bridge import integrate_scipy
from .stats import SolveError, Status
from .stiffness import stiff_hint

__all__ = ["run", "failure", "check_fixed_grid_finite"]


def run(problem: Problem, spec: Any, hooks: Hooks | None = None, **config: Any
        ) -> tuple[LoopResult, Any, Any]:
    """Run ``spec``'s loop on ``problem``; returns ``(result, stepper, loop config)``.

    ``config`` goes to :func:`~odeflow.config.loop_config` (``record``, ``search``,
    ``fsal``). A fixed grid checks finiteness once, at the end.
    """
    if spec.external:  # SciPy takes the steps (the adjoint's backward solve of a SciPy solve)
        return LoopResult(**integrate_scipy(problem)), None, None
    stepper = spec.build(problem.options, problem.rtol, problem.atol)
    if not spec.adaptive:  # a fixed-grid method, wrapped with its outputs' interpolant
        stepper = FixedGridSteps(stepper, problem.options.get("interp", "linear"))
    cfg = loop_config(problem, spec, stepper, **config)
    result = integrate(problem, stepper, cfg, hooks)
    if not spec.adaptive:
        check_fixed_grid_finite(problem, result)
    return result, stepper, cfg


def check_fixed_grid_finite(problem: Problem, result: LoopResult) -> None:
    """Fixed-grid steps make no host synchronisation; non-finite values are found once,
    at the end, and fail the lanes where they appeared."""
    C = problem.clock
    if not C.per_sample:
        if result.status == Status.SUCCESS and not bool(torch.isfinite(result.y_last).all()):
            ys = result.ys  # host sync: once per solve
            bad = next((i for i, v in enumerate(ys) if not bool(torch.isfinite(v).all())),
                       len(ys))
            result.status = int(Status.NONFINITE)
            result.ys = ys[:bad]
            result.t_last = C.grid[min(bad, C.n_out - 1)]
        return
    bad = ~torch.isfinite(result.y_last).all(-1) & (result.status == int(Status.SUCCESS))
    if bool(bad.any()):  # host sync: once per solve
        result.status = torch.where(bad, int(Status.NONFINITE), result.status)
        reached = torch.isfinite(result.ys).all(-1).cumprod(0).bool()  # nan from a bad output
        result.ys = torch.where(reached[..., None], result.ys, math.nan)
        first_bad = (~reached).long().argmax(0)  # each lane's first non-finite output
        at = C.grid.gather(1, first_bad[:, None]).squeeze(1).to(result.t_last)
        result.t_last = torch.where(bad, at, result.t_last)


_ADVICE = {
    Status.MAX_STEPS_REACHED: "Raise options['max_num_steps'] (now {steps}) or loosen "
                              "rtol/atol; a stiff problem may need an implicit method.",
    Status.STEP_SIZE_UNDERFLOW: "The step size became too small for t; the problem may be "
                                "stiff or have a singularity here.",
    Status.NONFINITE: "func returned non-finite values at this time (for every step size "
                      "tried).",
}


_FIXED_NONFINITE = ("The fixed-grid solution became non-finite by this output time; use a "
                    "smaller step_size or an adaptive method.")


def failure(problem: Problem, result: LoopResult, *, fixed: bool = False,
            unbounded: bool = False, events: bool = False, explicit: bool = False
            ) -> SolveError | None:
    """The error of a failed solve (``None`` if no lane failed); fills the statistics'
    status and message either way. ``explicit``: an explicit adaptive method, whose
    failure may come from stiffness (the message then says so)."""
    stats = result.stats
    stats.nfe = problem.func.nfe
    C = problem.clock
    steps = problem.options.get("max_num_steps", DEFAULT_MAX_NUM_STEPS)
    if not C.per_sample:
        status = Status(int(result.status))
        if status not in FAILURES:
            return None
        if status == Status.MAX_STEPS_REACHED and unbounded:
            detail = (f"event_fn did not cross zero within max_num_steps={steps} steps of a "
                      "search without an end time; raise options['max_num_steps'] or check "
                      "event_fn.")
        elif status == Status.NONFINITE and result.stats.n_steps == 0:
            detail = "func(t0, y0) is not finite."
        elif status == Status.NONFINITE and fixed:
            detail = _FIXED_NONFINITE
        elif stats.message != Status.SUCCESS.message:  # the method's own account (SciPy's)
            detail = stats.message
        else:
            detail = _ADVICE[status].format(steps=steps)
        if explicit and status in (Status.MAX_STEPS_REACHED, Status.STEP_SIZE_UNDERFLOW) and (
                result.dt_last is not None):
            detail += stiff_hint(problem.func, result.t_last, result.y_last, result.dt_last)
            stats.nfe = problem.func.nfe  # the probe's evaluations count too
        t_user = C.sign * result.t_last
        stats.status = status
        stats.message = f"{status.message} t={t_user!r}. {detail}"
        return SolveError(status, t_user, detail, stats, partial_ys=list(result.ys))
    codes = result.status.tolist()
    B = len(codes)
    failed = [b for b, c in enumerate(codes) if Status(c) in FAILURES]
    if failed:
        b = failed[0]
        st = Status(codes[b])
        t_b = C.user_float(result.t_last, b)
        stats.status = st
        advice = f" {_FIXED_NONFINITE}" if fixed and st == Status.NONFINITE else ""
        stats.message = (f"{len(failed)} of {B} samples failed (samples {failed[:10]}"
                         f"{'...' if len(failed) > 10 else ''}); sample {b}: {st.message} "
                         f"t={t_b!r}.{advice} sol.sample_stats.status has each sample's "
                         "outcome.")
        return SolveError(st, t_b, f"{stats.message} Other samples were not affected; pass "
                          "throw=False to get their results (failed samples keep nan after "
                          "the failure).", stats)
    if events:
        missed = [b for b, c in enumerate(codes) if c == Status.NO_EVENT]
        stats.status = Status.NO_EVENT if missed else Status.EVENT
        stats.message = (f"{B - len(missed)} of {B} samples stopped at an event"
                         + (f"; samples {missed[:10]}{'...' if len(missed) > 10 else ''} did "
                            "not cross before t1." if missed else "."))
    return None
