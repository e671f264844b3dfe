"""Print the measured convergence order of every method (the setups of tests/test_odeint.py).

    python tools/convergence_orders.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import odeflow  # noqa: E402
from odeflow.solvers import ADAPTIVE_METHODS  # noqa: E402
from tests.test_odeint import ORDER_SETUPS, ORDERS, _slope  # noqa: E402


def main() -> None:
    print("| method | theoretical | measured | errors at the step counts |")
    print("|---|---|---|---|")
    for method, (make, counts) in ORDER_SETUPS.items():
        f, y0, t_end, exact = make()
        t = torch.tensor([0.0, t_end], dtype=torch.float64)
        errs = []
        for n in counts:
            h = t_end / n
            if method in ADAPTIVE_METHODS:
                ys = odeflow.odeint(f, y0, t, method=method, rtol=1e6, atol=1e6,
                                    options={"first_step": h, "ifactor": 1.0})
            else:
                ys = odeflow.odeint(f, y0, t, method=method, options={"step_size": h})
            errs.append((ys[-1] - exact).abs().max().item())
        pairs = ", ".join(f"{n}: {e:.1e}" for n, e in zip(counts, errs))
        print(f"| {method} | {ORDERS[method]} | {_slope(counts, errs):.2f} | {pairs} |")


if __name__ == "__main__":
    main()
