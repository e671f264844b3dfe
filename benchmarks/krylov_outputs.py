"""Two small timings of the seventh pass: Krylov (GMRES) solves, and per-sample output passes.

* the 20,000-equation stiff problem of ``tests/test_rosenbrock.py`` with
  ``linear_solver="krylov"`` (rodas5p, kvaerno5): median of 3 solves, steps and GMRES
  iterations;
* GMRES alone on ``A = I + 0.05 randn(200)`` (float64 and complex128, restart 30,
  tol 1e-10): products and time;
* a per-sample solve with 200 output times per sample (B = 64, dopri5, a linear 2-D field)
  against the joint solve on one shared grid: median of 11.

One thread. Run: ``python -m benchmarks.krylov_outputs``.
"""

from __future__ import annotations

import statistics
import time

import torch

import odeflow
from odeflow.linalg import gmres

F64 = torch.float64


def _median_s(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    torch.set_num_threads(1)
    n = 20_000
    rates = torch.logspace(0, 2, n, dtype=F64)

    def stiff(t, y):
        return -rates * y + 0.1 * torch.tanh(torch.roll(y, 1))

    y0, t = torch.cos(torch.arange(n, dtype=F64)), torch.tensor([0.0, 1.0], dtype=F64)
    for method in ("rodas5p", "kvaerno5"):
        def solve(method=method):
            return odeflow.solve(stiff, y0, t, method=method, rtol=1e-6, atol=1e-9,
                                 options={"linear_solver": "krylov", "autonomous": True})
        s = solve().stats
        print(f"krylov {method}: {_median_s(solve, 3):.2f} s, {s.n_steps} steps, "
              f"{s.n_linear_iters} GMRES products")
    g = torch.Generator().manual_seed(0)
    for dtype in (F64, torch.complex128):
        A = torch.eye(200, dtype=F64) + 0.05 * torch.randn(200, 200, dtype=F64, generator=g)
        b = torch.randn(200, dtype=F64, generator=g)
        if dtype.is_complex:
            A = A + 0.03j * torch.randn(200, 200, dtype=F64, generator=g)
            b = b.to(dtype)
        x, iters = gmres(lambda v, A=A: A @ v, b, tol=1e-10, restart=30, max_iters=500)
        res = float(torch.linalg.vector_norm(A @ x - b) / torch.linalg.vector_norm(b))
        seconds = _median_s(lambda A=A, b=b: gmres(lambda v: A @ v, b, tol=1e-10, restart=30,
                                                   max_iters=500), 5)
        print(f"gmres {dtype}: {iters} products, residual {res:.1e}, {seconds * 1e3:.1f} ms")
    B, T = 64, 200
    a = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=F64)
    y0 = torch.randn(B, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    grid = torch.rand(B, T, dtype=F64, generator=torch.Generator().manual_seed(1)) * 10
    grid = torch.cat([torch.zeros(B, 1, dtype=F64), torch.sort(grid, dim=1).values], 1)
    with torch.no_grad():
        per_sample = _median_s(lambda: odeflow.solve(
            lambda t, y: y @ a.T, y0, grid, options={"per_sample": True}), 11)
        joint = _median_s(lambda: odeflow.solve(lambda t, y: y @ a.T, y0, grid[0]), 11)
    print(f"per-sample outputs B={B} T={T}: {per_sample * 1e3:.1f} ms; joint on one shared "
          f"grid: {joint * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
