"""Print the measured convergence order of every method (the setups of tests/test_odeint.py).

    python tools/convergence_orders.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_odeint import ORDER_SETUPS, ORDERS, measure_order  # noqa: E402


def main() -> None:
    print("| method | theoretical | measured | errors at the step counts |")
    print("|---|---|---|---|")
    for method in ORDER_SETUPS:
        counts, errs, slope = measure_order(method)
        pairs = ", ".join(f"{n}: {e:.1e}" for n, e in zip(counts, errs))
        print(f"| {method} | {ORDERS[method]} | {slope:.2f} | {pairs} |")


if __name__ == "__main__":
    main()
