"""odeflow's per-sample loop with and without ``options["compile"]`` (S4's problem).

    python -m benchmarks.per_sample_compile

1000 van der Pol oscillators (S4: μ ~ U[0.5, 5], y0 = (U[0.5, 2.5], 0), t ∈ [0, 10], dopri5,
rtol = atol = 1e-6, float64, no grad), eager and with the compiled per-sample step, timed
round-robin (median of 7 after a warm-up); the first compiled solve's time is the cold
compile. The func here has no Python side effects: a counter inside func would make
torch.compile recompile at every call (odeflow counts evaluations outside the compiled
region), which is why the S4 harness, whose func counts its calls, does not run it.
"""

from __future__ import annotations

import statistics
import time

import torch

import odeflow


def main() -> None:
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    n = 1000
    mu = torch.rand(n, generator=g, dtype=torch.float64) * 4.5 + 0.5
    y0 = torch.stack([torch.rand(n, generator=g, dtype=torch.float64) * 2 + 0.5,
                      torch.zeros(n, dtype=torch.float64)], 1)

    def f(t, y):
        return torch.stack([y[:, 1], mu * (1 - y[:, 0] ** 2) * y[:, 1] - y[:, 0]], 1)

    t = torch.tensor([0.0, 10.0], dtype=torch.float64)
    runs = {mode: (lambda c=(mode == "compiled"): odeflow.solve(
        f, y0, t, rtol=1e-6, atol=1e-6, options={"per_sample": True, "compile": c}))
        for mode in ("eager", "compiled")}
    first, times, ys, nfe = {}, {m: [] for m in runs}, {}, {}
    with torch.no_grad():
        for mode, run in runs.items():
            t0 = time.perf_counter()
            sol = run()
            first[mode] = time.perf_counter() - t0
            ys[mode], nfe[mode] = sol.ys[-1], sol.stats.nfe
        for _ in range(7):
            for mode, run in runs.items():
                t0 = time.perf_counter()
                run()
                times[mode].append(time.perf_counter() - t0)
    med = {m: statistics.median(v) for m, v in times.items()}
    diff = (ys["compiled"] - ys["eager"]).abs().max().item()
    print(f"eager    {med['eager'] * 1e3:7.1f} ms  (first solve {first['eager']:.2f} s)")
    print(f"compiled {med['compiled'] * 1e3:7.1f} ms  (first solve, cold compile "
          f"{first['compiled']:.2f} s)")
    print(f"compiled / eager {med['compiled'] / med['eager']:.2f}; NFE {nfe['eager']} / "
          f"{nfe['compiled']}; max |difference| of y(10) {diff:.1e}")


if __name__ == "__main__":
    main()
