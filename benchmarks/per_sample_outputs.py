"""Per-sample output grids: each sample of a batch has its own output times.

``B`` van der Pol oscillators (μ ~ U[0.5, 5], the S4 set-up), each with ``T`` output times of
its own drawn uniformly in [0, 10] (seeded), dopri5, rtol = atol = 1e-6, float64, forward
only, one thread. Contenders, run round-robin in one process (median of ``--reps``):

* odeflow per-sample (``options={"per_sample": True}``, ``t`` a ``(B, T)`` tensor);
* torchode per-sample (``t_eval`` a ``(B, T)`` tensor), the only peer with per-sample
  output times;
* odeflow with the end time as the only output (the same steps, no output passes), which
  shows what writing the outputs costs.

Also checks that odeflow and torchode agree at the output times (max abs difference).

Run: ``python -m benchmarks.per_sample_outputs [--batch 256] [--times 100] [--reps 7]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import odeflow

F64 = torch.float64


def workload(batch: int, times: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mu = 0.5 + 4.5 * torch.rand(batch, generator=g, dtype=F64)
    x0 = 0.5 + 2.0 * torch.rand(batch, generator=g, dtype=F64)
    y0 = torch.stack((x0, torch.zeros_like(x0)), -1)
    grid = torch.sort(torch.rand(batch, times, generator=g, dtype=F64) * 10, 1).values
    grid = torch.cat((torch.zeros(batch, 1, dtype=F64), grid, torch.full((batch, 1), 10.0,
                                                                          dtype=F64)), 1)

    def vdp(t, y):
        x, v = y.unbind(-1)
        return torch.stack((v, mu * (1 - x * x) * v - x), -1)
    return vdp, y0, grid


def contenders(vdp, y0, grid):
    out = {
        "odeflow per-sample": lambda: odeflow.solve(
            vdp, y0, grid, rtol=1e-6, atol=1e-6, options={"per_sample": True}).ys,
        "odeflow per-sample, end only": lambda: odeflow.solve(
            vdp, y0, grid[:, [0, -1]], rtol=1e-6, atol=1e-6, options={"per_sample": True}).ys,
    }
    try:
        import torchode as to
    except ImportError:
        print("torchode is not installed (pip install '.[bench]'): its row is skipped")
        return out
    term = to.ODETerm(vdp)
    solver = to.AutoDiffAdjoint(to.Dopri5(term=term),
                                to.IntegralController(atol=1e-6, rtol=1e-6, term=term))

    def torchode():
        return solver.solve(to.InitialValueProblem(y0=y0, t_eval=grid)).ys.transpose(0, 1)
    out["torchode per-sample"] = torchode
    return out


def time_rounds(runs: dict[str, Callable[[], Any]], reps: int
                ) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """One warm-up call of each contender (its result is returned), then ``reps`` rounds
    timing each once, round-robin."""
    results = {name: fn() for name, fn in runs.items()}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(reps):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    return results, seconds


def print_medians(seconds: dict[str, list[float]], ref_name: str, width: int) -> None:
    """Each contender's median [min-max] and its ratio to ``ref_name``'s median."""
    ref = statistics.median(seconds[ref_name])
    for name, ts in seconds.items():
        m = statistics.median(ts)
        print(f"  {name:{width}s} {m * 1e3:8.1f} ms  [{min(ts) * 1e3:.1f}-{max(ts) * 1e3:.1f}]  "
              f"{m / ref:.2f}x {ref_name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--times", type=int, default=100)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    vdp, y0, grid = workload(args.batch, args.times)
    with torch.no_grad():
        results, seconds = time_rounds(contenders(vdp, y0, grid), args.reps)
    print(f"B={args.batch}, {args.times} own output times per sample, dopri5, float64, "
          f"median of {args.reps}, one thread (odeflow at {odeflow.__file__})")
    print_medians(seconds, "odeflow per-sample", 32)
    if "torchode per-sample" in results:
        diff = (results["odeflow per-sample"] - results["torchode per-sample"]).abs().max()
        print(f"  max |odeflow - torchode| over the outputs: {float(diff):.1e}")


if __name__ == "__main__":
    main()
