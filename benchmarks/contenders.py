"""One adapter per library: the same problem, solved the way each library's users solve it.

``build(library, mode, problem)`` returns a zero-argument runner; each call solves the
problem once (forward, or forward + backward of ``loss(y(t_end))`` w.r.t. ``y0`` and all
parameters) and returns its statistics: ``nfe`` (forward calls of the user's ``func``,
counted by :class:`~benchmarks.common.CountingFunc`), ``nfe_bwd`` (calls during the
backward pass), ``steps`` / ``accepted`` (from the library where it reports them), and
``y_end`` (the final state, detached). A library or mode that cannot run raises
:class:`~benchmarks.common.Unavailable` with the reason.

Libraries and modes:

- ``odeflow``: ``direct`` (backprop through the solver), ``adjoint``, ``seminorm``
  (adjoint with ``adjoint_options=dict(norm="seminorm")``), ``checkpoint``, ``per-sample``
  (``options=dict(per_sample=True)``: one step size per leading index); all through
  ``odeflow.solve`` so that its ``Solution.stats`` gives the steps.
- ``torchdiffeq``: ``odeint``, ``adjoint`` (``odeint_adjoint``), ``seminorm``; steps come
  from torchdiffeq's step callbacks on the counting wrapper.
- ``torchode``: ``joint`` (the whole state as one problem of shape (1, N), the same RMS
  norm as torchdiffeq), ``per-sample`` (the leading dimension as independent problems),
  each optionally ``compiled`` with ``torch.compile(solver.solve)``; backprop through the
  solver (``AutoDiffAdjoint``), steps from ``sol.stats``.
- ``scipy``: ``RK45`` / ``DOP853`` via ``solve_ivp`` calling the same torch function with
  float64 NumPy in and out (forward only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .common import CountingFunc, StepCountingFunc, Unavailable, describe_error, params_of


def _sq_loss(y: torch.Tensor) -> torch.Tensor:
    return y.pow(2).sum()


@dataclass
class Problem:
    """One solve: ``func(t, y)`` from ``y0`` over the output times ``t``.

    ``grad`` is ``"none"`` (forward under ``torch.no_grad``), ``"forward"`` (the forward
    pass of a training step: inputs require grad, no backward) or ``"backward"``
    (forward + backward of ``loss(ys[-1])`` w.r.t. ``y0`` and every parameter of ``func``).
    """

    func: nn.Module
    y0: torch.Tensor
    t: torch.Tensor
    rtol: float
    atol: float
    method: str = "dopri5"
    grad: str = "none"
    loss: Callable[[torch.Tensor], torch.Tensor] = field(default=_sq_loss)


def _int(x):
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return int(x.max().item()) if x.numel() > 1 else int(x.item())
    return int(x)


def build(library: str, mode: str, p: Problem) -> Callable[[], dict]:
    """A runner for ``library`` in ``mode`` on problem ``p`` (see the module doc)."""
    if library == "odeflow":
        return _odeflow(mode, p)
    if library == "torchdiffeq":
        return _torchdiffeq(mode, p)
    if library == "torchode":
        return _torchode(mode, p)
    if library == "scipy":
        return _scipy(mode, p)
    raise ValueError(f"unknown library {library!r}")


def _with_grad(p: Problem, solve: Callable, f: CountingFunc, after: Callable | None = None):
    """Run ``solve(y0)`` as ``p.grad`` asks; return (solution-ish, nfe_fwd, nfe_bwd)."""
    f.reset()
    if p.grad == "none":
        with torch.no_grad():
            out, y_end = solve(p.y0)
        return out, y_end, f.nfe, 0
    y0 = p.y0.detach().requires_grad_(True)
    out, y_end = solve(y0)
    nfe = f.nfe
    if p.grad == "backward":
        params = params_of(p.func)
        torch.autograd.grad(p.loss(y_end), [y0, *params], allow_unused=True)
    return out, y_end.detach(), nfe, f.nfe - nfe


# --------------------------------------------------------------------------------------
# odeflow
# --------------------------------------------------------------------------------------
ODEFLOW_MODES = {
    "direct": dict(gradient="direct"),
    "adjoint": dict(gradient="adjoint"),
    "seminorm": dict(gradient="adjoint", adjoint_options=dict(norm="seminorm")),
    "checkpoint": dict(gradient="checkpoint"),
    # The leading dimension as independent problems, each with its own step size.
    "per-sample": dict(gradient="direct", options=dict(per_sample=True)),
}


def _odeflow(mode: str, p: Problem):
    try:
        import odeflow

        solve_fn = odeflow.solve
    except (ImportError, AttributeError) as e:
        raise Unavailable(f"odeflow.solve is missing ({describe_error(e)})") from e
    if mode not in ODEFLOW_MODES:
        raise ValueError(f"unknown odeflow mode {mode!r}")
    if p.method not in getattr(odeflow, "METHODS", (p.method,)):
        raise Unavailable(f"odeflow has no method {p.method!r}")
    kw = dict(rtol=p.rtol, atol=p.atol, method=p.method, **ODEFLOW_MODES[mode])
    if p.grad == "none":
        kw["gradient"] = "direct"
    f = CountingFunc(p.func)

    def solve(y0):
        sol = solve_fn(f, y0, p.t, **kw)
        return sol, sol.ys[-1]

    def run():
        try:
            sol, y_end, nfe, nfe_bwd = _with_grad(p, solve, f)
        except ValueError as e:
            if mode == "per-sample" and "per_sample" in str(e):
                raise Unavailable(f"odeflow rejects options['per_sample']: {e}") from e
            raise
        st = sol.stats
        out = {
            "nfe": nfe,
            "nfe_bwd": nfe_bwd,
            "steps": _int(getattr(st, "n_steps", None)),
            "accepted": _int(getattr(st, "n_accepted", None)),
            "rejected": _int(getattr(st, "n_rejected", None)),
            "lib_nfe": _int(getattr(st, "nfe", None)),
            "lib_nfe_bwd": _int(getattr(st, "nfe_backward", None)),
            "steps_bwd": _int(getattr(st, "n_steps_backward", None)),
            "y_end": y_end,
        }
        if mode == "per-sample" and (out["accepted"] or 0) > (out["steps"] or 0):
            # odeflow reports loop iterations as n_steps but sums accepted/rejected
            # steps over the batch: show them per sample.
            n = p.y0.shape[0]
            out["accepted_total"] = out.pop("accepted")
            out["rejected_total"] = out.pop("rejected")
            out["accepted_mean"] = out["accepted_total"] / n
        return out

    return run


# --------------------------------------------------------------------------------------
# torchdiffeq
# --------------------------------------------------------------------------------------
def _torchdiffeq(mode: str, p: Problem):
    try:
        import torchdiffeq
    except ImportError as e:
        raise Unavailable("torchdiffeq is not installed (pip install '.[bench]')") from e
    known = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
    if p.method not in known:
        raise Unavailable(f"torchdiffeq has no method {p.method!r}")
    f = StepCountingFunc(p.func)
    kw = dict(rtol=p.rtol, atol=p.atol, method=p.method)
    if mode == "odeint" or p.grad == "none":
        odeint = torchdiffeq.odeint
    elif mode == "adjoint":
        odeint = torchdiffeq.odeint_adjoint
    elif mode == "seminorm":
        odeint = torchdiffeq.odeint_adjoint
        kw["adjoint_options"] = dict(norm="seminorm")
    else:
        raise ValueError(f"unknown torchdiffeq mode {mode!r}")

    def solve(y0):
        ys = odeint(f, y0, p.t, **kw)
        return ys, ys[-1]

    def run():
        _, y_end, nfe, nfe_bwd = _with_grad(p, solve, f)
        out = {
            "nfe": nfe,
            "nfe_bwd": nfe_bwd,
            "steps": f.steps,
            "accepted": f.accepted,
            "rejected": f.steps - f.accepted,
            "y_end": y_end,
        }
        if f.steps_adjoint:
            out["steps_bwd"] = f.steps_adjoint
        return out

    return run


# --------------------------------------------------------------------------------------
# torchode
# --------------------------------------------------------------------------------------
def _torchode(mode: str, p: Problem):
    try:
        import torchode as to
    except ImportError as e:
        raise Unavailable("torchode is not installed (pip install '.[bench]')") from e
    words = set(mode.split())
    compiled = "compiled" in words
    per_sample = "per-sample" in words
    steppers = {"dopri5": to.Dopri5, "tsit5": to.Tsit5}
    if p.method not in steppers:
        raise Unavailable(f"torchode has no method {p.method!r}")
    f = CountingFunc(p.func)
    shape = p.y0.shape
    if per_sample:
        n_prob = shape[0]

        def rhs(t, y):  # t: (n_prob,); the workloads' per-sample funcs ignore t
            return f(t, y.view(shape)).reshape(n_prob, -1)
    else:
        n_prob = 1

        def rhs(t, y):
            return f(t[0], y.view(shape)).reshape(1, -1)

    term = to.ODETerm(rhs)
    stepper = steppers[p.method](term=term)
    controller = to.IntegralController(atol=p.atol, rtol=p.rtol, term=term)
    solver = to.AutoDiffAdjoint(stepper, controller)
    solve_call = solver.solve
    if compiled:
        # The counting wrapper's ``nfe`` is a Python int on a module: let dynamo treat it
        # as dynamic, or every call would recompile on its new value.
        torch._dynamo.config.allow_unspec_int_on_nn_module = True
        solve_call = torch.compile(solver.solve)
    t_eval = p.t.reshape(1, -1).expand(n_prob, -1)
    state = {"first": True}

    def solve(y0):
        problem = to.InitialValueProblem(y0=y0.reshape(n_prob, -1), t_eval=t_eval)
        if compiled and state["first"]:
            try:
                sol = solve_call(problem)
            except Exception as e:
                raise Unavailable(f"torch.compile failed: {describe_error(e)}") from e
            state["first"] = False
        else:
            sol = solve_call(problem)
        return sol, sol.ys[:, -1].reshape(shape)

    def run():
        sol, y_end, nfe, nfe_bwd = _with_grad(p, solve, f)
        steps = sol.stats["n_steps"]
        acc = sol.stats["n_accepted"]
        out = {
            "nfe": nfe,
            "nfe_bwd": nfe_bwd,
            "steps": _int(steps),
            "accepted": _int(acc),
            "rejected": _int((steps - acc).max()),
            "y_end": y_end,
        }
        if per_sample:
            out["steps_median"] = float(steps.double().median())
            out["accepted_median"] = float(acc.double().median())
        return out

    return run


# --------------------------------------------------------------------------------------
# SciPy
# --------------------------------------------------------------------------------------
def _scipy(mode: str, p: Problem):
    try:
        import numpy as np
        from scipy.integrate import solve_ivp
    except ImportError as e:
        raise Unavailable("scipy is not installed") from e
    if p.grad != "none":
        raise Unavailable("SciPy's solve_ivp has no gradients")
    f = CountingFunc(p.func)
    shape = p.y0.shape
    y0 = p.y0.detach().double().reshape(-1).numpy()
    t0, t1 = float(p.t[0]), float(p.t[-1])

    def fun(t, y):
        with torch.no_grad():
            return f(torch.tensor(t, dtype=torch.float64),
                     torch.from_numpy(y).view(shape)).reshape(-1).numpy()

    def run():
        f.reset()
        res = solve_ivp(fun, (t0, t1), y0, method=mode, rtol=p.rtol, atol=p.atol)
        if not res.success:
            raise RuntimeError(f"solve_ivp failed: {res.message}")
        return {
            "nfe": f.nfe,
            "nfe_bwd": 0,
            "steps": None,
            "accepted": len(res.t) - 1,
            "y_end": torch.from_numpy(np.ascontiguousarray(res.y[:, -1])).view(shape),
        }

    return run
