"""``method="auto"``: explicit (tsit5) while the problem is not stiff, rodas5p while it is.

Stiffness is detected as in Hairer's DOPRI5 (Hairer & Wanner, *Solving ODEs II*, Section
IV.2, and the code DOPRI5's ``IASTI`` test): after an accepted explicit step, the last two
stages, both at ``t + h``, give the estimate ``ρ = ‖k_7 - k_6‖ / ‖Y_7 - Y_6‖`` of the
dominant eigenvalue's modulus. When ``h ρ`` exceeds the method's stability boundary on the
negative real axis (about 3.3 for tsit5) in 15 accepted steps without 6 calm steps in
between, the step size is limited by stability, not accuracy: the solve switches to
rodas5p. While rodas5p runs, ``‖J‖_∞`` (an upper bound of the spectral radius, from the
Jacobian it computes anyway) is compared with the same boundary: after 10 accepted steps
in which the explicit method would be stable at the current step size, the solve switches
back. Both methods have order 5 with an order-4 error estimate, so the step-size
controller carries on unchanged across a switch.

One code path serves both clocks: in a joint solve (``dt`` a float) the switching state is
Python numbers and the decisions bools (one method runs; one host sync per step); per
sample (``dt`` ``(B,)``) they are ``(B,)`` tensors and masks, and each lane switches on its
own. ``func`` sees the whole batch (it may close over per-sample parameters), so in a mixed
batch both methods run, each with step size 0 on the other's lanes, and the results are
merged; a method no stepping lane uses is not run. An attempt's decisions are *pending*
until the (lane's) time moves, i.e. it was accepted (per sample the loop hands back the
state of every attempt), and are adopted at the next call, which records a switch:
``(t, method)``, per sample ``(t, method, sample)``, in ``SolveStats.switches``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..interp import Interpolant, nonzero
from ..linalg import ImplicitCounts, check_solver_dtype
from .base import Func, StepResult
from .esdirk_newton import _where
from .explicit_rk import ExplicitRK
from .rosenbrock import Rosenbrock, RosenbrockState

__all__ = ["AutoSwitch", "AutoState"]

STABILITY_BOUNDARY = 3.3  # tsit5's stability interval on the negative real axis is ~[-3.5, 0]
STIFF_HITS = 15  # Hairer's DOPRI5 test
CALM_RESET = 6
CALM_TO_SWITCH_BACK = 10


class _Stages(NamedTuple):
    """A step's stages: ``f0`` first (the loop reads it), where the explicit method was
    used, and each method's own stages (``None``: it did not run)."""

    f0: Tensor
    explicit: Any  # a bool, or (B,) bool per lane
    e: Sequence[Tensor] | None
    i: Sequence[Tensor] | None


@dataclass
class AutoState:
    """The Rosenbrock state; per solve or per lane, which method runs and the stiffness
    counters; the decisions of the last attempt, pending (see the module docstring)."""

    implicit_state: RosenbrockState
    explicit: Any = True  # bool, or (B,) bool
    hits: Any = 0  # int, or (B,) long
    calm: Any = 0
    pending: tuple | None = None  # (explicit, hits, calm, switched, t, dt)

    @property
    def counts(self) -> ImplicitCounts:
        return self.implicit_state.counts


class AutoSwitch:
    """A stepper that runs ``explicit`` or ``implicit`` (see the module docstring)."""

    #: takes one step size per lane (a per-sample batch)
    per_sample = True

    steps_to_outputs = False
    needs_f_end_for_dense = False

    def __init__(self, explicit: ExplicitRK, implicit: Rosenbrock):
        self.explicit, self.implicit = explicit, implicit
        self.order = min(explicit.order, implicit.order)
        self.error_order = max(explicit.error_order, implicit.error_order)
        tab = explicit.tableau
        if not (tab.fsal and tab.c[-1] == 1.0 and tab.c[-2] == 1.0):
            raise ValueError("the stiffness test needs an FSAL tableau whose last two stages "
                             "are at t + h (tsit5, dopri5)")
        self._a_prev = nonzero(tab.a[-2])

    def workspace(self, y0: Tensor) -> tuple:
        return self.explicit.workspace(y0), self.implicit.workspace(y0)

    def init(self, y0: Tensor) -> AutoState:
        # Checked now, not at the first switch to the stiff method deep into the solve.
        check_solver_dtype("auto", y0.dtype)
        return AutoState(RosenbrockState())

    def step(self, f: Func, t: Any, y: Tensor, f0: Tensor, dt: Any, state: AutoState,
             ws: tuple | None, *, with_error: bool = True, f_last: Func | None = None,
             fsal_stage: bool = True) -> StepResult:
        lanes = isinstance(dt, Tensor)
        if lanes and not isinstance(state.explicit, Tensor):  # the first per-sample step
            zeros = torch.zeros(y.shape[0], dtype=torch.long, device=y.device)
            state.explicit, state.hits, state.calm = zeros == 0, zeros, zeros.clone()
        record, t_end = self._commit(t, dt, state)
        explicit, active = state.explicit, dt > 0
        record = record & active  # (a lane that stopped does not record its last switch)
        if lanes:
            # host sync: which methods run, and whether a lane switched (one transfer)
            run_e, run_i, any_record = (bool(x) for x in torch.stack(
                [(active & explicit).any(), (active & ~explicit).any(), record.any()]).tolist())
            run_e = run_e or not run_i  # (no lane steps: the explicit method keeps them still)
        else:
            run_e, run_i, any_record = explicit, not explicit, record
        if any_record:  # (t, method) of the switch at the end of the accepted attempt
            when, names, switches = f.sign * t_end, ("rodas5p", "tsit5"), state.counts.switches
            if not lanes:
                switches.append((when, names[explicit]))
            for b in record.nonzero().squeeze(1).tolist() if lanes else ():
                switches.append((float(when[b]), names[int(explicit[b])], b))
        ws_e, ws_i = ws if ws else (None, None)
        kw = dict(with_error=with_error, f_last=f_last)
        mixed = run_e and run_i  # (each method's step size is 0 on the other's lanes)
        res_e = self.explicit.step(f, t, y, f0, torch.where(explicit, dt, 0.0) if mixed else dt,
                                   None, ws_e, **kw) if run_e else None
        res_i = self.implicit.step(f, t, y, f0, torch.where(explicit, 0.0, dt) if mixed else dt,
                                   state.implicit_state, ws_i, **kw) if run_i else None
        if not mixed:
            res = res_e if res_i is None else res_i
            # (its f0 is a copy: the one given may be the FSAL row this attempt overwrote)
            y_new, err, ok, f0 = res.y_new, res.error, res.ok, res.stages[0]
        else:  # a mixed batch: each lane from its method
            col = explicit[:, None]
            y_new = torch.where(col, res_e.y_new, res_i.y_new)
            err = torch.where(col, res_e.error, res_i.error) if with_error else None
            ok = res_e.ok and res_i.ok
        with torch.no_grad():
            self._decide(t, y, dt, state, res_e, res_i)
        stages = _Stages(f0, explicit, getattr(res_e, "stages", None),
                         getattr(res_i, "stages", None))
        return StepResult(y_new, err, stages, state, ok)

    def _decide(self, t: Any, y: Tensor, dt: Any, state: AutoState,
                res_e: StepResult | None, res_i: StepResult | None) -> None:
        """The switching rule (module docstring) after an attempt: its decisions, pending."""
        lanes = isinstance(dt, Tensor)
        explicit, hits, calm = state.explicit, state.hits, state.calm
        to_i = to_e = torch.zeros_like(explicit) if lanes else False
        hits_e, calm_e, calm_i = hits, calm, calm
        if res_e is not None:  # h ρ from the last two stages, Y_6 recomputed
            stages = res_e.stages
            h = dt.to(y.dtype)[:, None] if lanes else dt
            y_prev = y.detach()
            for j, w in self._a_prev:
                k = stages[j].detach()
                y_prev = (torch.addcmul(y_prev, h, k, value=w) if lanes
                          else torch.add(y_prev, k, alpha=w * dt))
            dy = torch.linalg.vector_norm(res_e.y_new.detach() - y_prev, dim=-1)
            dk = torch.linalg.vector_norm(stages[-1].detach() - stages[-2].detach(), dim=-1)
            rho = torch.where(dy > 0, dk / dy, 0.0)  # (0/0 where the stages coincide: not stiff)
            # host sync in a joint solve: the decision
            stiff = dt * (rho.double() if lanes else float(rho)) > STABILITY_BOUNDARY
            calm_e = _where(stiff, 0, calm + 1)
            hits_e = _where(stiff, hits + 1, _where(calm_e >= CALM_RESET, 0, hits))
            to_i = hits_e >= STIFF_HITS
        jac = state.implicit_state.jac
        if res_i is not None and isinstance(jac, Tensor):  # (not with a Krylov solver)
            norm = torch.linalg.matrix_norm(jac.detach(), ord=math.inf)
            bound = dt * (norm.double() if lanes else float(norm))  # (joint: a host sync)
            calm_i = _where(bound < STABILITY_BOUNDARY, calm + 1, 0)
            to_e = calm_i >= CALM_TO_SWITCH_BACK
        switched = _where(explicit, to_i, to_e)
        state.pending = (explicit != switched,
                         _where(switched, 0, _where(explicit, hits_e, hits)),
                         _where(switched, 0, _where(explicit, calm_e, calm_i)), switched, t, dt)

    @staticmethod
    def _commit(t: Any, dt: Any, state: AutoState) -> tuple[Any, Any]:
        """Adopt the pending decisions where the last attempt was accepted; return where a
        switch is to be recorded (the lanes that step again) and that attempt's end."""
        if state.pending is None:
            return False, None
        explicit, hits, calm, switched, t0, dt0 = state.pending
        state.pending = None
        moved = (dt0 > 0) & (t0 != t)
        state.explicit = _where(moved, explicit, state.explicit)
        state.hits = _where(moved, hits, state.hits)
        state.calm = _where(moved, calm, state.calm)
        return moved & switched, t0 + dt0

    def f_end(self, f: Func, t_new: Any, y_new: Tensor, result: StepResult) -> Tensor:
        """The explicit lanes' FSAL stage, the implicit lanes' evaluation at the step's end."""
        st = result.stages
        if st.i is None:
            return st.e[-1]
        f_new = f(t_new, y_new)
        return f_new if st.e is None else torch.where(st.explicit[:, None], st.e[-1], f_new)

    def interpolant(self, t: Any, dt: Any, y: Tensor, y_new: Tensor, stages: _Stages,
                    f_new: Tensor | None, f: Func | None = None) -> Interpolant:
        parts = partial(self._parts, t, dt, y, y_new, stages, f_new, f)
        e, i = parts(False)
        if not isinstance(dt, Tensor):  # a joint step: the method that ran
            return e if i is None else i
        return LaneInterpolant(t, dt, stages.explicit, e, i, parts)

    def _parts(self, t: Any, dt: Any, y: Tensor, y_new: Tensor, stages: _Stages,
               f_new: Tensor | None, f: Func | None, fill: bool) -> tuple:
        """Each method's dense output (``None``: it did not run); with ``fill`` (per
        sample), a method that did not run on zero stages."""
        s_e, s_i = stages.e, stages.i
        if fill:
            zero = (torch.zeros_like(y),)
            s_e = zero * self.explicit.stages if s_e is None else s_e
            s_i = (stages.f0,) + zero * self.implicit.tableau.stages if s_i is None else s_i
        return tuple(None if s is None else m.interpolant(t, dt, y, y_new, tuple(s), f_new, f)
                     for m, s in ((self.explicit, s_e), (self.implicit, s_i)))

    def interpolate(self, y: Tensor, y_new: Tensor, dt: Any, stages: _Stages,
                    f_new: Tensor | None, theta: Any, ws: tuple | None) -> Tensor:
        """A joint step's dense output at ``theta`` (per sample, outputs use
        :meth:`interpolant`)."""
        k = 0 if stages.i is None else 1  # the method that ran, and its workspace
        owner, own = (self.explicit, self.implicit)[k], (stages.e, stages.i)[k]
        return owner.interpolate(y, y_new, dt, tuple(own), f_new, theta, ws[k] if ws else None)


class LaneInterpolant(Interpolant):
    """Per sample: each lane's dense output from the method it used. A method that no lane
    used is ``None`` until :meth:`detached`, which gives it zero stages (``fill``): the
    pieces a solve keeps have one structure, and stack into a per-sample dense output."""

    __slots__ = ("t", "dt", "explicit", "e", "i", "fill")

    def __init__(self, t: Tensor, dt: Tensor, explicit: Tensor, e: Interpolant | None,
                 i: Interpolant | None, fill: Callable[[bool], tuple] | None = None):
        self.t, self.dt, self.explicit, self.e, self.i, self.fill = t, dt, explicit, e, i, fill

    def _merge(self, name: str, theta: Any) -> Tensor:
        if self.e is None or self.i is None:
            return getattr(self.e or self.i, name)(theta)
        return torch.where(self.explicit[:, None], getattr(self.e, name)(theta),
                           getattr(self.i, name)(theta))

    def evaluate(self, theta: Any) -> Tensor:
        return self._merge("evaluate", theta)

    def derivative(self, theta: Any) -> Tensor:
        return self._merge("derivative", theta)

    def detached(self) -> LaneInterpolant:
        both = self.e is not None and self.i is not None
        e, i = (self.e, self.i) if both else self.fill(True)
        return LaneInterpolant(self.t, self.dt, self.explicit, e.detached(), i.detached())
