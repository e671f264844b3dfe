"""Compare dopri5's embedded error estimators: Dormand & Prince's and torchdiffeq's.

Both 4th-order embeddings satisfy the order conditions up to order 4; their 5th-order
residuals (the leading error coefficients of the estimate) set how large the estimated error
is, hence the step size at a given tolerance (step ∝ error^(-1/5)).

    python tools/dopri5_estimators.py
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from odeflow.tableaus import DOPRI5  # noqa: E402
from tests.test_tableaus import elementary_weights, order_residuals  # noqa: E402

TORCHDIFFEQ_B_HAT = ("1951/21600", "0", "22642/50085", "451/720", "-12231/42400",
                     "649/6300", "1/60")


def main() -> None:
    phi = elementary_weights(DOPRI5, 5)
    ours = np.array(DOPRI5.b) - np.array(DOPRI5.b_err)
    theirs = np.array([float(Fraction(v)) for v in TORCHDIFFEQ_B_HAT])
    res = {}
    for name, b_hat in (("Dormand-Prince (odeflow)", ours), ("torchdiffeq", theirs)):
        worst = [float(np.abs(order_residuals(b_hat, phi, n)).max()) for n in range(1, 6)]
        res[name] = worst[4]
        print(f"{name:26s} max residual by order 1..5: " + ", ".join(f"{w:.2e}" for w in worst))
    ratio = res["torchdiffeq"] / res["Dormand-Prince (odeflow)"]
    print(f"5th-order residual ratio torchdiffeq / Dormand-Prince: {ratio:.3f}; "
          f"step-size ratio at equal tolerance ≈ {ratio ** (-1 / 5):.3f}")


if __name__ == "__main__":
    main()
