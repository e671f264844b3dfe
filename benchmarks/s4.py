"""S4 — a batch of independent problems: 1000 van der Pol oscillators.

μ ~ U[0.5, 5], y0 = (U[0.5, 2.5], 0), seeded; state (1000, 2); t ∈ [0, 10]; dopri5;
rtol = atol = 1e-6; float32 and float64; forward only. Error per oscillator = max |y(10) −
reference| with the reference from SciPy DOP853 at rtol = atol = 1e-12 on the stacked
system; also the worst error in units of the oscillator's own tolerance
``atol + rtol·|y|``. Joint step size (one step for the whole batch) for every library,
and per-sample step sizes where the library has them (torchode).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .common import Unavailable, log, make_row, nograd_closure, round_robin, selected
from .contenders import Problem, build

N = 1000
RTOL = ATOL = 1e-6
T_END = 10.0
SEED = 0

# (library, mode, label)
CONTENDERS = [
    ("odeflow", "direct", "odeflow joint"),
    ("odeflow", "per-sample", "odeflow per-sample"),
    ("torchdiffeq", "odeint", "torchdiffeq joint"),
    ("torchode", "joint", "torchode joint"),
    ("torchode", "per-sample", "torchode per-sample"),
    ("torchode", "joint compiled", "torchode joint compiled"),
    ("torchode", "per-sample compiled", "torchode per-sample compiled"),
]
REFERENCE = {label: "torchdiffeq joint" for *_, label in CONTENDERS}


class VanDerPolBatch(nn.Module):
    """``n`` independent van der Pol oscillators with their own μ; state (n, 2)."""

    def __init__(self, mu: torch.Tensor):
        super().__init__()
        self.register_buffer("mu", mu)

    def forward(self, t, y):
        x, v = y.unbind(-1)
        return torch.stack((v, self.mu * (1 - x * x) * v - x), -1)


def sample(n: int = N, seed: int = SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ, y0) in float64, from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    mu = 0.5 + 4.5 * torch.rand(n, generator=g, dtype=torch.float64)
    x0 = 0.5 + 2.0 * torch.rand(n, generator=g, dtype=torch.float64)
    return mu, torch.stack((x0, torch.zeros_like(x0)), -1)


def reference(mu: torch.Tensor, y0: torch.Tensor) -> np.ndarray:
    """y(10) of every oscillator, SciPy DOP853 at rtol = atol = 1e-12 on the stacked system."""
    from scipy.integrate import solve_ivp

    m = mu.numpy()

    def rhs(t, y):
        x, v = y[0::2], y[1::2]
        out = np.empty_like(y)
        out[0::2] = v
        out[1::2] = m * (1 - x * x) * v - x
        return out

    res = solve_ivp(rhs, (0.0, T_END), y0.numpy().reshape(-1), method="DOP853",
                    rtol=1e-12, atol=1e-12)
    assert res.success, res.message
    return res.y[:, -1].reshape(-1, 2)


def errors(y_end: torch.Tensor, ref: np.ndarray) -> dict:
    y = y_end.double().numpy()
    err = np.abs(y - ref)
    per = err.max(axis=1)
    units = (err / (ATOL + RTOL * np.abs(ref))).max(axis=1)
    return {
        "error_worst": float(per.max()),
        "error_median": float(np.median(per)),
        "error_worst_tol_units": float(units.max()),
        "error_median_tol_units": float(np.median(units)),
    }


def run(quick: bool, reps: int | None, compile: bool = True,
        only: list[str] | None = None) -> dict:
    reps = reps or (3 if quick else 7)
    n = 50 if quick else N
    dtypes = (torch.float64,) if quick else (torch.float32, torch.float64)
    mu64, y064 = sample(n)
    log(f"S4: reference solve of {n} oscillators")
    ref = reference(mu64, y064)
    contenders = [c for c in CONTENDERS if selected(c[2], only)]
    rows = []
    for dtype in dtypes:
        dname = str(dtype).replace("torch.", "")
        case = f"{dname}"
        func = VanDerPolBatch(mu64.to(dtype))
        y0 = y064.to(dtype)
        t = torch.tensor([0.0, T_END], dtype=dtype)
        p = Problem(func, y0, t, RTOL, ATOL, "dopri5", grad="none")
        runners, pre = {}, {}
        for lib, mode, label in contenders:
            if "compiled" in mode and not compile:
                pre[label] = {"status": "unavailable: skipped (--no-compile)"}
                continue
            try:
                runners[label] = build(lib, mode, p)
            except Unavailable as e:
                pre[label] = {"status": f"unavailable: {e}"}
        bare = nograd_closure(func, torch.tensor(0.0, dtype=dtype), y0)
        log(f"S4 {case}: {len(runners)} contenders x {reps} reps")
        outcomes, costs = round_robin(runners, reps, {"bare": bare}, label=f"S4 {case}")
        outcomes.update(pre)
        bare_s = sorted(costs["bare"])[len(costs["bare"]) // 2]
        for *_, label in contenders:
            o = outcomes[label]
            row = make_row(case, label, o, bare_s=bare_s, dtype=dname, n=n,
                           reference=REFERENCE[label],
                           stepping="per-sample" if "per-sample" in label else "joint")
            row["bare_per_round_us"] = [c * 1e6 for c in costs["bare"]]
            if o["status"] == "ok":
                row.update(errors(o["stats"]["y_end"], ref))
                if "compiled" in label and row.get("time"):
                    row["compile_s"] = o["warmup_s"] - row["time"]["median"]
            rows.append(row)
    return {
        "config": {"n": n, "rtol": RTOL, "atol": ATOL, "t": [0.0, T_END], "seed": SEED,
                   "mu": "U[0.5, 5]", "y0": "(U[0.5, 2.5], 0)", "method": "dopri5",
                   "dtypes": [str(d).replace("torch.", "") for d in dtypes], "reps": reps,
                   "reference": "scipy DOP853 rtol=atol=1e-12, stacked system"},
        "rows": rows,
        "reference": REFERENCE,
    }
