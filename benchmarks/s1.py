"""S1 — step-loop overhead: an MLP vector field on a batch of 2-D points.

f(t, y) = MLP(y): Linear(2, 64) → tanh → Linear(64, 64) → tanh → Linear(64, 2), default
init with every Linear weight × 3; y0 a batch of B 2-D points, B ∈ {16, 512, 4096};
t ∈ [0, 1]; dopri5; rtol = atol = 1e-6; float32. Forward only (no grad), and forward +
backward of ``ys[-1].pow(2).sum()`` w.r.t. ``y0`` and all parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import (
    Unavailable,
    log,
    make_row,
    nograd_closure,
    round_robin,
    selected,
    vjp_closure,
)
from .contenders import Problem, build

BATCHES = (16, 512, 4096)
RTOL = ATOL = 1e-6

# (library, mode, label) for each kind of row.
FORWARD = [
    ("odeflow", "direct", "odeflow"),
    ("odeflow", "per-sample", "odeflow per-sample"),
    ("torchdiffeq", "odeint", "torchdiffeq"),
    ("torchode", "joint", "torchode"),
    ("torchode", "joint compiled", "torchode compiled"),
    ("torchode", "per-sample", "torchode per-sample"),
]
BACKWARD = [
    ("odeflow", "direct", "odeflow direct"),
    ("odeflow", "adjoint", "odeflow adjoint"),
    ("odeflow", "seminorm", "odeflow adjoint seminorm"),
    ("odeflow", "checkpoint", "odeflow checkpoint"),
    ("torchdiffeq", "odeint", "torchdiffeq odeint"),
    ("torchdiffeq", "adjoint", "torchdiffeq adjoint"),
    ("torchdiffeq", "seminorm", "torchdiffeq adjoint seminorm"),
    ("torchode", "joint", "torchode"),
]
# The row each row's ratio is taken against.
REFERENCE = {"fwd": "torchdiffeq", "fwd+bwd": "torchdiffeq odeint"}


class MLPField(nn.Module):
    """``f(t, y) = MLP(y)`` with the S1 weights (default init, weights × 3)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(
            nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 2))
        with torch.no_grad():
            for m in self.net:
                if isinstance(m, nn.Linear):
                    m.weight.mul_(3.0)

    def forward(self, t, y):
        return self.net(y)


def run(quick: bool, reps: int | None, compile: bool = True,
        only: list[str] | None = None, sizes: dict | None = None) -> dict:
    reps = reps or (3 if quick else 7)
    batches = (16,) if quick else BATCHES
    if sizes and sizes.get("batches"):
        batches = tuple(int(b) for b in sizes["batches"].split("/"))
    func = MLPField()
    t = torch.tensor([0.0, 1.0])
    rows = []
    for B in batches:
        torch.manual_seed(1)
        y0 = torch.randn(B, 2)
        for kind, specs, grad in (("fwd", FORWARD, "none"), ("fwd+bwd", BACKWARD, "backward")):
            specs = [s for s in specs if selected(s[2], only)]
            case = f"B={B} {kind}"
            p = Problem(func, y0, t, RTOL, ATOL, "dopri5", grad=grad)
            runners = {}
            pre = {}
            for lib, mode, label in specs:
                if "compiled" in mode and not compile:
                    pre[label] = {"status": "unavailable: skipped (--no-compile)"}
                    continue
                try:
                    runners[label] = build(lib, mode, p)
                except Unavailable as e:
                    pre[label] = {"status": f"unavailable: {e}"}
            t0 = torch.tensor(0.0)
            bare = (nograd_closure(func, t0, y0) if grad == "none"
                    else vjp_closure(func, t0, y0))
            log(f"S1 {case}: {len(runners)} contenders x {reps} reps")
            outcomes, costs = round_robin(runners, reps, {"bare": bare}, label=f"S1 {case}")
            outcomes.update(pre)
            bare_s = sorted(costs["bare"])[len(costs["bare"]) // 2]
            for _, _, label in specs:
                o = outcomes[label]
                row = make_row(case, label, o, bare_s=bare_s, batch=B, kind=kind,
                               reference=REFERENCE[kind])
                if "compiled" in label and o["status"] == "ok" and row.get("time"):
                    row["compile_s"] = o["warmup_s"] - row["time"]["median"]
                row["bare_per_round_us"] = [c * 1e6 for c in costs["bare"]]
                rows.append(row)
    return {
        "config": {"batches": list(batches), "rtol": RTOL, "atol": ATOL, "reps": reps,
                   "method": "dopri5", "dtype": "float32", "t": [0.0, 1.0]},
        "rows": rows,
        "reference": REFERENCE,
    }
