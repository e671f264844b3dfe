"""Lanes — what one step of the one loop costs with the per-sample clock at B = 1.

The rebuilt core runs joint and per-sample solves through one loop; only the clock
differs (``SharedClock``: Python scalars; ``LaneClock``: ``(B,)`` tensors and masks). This
workload measures that difference on its own: the same small problem solved jointly
(state ``(n,)``) and per sample with one sample (state ``(1, n)``, ``options={"per_sample":
True}``), float64, dopri5, one torch thread (``--threads`` overrides), forward only.
Target (issue "One loop", Speed): per-sample time per step ≤ 1.3× the joint solve's.

Problems (S2's): van der Pol (μ = 1, y0 = (2, 0)) and Lorenz-63 (y0 = (1, 1, 1)),
t ∈ [0, 10], atol = rtol × 1e-3. Steps are loop iterations (accepted + rejected) as each
solve's statistics report them; time per step = median time / steps. torchdiffeq's joint
solve of the same problem is timed in the same rounds for scale.
"""

from __future__ import annotations

import torch

from .common import Unavailable, log, make_row, nograd_closure, round_robin, selected
from .contenders import Problem, build
from .s2 import PROBLEMS

THREADS = 1
CASES = (("vdp", 1e-5), ("vdp", 1e-7), ("lorenz", 1e-7))
QUICK_CASES = (("vdp", 1e-5),)
T_END = 10.0

# (library, mode, batched y0 (1, n) instead of (n,), label)
CONTENDERS = [
    ("odeflow", "direct", False, "odeflow joint"),
    ("odeflow", "per-sample", True, "odeflow per-sample B=1"),
    ("torchdiffeq", "odeint", False, "torchdiffeq joint"),
]
REFERENCE = {label: "odeflow joint" for *_, label in CONTENDERS}
TARGET = 1.3


def run(quick: bool, reps: int | None, compile: bool = True,
        only: list[str] | None = None) -> dict:
    reps = reps or (3 if quick else 9)
    cases = QUICK_CASES if quick else CASES
    t = torch.tensor([0.0, T_END], dtype=torch.float64)
    contenders = [c for c in CONTENDERS if selected(c[3], only)]
    rows = []
    for name, rtol in cases:
        cls, _, y0v = PROBLEMS[name]
        func = cls()
        y0 = torch.tensor(y0v, dtype=torch.float64)
        case = f"{name} rtol={rtol:g}"
        runners, pre = {}, {}
        for lib, mode, batched, label in contenders:
            p = Problem(func, y0.unsqueeze(0) if batched else y0, t, rtol, rtol * 1e-3,
                        "dopri5", grad="none")
            try:
                runners[label] = build(lib, mode, p)
            except Unavailable as e:
                pre[label] = {"status": f"unavailable: {e}"}
        bare = nograd_closure(func, torch.tensor(0.0, dtype=torch.float64), y0)
        log(f"lanes {case}: {len(runners)} contenders x {reps} reps")
        outcomes, costs = round_robin(runners, reps, {"bare": bare}, label=f"lanes {case}")
        outcomes.update(pre)
        bare_s = sorted(costs["bare"])[len(costs["bare"]) // 2]
        for *_, label in contenders:
            o = outcomes[label]
            row = make_row(case, label, o, bare_s=bare_s, problem=name, rtol=rtol,
                           atol=rtol * 1e-3, reference=REFERENCE[label])
            row["bare_per_round_us"] = [c * 1e6 for c in costs["bare"]]
            if o["status"] == "ok" and row.get("steps"):
                row["us_per_step"] = row["time"]["median"] / row["steps"] * 1e6
                # Per round, for the paired ratio below.
                row["us_per_step_all"] = [x / row["steps"] * 1e6 for x in o["times"]]
            rows.append(row)
        # Paired ratio: round k's per-sample time per step over round k's joint one.
        js = next((r for r in rows if r["case"] == case and r["contender"] == "odeflow joint"
                   and r.get("us_per_step_all")), None)
        for r in rows:
            if r["case"] == case and js and r.get("us_per_step_all") and r is not js:
                ratios = sorted(a / b for a, b in zip(r["us_per_step_all"],
                                                      js["us_per_step_all"]))
                r["per_step_vs_joint_paired"] = ratios[len(ratios) // 2]
    return {
        "config": {"cases": [f"{n} rtol={r:g}" for n, r in cases], "atol": "rtol * 1e-3",
                   "t": [0.0, T_END], "dtype": "float64", "method": "dopri5", "reps": reps,
                   "threads": torch.get_num_threads(), "target": TARGET},
        "rows": rows,
        "reference": REFERENCE,
    }
