"""Where an odeflow solve spends its time: torch.profiler operators and cProfile functions.

``python -m benchmarks profile s4`` profiles S4's per-sample solve (float64), ``profile
lanes`` the per-sample solve with B = 1 of ``profile s2``'s problem (one thread: compare
the two per step), ``profile stiff-batch`` the rodas5p per-sample batch of 1000
Robertsons. ``python -m benchmarks profile s2`` profiles a small float64 state (van der Pol at rtol
1e-7), where the loop's cost per step matters most; ``profile s1`` odeflow's forward
solve of S1 at B = 16 (the overhead-bound case); ``profile s3`` one forward+backward
training step of S3 with backprop through the solver (``--gradient adjoint|checkpoint``
for the other modes). ``profile sde-gbm|sde-latent|sde-revheun`` profile odeflow.sde's
solve of the SDE workload's cases (GBM srk forward; latent euler and reversible Heun
forward + backward), Brownian interval included.
Each writes ``benchmarks/results/profile-<w>[-<gradient>].json``, which ``render``
summarises in BENCHMARKS.md.
"""

from __future__ import annotations

import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

import torch

from .common import RESULTS, CountingFunc, finish, header, log, params_of


class _Timed(torch.nn.Module):
    """Accumulates the wall time spent inside the user's function (forward calls only)."""

    def __init__(self, func: torch.nn.Module):
        super().__init__()
        self.func = func
        self.seconds = 0.0

    def forward(self, t, y):
        t0 = time.perf_counter()
        out = self.func(t, y)
        self.seconds += time.perf_counter() - t0
        return out


def _s1_job():
    from .s1 import ATOL, RTOL, MLPField

    func = CountingFunc(MLPField())
    torch.manual_seed(1)
    y0 = torch.randn(16, 2)
    t = torch.tensor([0.0, 1.0])

    def one():
        import odeflow

        with torch.no_grad():
            return odeflow.solve(func, y0, t, rtol=RTOL, atol=ATOL, method="dopri5")

    return func, one, 20, "forward solve, B = 16, no grad (20 solves, per-solve figures)"


def _s2_job():
    from .s2 import T_END, VanDerPol

    func = CountingFunc(VanDerPol())
    y0 = torch.tensor([2.0, 0.0], dtype=torch.float64)
    t = torch.tensor([0.0, T_END], dtype=torch.float64)

    def one():
        import odeflow

        with torch.no_grad():
            return odeflow.solve(func, y0, t, rtol=1e-7, atol=1e-10, method="dopri5")

    return func, one, 5, "van der Pol, float64, rtol 1e-7, dopri5 (5 solves, per-solve figures)"


def _s3_job(gradient: str = "direct"):
    from .s3 import ATOL, RTOL, make_problem

    raw, y0, t = make_problem()
    func = CountingFunc(raw)
    params = params_of(raw)

    def one():
        import odeflow

        y = y0.detach().requires_grad_(True)
        sol = odeflow.solve(func, y, t, rtol=RTOL, atol=ATOL, method="dopri5",
                            gradient=gradient)
        torch.autograd.grad(sol.ys[-1].pow(2).sum(), [y, *params])
        return sol

    what = {"direct": "backprop through the solver"}.get(gradient, f"gradient={gradient!r}")
    return func, one, 1, f"forward + backward ({what}), one training step"


def _s4_job():
    from .s4 import ATOL, RTOL, T_END, VanDerPolBatch, sample

    mu, y0 = sample()
    func = CountingFunc(VanDerPolBatch(mu))
    t = torch.tensor([0.0, T_END], dtype=torch.float64)

    def one():
        import odeflow

        with torch.no_grad():
            return odeflow.solve(func, y0, t, rtol=RTOL, atol=ATOL, method="dopri5",
                                 options={"per_sample": True})

    return func, one, 3, ("per-sample solve of S4's 1000 van der Pol oscillators, float64 "
                          "(3 solves, per-solve figures)")


def _lanes_job():
    from .s2 import T_END, VanDerPol

    func = CountingFunc(VanDerPol())
    y0 = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([0.0, T_END], dtype=torch.float64)

    def one():
        import odeflow

        with torch.no_grad():
            return odeflow.solve(func, y0, t, rtol=1e-7, atol=1e-10, method="dopri5",
                                 options={"per_sample": True})

    return func, one, 5, ("per-sample solve with B = 1 of the S2 profile's problem (van der "
                          "Pol, float64, rtol 1e-7, dopri5; state (1, 2); 5 solves, "
                          "per-solve figures)")


def _stiff_batch_job():
    import numpy as np

    from .stiff import RTOL, batch_rates
    from .stiff_problems import PROBLEMS, Robertson

    p = PROBLEMS["rober-1e5"]
    k = batch_rates(1000)
    func = CountingFunc(Robertson(torch.from_numpy(np.ascontiguousarray(k))))
    y0 = torch.tensor(p.y0, dtype=torch.float64).expand(1000, 3).contiguous()
    t = torch.tensor([0.0, p.t_end], dtype=torch.float64)

    def one():
        import odeflow

        with torch.no_grad():
            return odeflow.solve(func, y0, t, method="rodas5p", rtol=RTOL, atol=p.atol,
                                 options={"per_sample": True})

    return func, one, 1, ("rodas5p per-sample solve of the stiff batch (1000 Robertsons, "
                          "float64; one solve)")


JOBS = {"s1": _s1_job, "s2": _s2_job, "s4": _s4_job, "lanes": _lanes_job,
        "stiff-batch": _stiff_batch_job}


def profile(workload: str, out: str | None = None, gradient: str = "direct") -> Path:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    if workload == "s3":
        func, one, n, what = _s3_job(gradient)
    elif workload.startswith("sde-"):
        from .sde import profile_job

        func, one, n, what = profile_job(workload)
    else:
        func, one, n, what = JOBS[workload]()
    for _ in range(2):
        sol = one()  # warm-up
    st0 = getattr(sol, "stats", None)
    steps = getattr(st0, "n_steps", None)
    steps = int(steps.max()) if isinstance(steps, torch.Tensor) else steps
    func.reset()
    t0 = time.perf_counter()
    for _ in range(n):
        one()
    wall = (time.perf_counter() - t0) / n
    nfe = func.nfe // n
    # The share of the solve spent inside func's forward calls (no profiler running);
    # for a forward+backward step the backward's replay of func is not inside it.
    in_func = None
    if hasattr(func, "func"):  # the SDE jobs' models have no single func to time
        inner = func.func
        func.func = timed = _Timed(inner)
        t0 = time.perf_counter()
        for _ in range(n):
            one()
        in_func = timed.seconds / (time.perf_counter() - t0)
        func.func = inner
    log(f"profile {workload}: {wall * 1e3:.1f} ms per solve, {nfe} NFE; torch.profiler")
    with tprofile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            one()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events) or 1
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    ops = [{"name": e.key, "calls": e.count // n,
            "self_cpu_ms": e.self_cpu_time_total / 1e3 / n,
            "share": e.self_cpu_time_total / total} for e in events[:30]]
    log(f"profile {workload}: cProfile")
    cp = cProfile.Profile()
    cp.enable()
    for _ in range(n):
        one()
    cp.disable()
    st = pstats.Stats(cp)
    funcs = []
    for (fname, line, name), (_cc, nc, tt, ct, _) in st.stats.items():
        short = fname
        for marker in ("/odeflow/", "/benchmarks/", "site-packages/"):
            if marker in fname:
                short = marker.strip("/").split("/")[-1] + "/" + fname.split(marker, 1)[1]
                break
        funcs.append({"where": f"{short}:{line}({name})", "calls": nc // n,
                      "tottime_ms": tt * 1e3 / n, "cumtime_ms": ct * 1e3 / n,
                      "odeflow": "/odeflow/" in fname})
    funcs.sort(key=lambda f: (not f["odeflow"], -f["tottime_ms"]))
    own = [f for f in funcs if f["odeflow"]][:20]
    rest = sorted([f for f in funcs if not f["odeflow"]], key=lambda f: -f["tottime_ms"])[:15]
    tag = workload if gradient == "direct" else f"{workload}-{gradient}"
    argv = ["profile", workload] + ([] if gradient == "direct" else ["--gradient", gradient])
    payload = header(f"profile-{tag}", argv, False, {})
    payload.update({"what": what, "wall_s": wall, "nfe": nfe, "steps": steps, "ops": ops,
                    "func_forward_share": in_func,
                    "python": own + rest,
                    "python_total_ms": sum(f["tottime_ms"] for f in funcs)})
    finish(payload)
    path = Path(out) if out else RESULTS / f"profile-{tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25),
          file=sys.stderr)
    st.sort_stats("tottime").print_stats(25)
    return path
