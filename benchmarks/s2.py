"""S2 — accuracy per evaluation (work–precision) on small float64 states.

Van der Pol (μ = 1, y0 = (2, 0)) and Lorenz-63 (σ = 10, ρ = 28, β = 8/3, y0 = (1, 1, 1))
over t ∈ [0, 10], rtol ∈ {1e-3, 1e-5, 1e-7}, atol = rtol × 1e-3, forward only. Error =
max |y(10) − reference|, the reference from SciPy DOP853 at rtol 1e-13, atol 1e-16.
Methods dopri5, tsit5, dopri8 where the library has them; SciPy's RK45 and DOP853 call
the same torch function (float64 NumPy in and out).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .common import Unavailable, log, make_row, nograd_closure, round_robin, selected
from .contenders import Problem, build

RTOLS = (1e-3, 1e-5, 1e-7)
T_END = 10.0

# (library, mode, method, label)
CONTENDERS = [
    ("odeflow", "direct", "dopri5", "odeflow dopri5"),
    ("odeflow", "direct", "tsit5", "odeflow tsit5"),
    ("odeflow", "direct", "dopri8", "odeflow dopri8"),
    ("torchdiffeq", "odeint", "dopri5", "torchdiffeq dopri5"),
    ("torchdiffeq", "odeint", "dopri8", "torchdiffeq dopri8"),
    ("torchode", "joint", "dopri5", "torchode dopri5"),
    ("torchode", "joint", "tsit5", "torchode tsit5"),
    ("scipy", "RK45", "dopri5", "scipy RK45"),
    ("scipy", "DOP853", "dopri5", "scipy DOP853"),
]
# Each row's ratio is to torchdiffeq with the same order of method.
REFERENCE = {label: ("torchdiffeq dopri8" if ("8" in method or "853" in mode)
                     else "torchdiffeq dopri5")
             for _, mode, method, label in CONTENDERS}


class VanDerPol(nn.Module):
    """x'' − μ(1 − x²)x' + x = 0 as a first-order system; works on any leading shape."""

    def __init__(self, mu: float = 1.0):
        super().__init__()
        self.mu = mu

    def forward(self, t, y):
        x, v = y.unbind(-1)
        return torch.stack((v, self.mu * (1 - x * x) * v - x), -1)


class Lorenz(nn.Module):
    """Lorenz-63 with σ = 10, ρ = 28, β = 8/3."""

    def __init__(self, sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0):
        super().__init__()
        self.sigma, self.rho, self.beta = sigma, rho, beta

    def forward(self, t, y):
        x, yy, z = y.unbind(-1)
        return torch.stack(
            (self.sigma * (yy - x), x * (self.rho - z) - yy, x * yy - self.beta * z), -1)


def _np_vdp(t, y, mu=1.0):
    return np.array([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])


def _np_lorenz(t, y, s=10.0, r=28.0, b=8.0 / 3.0):
    return np.array([s * (y[1] - y[0]), y[0] * (r - y[2]) - y[1], y[0] * y[1] - b * y[2]])


PROBLEMS = {
    "vdp": (VanDerPol, _np_vdp, (2.0, 0.0)),
    "lorenz": (Lorenz, _np_lorenz, (1.0, 1.0, 1.0)),
}


def reference(name: str) -> np.ndarray:
    """y(10) from SciPy DOP853 at rtol 1e-13, atol 1e-16."""
    from scipy.integrate import solve_ivp

    _, rhs, y0 = PROBLEMS[name]
    res = solve_ivp(rhs, (0.0, T_END), np.array(y0), method="DOP853", rtol=1e-13,
                    atol=1e-16)
    assert res.success, res.message
    return res.y[:, -1]


def run(quick: bool, reps: int | None, compile: bool = True,
        only: list[str] | None = None) -> dict:
    reps = reps or (3 if quick else 7)
    names = ("vdp",) if quick else tuple(PROBLEMS)
    rtols = (1e-3,) if quick else RTOLS
    t = torch.tensor([0.0, T_END], dtype=torch.float64)
    contenders = [c for c in CONTENDERS if selected(c[3], only)]
    rows = []
    refs = {}
    for name in names:
        cls, _, y0v = PROBLEMS[name]
        ref = reference(name)
        refs[name] = ref.tolist()
        func = cls()
        y0 = torch.tensor(y0v, dtype=torch.float64)
        for rtol in rtols:
            case = f"{name} rtol={rtol:g}"
            runners, pre = {}, {}
            for lib, mode, method, label in contenders:
                p = Problem(func, y0, t, rtol, rtol * 1e-3, method, grad="none")
                try:
                    runners[label] = build(lib, mode, p)
                except Unavailable as e:
                    pre[label] = {"status": f"unavailable: {e}"}
            bare = nograd_closure(func, torch.tensor(0.0, dtype=torch.float64), y0)
            log(f"S2 {case}: {len(runners)} contenders x {reps} reps")
            outcomes, costs = round_robin(runners, reps, {"bare": bare}, label=f"S2 {case}")
            outcomes.update(pre)
            bare_s = sorted(costs["bare"])[len(costs["bare"]) // 2]
            for *_, label in contenders:
                o = outcomes[label]
                row = make_row(case, label, o, bare_s=bare_s, problem=name, rtol=rtol,
                               atol=rtol * 1e-3, reference=REFERENCE[label])
                row["bare_per_round_us"] = [c * 1e6 for c in costs["bare"]]
                if o["status"] == "ok":
                    y_end = o["stats"]["y_end"].double().numpy()
                    row["error"] = float(np.max(np.abs(y_end - ref)))
                rows.append(row)
    return {
        "config": {"problems": list(names), "rtols": list(rtols), "atol": "rtol * 1e-3",
                   "t": [0.0, T_END], "dtype": "float64", "reps": reps,
                   "reference": "scipy DOP853 rtol=1e-13 atol=1e-16"},
        "references": refs,
        "rows": rows,
        "reference": REFERENCE,
    }
