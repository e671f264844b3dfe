"""Tableaus of the ESDIRK methods (explicit first stage, singly diagonally implicit RK).

An ESDIRK method with ``s`` stages has the Butcher matrix

.. code-block:: text

    c_1 = 0 |  0
    c_2     |  a_21  γ
    c_3     |  a_31  a_32  γ
     ...    |  ...
    c_s     |  a_s1  ...   a_s,s-1  γ
    --------+--------------------------
            |  b_1   ...   b_s-1    b_s        (the propagated solution)
            |  b̂_1   ...   b̂_s-1    b̂_s        (the embedded one)

All three methods here are *stiffly accurate* (``b`` is the last row of ``A``, so the new
solution is the last stage value and the last stage derivative is ``f`` at the step's end)
and L-stable (``R(∞) = 0``). ``tests/test_esdirk.py`` checks every order condition (all
rooted trees up to the claimed order) for ``b`` and ``b̂`` and ``R(∞)`` numerically.

Sources (the coefficients are published numbers; the code and layout are odeflow's):

* ``kvaerno3``, ``kvaerno5``: A. Kværnø, "Singly diagonally implicit Runge–Kutta methods
  with an explicit first stage", BIT Numer. Math. 44 (2004) 489–502. ``kvaerno3`` is her
  4-stage order-3 method with an order-2 embedding (``γ ≈ 0.4358665215``, the root in
  (0, 1) of ``6γ³ − 18γ² + 9γ − 1 = 0``; all other coefficients are closed-form functions
  of ``γ``); ``kvaerno5`` is her 7-stage order-5 method with an order-4 embedding
  (``γ = 0.26``, coefficients to 17 digits as published). In both the embedded solution
  is the second-to-last stage value (also at ``c = 1``).
* ``trbdf2``: R. E. Bank, W. M. Coughran, W. Fichtner, E. H. Grosse, D. J. Rose and
  R. K. Smith, "Transient simulation of silicon devices and circuits", IEEE Trans.
  Computer-Aided Design 4 (1985) 436–451, written as a 3-stage ESDIRK with
  ``γ = 2 − √2`` (the trapezoidal rule to ``t + γh``, then BDF2), and the embedded
  third-order formula for its error estimate from M. E. Hosea and L. F. Shampine,
  "Analysis and implementation of TR-BDF2", Appl. Numer. Math. 20 (1996) 21–37:
  with ``d = γ/2`` and ``w = √2/4``: ``b = (w, w, d)`` and ``b̂ = ((1 − w)/3,
  (3w + 1)/3, d/3)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["ESDIRKTableau", "ESDIRK_TABLEAUS", "KVAERNO3", "KVAERNO5", "TRBDF2"]

_CHECK_TOL = 1e-13


@dataclass(frozen=True)
class ESDIRKTableau:
    """An ESDIRK method in Butcher's notation (see the module docstring).

    Args:
        name: the method's name as ``method=`` spells it.
        gamma: the diagonal coefficient of the implicit stages ``2..s``.
        c: nodes, one per stage (``c[0] == 0``).
        a: the strictly lower part of ``A``: ``a[i]`` has ``i`` entries (``a[0] == ()``);
            the diagonal is ``0`` for the first stage and ``gamma`` for the others.
        b: weights of the propagated solution.
        b_hat: weights of the embedded solution.
        order: order of ``b``.
        embedded_order: order of ``b̂``.
        reference: where the coefficients come from.

    Derived: ``b_err = b − b̂`` (the error estimate is ``h Σ b_err_j k_j``),
    ``error_order = min(order, embedded_order)`` (the estimate is ``O(h^(error_order+1))``;
    the controller's exponent is ``1 / (error_order + 1)``), ``stiffly_accurate``.
    """

    name: str
    gamma: float
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_hat: tuple[float, ...]
    order: int
    embedded_order: int
    reference: str = ""

    def __post_init__(self) -> None:
        s = len(self.c)
        _require(s >= 2, f"{self.name}: an ESDIRK method needs at least 2 stages")
        _require(self.c[0] == 0, f"{self.name}: c[0] must be 0 (explicit first stage)")
        _require(len(self.a) == s and len(self.b) == s and len(self.b_hat) == s,
                 f"{self.name}: a, b, b_hat and c must have one entry per stage")
        for i, row in enumerate(self.a):
            _require(len(row) == i, f"{self.name}: a[{i}] must have {i} entries")
            diag = self.gamma if i > 0 else 0.0
            _require(abs(sum(row) + diag - self.c[i]) < _CHECK_TOL,
                     f"{self.name}: row {i} of A sums to {sum(row) + diag!r}, c[{i}] = "
                     f"{self.c[i]!r}")
        _require(abs(sum(self.b) - 1) < _CHECK_TOL, f"{self.name}: sum(b) != 1")
        _require(abs(sum(self.b_hat) - 1) < _CHECK_TOL, f"{self.name}: sum(b_hat) != 1")

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def b_err(self) -> tuple[float, ...]:
        return tuple(x - y for x, y in zip(self.b, self.b_hat))

    @property
    def error_order(self) -> int:
        return min(self.order, self.embedded_order)

    @property
    def stiffly_accurate(self) -> bool:
        """``b`` is the last row of ``A``: the new solution is the last stage value."""
        last = (*self.a[-1], self.gamma)
        return self.c[-1] == 1 and all(abs(x - y) < _CHECK_TOL for x, y in zip(self.b, last))

    def full_a(self) -> list[list[float]]:
        """``A`` as a dense ``s × s`` list of rows (diagonal included)."""
        s = self.stages
        return [[*row, self.gamma if i > 0 else 0.0, *([0.0] * (s - i - 1))]
                for i, row in enumerate(self.a)]


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


# ---------------------------------------------------------------------------------- kvaerno3
def _kvaerno3_gamma() -> float:
    """The root in (0, 1) of ``6γ³ − 18γ² + 9γ − 1`` by Newton's method, to full precision
    (Kværnø quotes 0.4358665215; the order-3 condition ``bᵀAc = 1/6`` needs all digits)."""
    g = 0.4358665215
    for _ in range(4):
        g -= (((6 * g - 18) * g + 9) * g - 1) / ((18 * g - 36) * g + 9)
    return g


def _kvaerno3() -> ESDIRKTableau:
    g = _kvaerno3_gamma()
    # Stage 3 (c = 1) is the stiffly accurate order-2 embedded solution:
    # a31 + a32 + γ = 1 and 2γ a32 + γ = 1/2.
    a32 = (1 - 2 * g) / (4 * g)
    a31 = 1 - g - a32
    # Stage 4 (c = 1) is the order-3 solution (Kværnø 2004, the (4, 2, 3) method).
    a41 = (6 * g - 1) / (12 * g)
    a42 = -1 / ((24 * g - 12) * g)
    a43 = (-6 * g * g + 6 * g - 1) / (6 * g - 3)
    return ESDIRKTableau(
        name="kvaerno3",
        gamma=g,
        c=(0.0, 2 * g, 1.0, 1.0),
        a=((), (g,), (a31, a32), (a41, a42, a43)),
        b=(a41, a42, a43, g),
        b_hat=(a31, a32, g, 0.0),
        order=3,
        embedded_order=2,
        reference="A. Kværnø, BIT Numer. Math. 44 (2004) 489-502: the 4-stage ESDIRK 3(2)",
    )


# ---------------------------------------------------------------------------------- kvaerno5
def _kvaerno5() -> ESDIRKTableau:
    g = 0.26
    a = (
        (),
        (0.26,),
        (0.13, 0.84033320996790809),
        (0.22371961478320505, 0.47675532319799699, -0.06470895363112615),
        (0.16648564323248321, 0.10450018841591720, 0.03631482272098715,
         -0.13090704451073998),
        (0.13855640231268224, 0.0, -0.04245337201752043, 0.02446657898003141,
         0.61943039072480676),
        (0.13659751177640291, 0.0, -0.05496908796538376, -0.04118626728321046,
         0.62993304899016403, 0.06962479448202728),
    )
    c = tuple(sum(row) + (g if i else 0.0) for i, row in enumerate(a))
    # c[5] and c[6] are 1 to the published digits; make them exactly 1 (the stages at the
    # step's end: the embedded and the propagated solution).
    c = (*c[:5], 1.0, 1.0)
    return ESDIRKTableau(
        name="kvaerno5",
        gamma=g,
        c=c,
        a=a,
        b=(*a[6], g),
        b_hat=(*a[5], g, 0.0),
        order=5,
        embedded_order=4,
        reference="A. Kværnø, BIT Numer. Math. 44 (2004) 489-502: the 7-stage ESDIRK 5(4)",
    )


# ------------------------------------------------------------------------------------ trbdf2
def _trbdf2() -> ESDIRKTableau:
    s2 = math.sqrt(2.0)
    g = 2 - s2  # the trapezoidal stage ends at t + γh
    d = g / 2  # the diagonal coefficient: 1 - √2/2
    w = s2 / 4
    return ESDIRKTableau(
        name="trbdf2",
        gamma=d,
        c=(0.0, g, 1.0),
        a=((), (d,), (w, w)),
        b=(w, w, d),
        b_hat=((1 - w) / 3, (3 * w + 1) / 3, d / 3),
        order=2,
        embedded_order=3,
        reference="Bank et al., IEEE Trans. CAD 4 (1985) 436-451; Hosea & Shampine, Appl. "
                  "Numer. Math. 20 (1996) 21-37 (embedded third-order estimate)",
    )


KVAERNO3 = _kvaerno3()
KVAERNO5 = _kvaerno5()
TRBDF2 = _trbdf2()

#: name -> tableau, for the registry: ``ESDIRK(ESDIRK_TABLEAUS[name], linear_solver, ...)``
ESDIRK_TABLEAUS: dict[str, ESDIRKTableau] = {
    t.name: t for t in (KVAERNO3, KVAERNO5, TRBDF2)
}
