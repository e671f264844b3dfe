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
  with an explicit first stage", BIT Numer. Math. 44 (2004) 489–502: her 4-stage order-3
  method with an order-2 embedding (all coefficients closed-form functions of ``γ``) and
  her 7-stage order-5 method (``γ = 0.26``, coefficients to 17 digits as published; its
  error estimate uses odeflow's order-3 embedding, see ``_KVAERNO5_B_HAT3``).
* ``trbdf2``: R. E. Bank, W. M. Coughran, W. Fichtner, E. H. Grosse, D. J. Rose and
  R. K. Smith, "Transient simulation of silicon devices and circuits", IEEE Trans.
  Computer-Aided Design 4 (1985) 436–451, written as a 3-stage ESDIRK (the trapezoidal rule
  to ``t + 2γh``, then BDF2), with the embedded third-order error estimate of M. E. Hosea
  and L. F. Shampine, "Analysis and implementation of TR-BDF2", Appl. Numer. Math. 20
  (1996) 21–37.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..tableaus import CHECK_TOL, check_tableau, require

__all__ = ["ESDIRKTableau", "ESDIRK_TABLEAUS", "KVAERNO3", "KVAERNO5", "TRBDF2",
           "stage_predictor"]


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
        dense: optional continuous extension: ``dense[j]`` are the coefficients of
            ``θ, θ², …`` in ``b_j(θ)`` (``y(t + θh) ≈ y + h Σ b_j(θ) k_j``, ``b_j(1) = b_j``);
            empty: the stepper interpolates by cubic Hermite.

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
    dense: tuple[tuple[float, ...], ...] = ()

    def __post_init__(self) -> None:
        require(len(self.c) >= 2, f"{self.name}: an ESDIRK method needs at least 2 stages")
        check_tableau(self.name, self.c, self.a, self.b, self.gamma, self.dense)
        require(len(self.b_hat) == len(self.c), f"{self.name}: b_hat needs one entry per stage")
        require(abs(sum(self.b_hat) - 1) < CHECK_TOL, f"{self.name}: sum(b_hat) != 1")
        require(self.stiffly_accurate, f"{self.name}: the ESDIRK stepper needs a stiffly "
                "accurate tableau (y_new is the last stage value)")

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
        return self.c[-1] == 1 and all(abs(x - y) < CHECK_TOL for x, y in zip(self.b, last))

    @property
    def embedded_bounded(self) -> bool:
        """Whether the embedded method's ``R̂(z)`` stays bounded as ``z → ∞`` (TR-BDF2's grows
        like ``0.47|z|``; only such an embedding needs the error filter ``(I − hγJ)⁻¹``).
        With ``A = [[0, 0], [a, Ã]]`` the ``O(z)`` term of ``R̂`` is
        ``z (b̂_1 − b̂_{2:}ᵀ Ã⁻¹ a)``."""
        x: list[float] = []  # Ã⁻¹ a, by forward substitution (Ã: lower triangular, γ diagonal)
        for row in self.a[1:]:
            x.append((row[0] - sum(w * v for w, v in zip(row[1:], x))) / self.gamma)
        lead = self.b_hat[0] - sum(w * v for w, v in zip(self.b_hat[1:], x))
        return abs(lead) < 1e-12

    def dense_weights(self, theta: Any) -> Any:
        """``b_j(θ)`` of the continuous extension (``dense`` must be set); ``theta`` a float,
        or a tensor (per sample: ``(s, *theta.shape)`` weights, by one small matrix product)."""
        if isinstance(theta, torch.Tensor):
            degree = max(len(row) for row in self.dense)
            coef = torch.tensor([list(row) + [0.0] * (degree - len(row)) for row in self.dense],
                                dtype=theta.dtype, device=theta.device)  # (s, degree)
            powers = torch.cumprod(theta[..., None].expand(*theta.shape, degree), -1)  # θ, θ², …
            return (powers @ coef.T).movedim(-1, 0)
        return [sum(cf * theta ** (p + 1) for p, cf in enumerate(row)) for row in self.dense]

    def dense_derivative_weights(self, theta: Any) -> Any:
        """``b_j'(θ)`` (``d/dt`` of the dense output is ``Σ b_j'(θ) k_j``); for a ``(B,)``
        tensor ``theta``, ``(s, B)`` weights."""
        out = [sum((p + 1) * cf * theta ** p for p, cf in enumerate(row)) for row in self.dense]
        return torch.stack(out) if isinstance(theta, torch.Tensor) else out

    def full_a(self) -> list[list[float]]:
        """``A`` as a dense ``s × s`` list of rows (diagonal included)."""
        s = self.stages
        return [[*row, self.gamma if i > 0 else 0.0, *([0.0] * (s - i - 1))]
                for i, row in enumerate(self.a)]


def _kvaerno3() -> ESDIRKTableau:
    # γ: the root in (0, 1) of 6γ³ − 18γ² + 9γ − 1 by Newton's method, to full precision
    # (Kværnø quotes 0.4358665215; the order-3 condition bᵀAc = 1/6 needs all digits).
    g = 0.4358665215
    for _ in range(4):
        g -= (((6 * g - 18) * g + 9) * g - 1) / ((18 * g - 36) * g + 9)
    # Stage 3 (c = 1) is the stiffly accurate order-2 embedded solution:
    # a31 + a32 + γ = 1 and 2γ a32 + γ = 1/2.
    a32 = (1 - 2 * g) / (4 * g)
    a31 = 1 - g - a32
    # Stage 4 (c = 1) is the order-3 solution (Kværnø 2004, the (4, 2, 3) method).
    a41 = (6 * g - 1) / (12 * g)
    a42 = -1 / ((24 * g - 12) * g)
    a43 = (-6 * g * g + 6 * g - 1) / (6 * g - 3)
    return ESDIRKTableau(
        name="kvaerno3", gamma=g, c=(0.0, 2 * g, 1.0, 1.0),
        a=((), (g,), (a31, a32), (a41, a42, a43)),
        b=(a41, a42, a43, g), b_hat=(a31, a32, g, 0.0), order=3, embedded_order=2,
        reference="A. Kværnø, BIT Numer. Math. 44 (2004) 489-502: the 4-stage ESDIRK 3(2)")


# The order-3 embedding of kvaerno5 used for its error estimate (so the controller's
# exponent is 1/4). Kværnø's own order-4 embedding (z_6, KVAERNO5_B_HAT4) tracks the
# order-5 solution's error too closely to be a safe bound: on the accepted steps of the
# stiff benchmark the true local error was 0.5–1.7 times its estimate (Robertson,
# Oregonator) and the global error grew to 3–30 tolerances. RADAU5 likewise pairs order 5
# with an order-3 estimate (Hairer & Wanner §IV.8). b̂ with the four order conditions of
# order ≤ 3, a bounded stability function (b̂_1 = b̂_{2:}ᵀ Ã⁻¹ a) and R̂(∞) = 0 (L-stable;
# |R̂(iy)| ≤ 1 is checked by the tests) leaves one free parameter. It is the one closest to
# the minimum-norm b̂ for which |R(z) − R̂(z)| ≥ |R(z) − e^z| on all of z ≤ 0 (the estimate
# dominates the solution's own error on every decaying linear mode; bisection on the
# parameter, in float64 from Kværnø's A; odeflow's derivation). The minimum-norm b̂ had
# R − R̂ = 0 at z ≈ −3.3 and was 10–60 times below the true error on [−3, −100]: steps
# through the Oregonator's fast transients (hλ in that range) were accepted with errors 2.6
# times the estimate and the solve ended 5 tolerances off (now 0.56).
_KVAERNO5_B_HAT3 = (
    0.1612641764274261, -0.08365638568806219, -0.14272661349720905, -0.08142419176831131,
    0.628991058916731, -0.1951828692861627, 0.7127348248955878,
)

# The order-4 continuous extension of kvaerno5: b_j(θ) = Σ_{p=1..5} dense[j][p-1] θ^p.
# For p = 1..4 the coefficient vector β_p is the minimum-norm solution of
# Σ_j β_pj Φ_j(τ) = [ρ(τ) = p] / γ(τ) over the 8 trees τ of order ≤ 4 (Hairer, Nørsett &
# Wanner I, §II.6, the conditions for a continuous extension of order 4), with the
# boundedness condition of the stiff limit added; β_5 = b − Σ β_p makes b(1) = b. The
# 8 × 7 system of elementary weights has rank 5 (Kværnø's method satisfies simplifying
# assumptions), so it is consistent: the residuals are at rounding level. k_2 gets weight
# 0 (a_62 = a_72 = 0: it enters no condition of order ≤ 4 except through later stages).
_KVAERNO5_DENSE = (
    (0.9890907083622478, -2.075181844361411, 1.72941552394241, -0.505569044234898,
     -0.001157831931945713),
    (0.0, 0.0, 0.0, 0.0, 0.0),
    (-0.06970149316758642, 0.8226350854882425, -1.6564642841865596, 0.8559592074456055,
     -0.007397603545085743),
    (-0.36562841744831437, -0.7719664500568458, 2.4738581629958496, -1.3386444532392165,
     -0.038805109534683364),
    (0.05849053832587448, 3.2737868476044523, -4.20295878760281, 1.4944066953620125,
     0.006207755300634998),
    (0.2761438622174649, -0.5461595062615086, 0.5359639437463837, -0.08379935549507256,
     -0.11252414972524018),
    (0.11160480171031345, -0.7031141324129289, 1.120185441104725, -0.4223530498384299,
     0.15367693943632033),
)


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
        name="kvaerno5", gamma=g, c=c, a=a, b=(*a[6], g), b_hat=_KVAERNO5_B_HAT3, order=5,
        embedded_order=3, dense=_KVAERNO5_DENSE,
        reference="A. Kværnø, BIT Numer. Math. 44 (2004) 489-502: the 7-stage ESDIRK 5(4) "
                  "(A, b); the order-3 L-stable embedding and the order-4 dense output are "
                  "odeflow's (see the comments above)")


def _trbdf2() -> ESDIRKTableau:
    s2 = math.sqrt(2.0)
    g = 2 - s2  # the trapezoidal stage ends at t + γh
    d = g / 2  # the diagonal coefficient: 1 - √2/2
    w = s2 / 4
    return ESDIRKTableau(
        name="trbdf2", gamma=d, c=(0.0, g, 1.0), a=((), (d,), (w, w)), b=(w, w, d),
        b_hat=((1 - w) / 3, (3 * w + 1) / 3, d / 3), order=2, embedded_order=3,
        reference="Bank et al., IEEE Trans. CAD 4 (1985) 436-451; Hosea & Shampine, Appl. "
                  "Numer. Math. 20 (1996) 21-37 (embedded third-order estimate)")


KVAERNO3 = _kvaerno3()
KVAERNO5 = _kvaerno5()
#: Kværnø's own order-4 embedding of ``kvaerno5`` (the stage value ``z_6``, also at c = 1;
#: not used for the error estimate, see ``_KVAERNO5_B_HAT3``); kept for the tests.
KVAERNO5_B_HAT4 = (*KVAERNO5.a[5], KVAERNO5.gamma, 0.0)
TRBDF2 = _trbdf2()

#: name -> tableau, for the registry: ``ESDIRK(ESDIRK_TABLEAUS[name], linear_solver, ...)``
ESDIRK_TABLEAUS: dict[str, ESDIRKTableau] = {t.name: t for t in (KVAERNO3, KVAERNO5, TRBDF2)}


def stage_predictor(c: Sequence[float], i: int) -> tuple[str, Any]:
    """How implicit stage ``i ≥ 1`` is predicted (the Newton iteration's ``z_i^0``, see
    :mod:`odeflow.solvers.esdirk`): ``("same", j)``: the value of stage ``j`` at the same
    node; ``("poly", w)``: ``r_i + hγ Σ_j w_j k_j``, the stage derivative extrapolated with
    the smallest-norm weights that reproduce polynomials in ``c`` of degree ``n − 1``
    (``n ≤ 3`` distinct earlier nodes) or ``n − 2`` (more: the extra node damps the stages'
    own ``O(h³)`` deviations), used when ``c_i`` is within one node span of the earlier
    nodes; ``("previous", w)`` (stage 2; kvaerno5's stage 3 at ``c = 1.23``): the previous
    step's dense output, ``w`` the polynomial fallback for the first step and after a jump."""
    same = max((j for j in range(1, i) if c[j] == c[i]), default=None)
    if same is not None:
        return ("same", same)
    nodes = [float(x) for x in c[:i]]
    distinct = sorted(set(nodes))
    n = len(distinct)
    degree = n - 1 if n <= 3 else n - 2
    vander = torch.tensor([[x ** q for x in nodes] for q in range(degree + 1)],
                          dtype=torch.float64)
    target = torch.tensor([[float(c[i]) ** q] for q in range(degree + 1)], dtype=torch.float64)
    weights = tuple((j, w) for j, w in enumerate(
        (torch.linalg.pinv(vander) @ target).squeeze(1).tolist()) if w != 0)
    span = distinct[-1] - distinct[0]
    reach = max(float(c[i]) - distinct[-1], distinct[0] - float(c[i]), 0.0)
    return ("poly" if n >= 2 and reach <= span else "previous", weights)
