"""The stiff test problems of ``python -m benchmarks stiff``: NumPy and torch definitions.

Each problem has a NumPy right-hand side with its analytic Jacobian (what a SciPy user
passes to ``solve_ivp``) and a torch module computing the same right-hand side on any
leading shape (what odeflow and the SciPy bridge integrate). The torch modules also have
an analytic ``jacobian(t, y)`` for odeflow's ``options["jacobian"]``.

Definitions and published reference values:

- Robertson (ROBER): H. H. Robertson (1966); E. Hairer, G. Wanner, *Solving Ordinary
  Differential Equations II*, 2nd ed., Springer 1996, §IV.1, eq. (1.4); F. Mazzia,
  F. Iavernaro, C. Magherini, *Test Set for IVP Solvers* (University of Bari,
  https://archimede.uniba.it/~testset/), problem ROBER (reference at t = 1e11).
- Van der Pol with μ = 1000 in the unscaled form, y0 = (2, 0), t ∈ [0, 3000]: the
  stiff example ``vdp1000`` of L. F. Shampine, M. W. Reichelt, "The MATLAB ODE Suite",
  SIAM J. Sci. Comput. 18 (1997); Hairer & Wanner II §IV.1 treat the scaled form.
- HIRES: R. Schäfer (1975); Hairer & Wanner II §IV.10; test set problem HIRES
  (reference at t = 321.8122).
- Oregonator (OREGO): R. J. Field, R. M. Noyes (1974); Hairer & Wanner II §IV.1,
  eq. (1.5) and §IV.10 (reference at t = 360).
- POLLU: J. G. Verwer, "Gauss–Seidel iteration for stiff ODEs from chemical kinetics",
  SIAM J. Sci. Comput. 15 (1994); test set problem POLLU (20 species, 25 reactions,
  reference at t = 60).

The published values below were checked against SciPy Radau at rtol 1e-12 (see the
tests and ``stiff-references.json``); the harness measures errors against its own tight
Radau references, and records the distance between the two.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

# --------------------------------------------------------------------------------------
# Robertson: y1 → y2 (k1), y2 + y3 → y1 + y3 (k2), 2 y2 → y2 + y3 (k3)
# --------------------------------------------------------------------------------------
ROBER_K = (0.04, 1.0e4, 3.0e7)


def rober_f(t: float, y: np.ndarray, k: np.ndarray | tuple = ROBER_K) -> np.ndarray:
    """Robertson's right-hand side; ``y`` (3,) or (3, m) (SciPy's vectorized layout)."""
    k1, k2, k3 = k
    a, b, c = k1 * y[0], k2 * y[1] * y[2], k3 * y[1] ** 2
    return np.array([-a + b, a - b - c, c])


def rober_jac(t: float, y: np.ndarray, k: np.ndarray | tuple = ROBER_K) -> np.ndarray:
    k1, k2, k3 = k
    return np.array([
        [-k1, k2 * y[2], k2 * y[1]],
        [k1, -k2 * y[2] - 2 * k3 * y[1], -k2 * y[1]],
        [0.0, 2 * k3 * y[1], 0.0],
    ])


class Robertson(nn.Module):
    """Robertson's kinetics; ``k`` is (3,) or, for a batch of systems, (B, 3)."""

    def __init__(self, k: torch.Tensor | None = None):
        super().__init__()
        k = torch.tensor(ROBER_K, dtype=torch.float64) if k is None else k
        self.register_buffer("k", k)

    def forward(self, t, y):
        k1, k2, k3 = self.k.unbind(-1)
        y1, y2, y3 = y.unbind(-1)
        a, b, c = k1 * y1, k2 * y2 * y3, k3 * y2 * y2
        return torch.stack((b - a, a - b - c, c), -1)

    def jacobian(self, t, y):
        k1, k2, k3 = self.k.unbind(-1)
        _, y2, y3 = y.unbind(-1)
        k1 = k1.expand_as(y2)
        zero = torch.zeros_like(y2)
        rows = (
            (-k1, k2 * y3, k2 * y2),
            (k1, -k2 * y3 - 2 * k3 * y2, -k2 * y2),
            (zero, 2 * k3 * y2, zero),
        )
        return torch.stack([torch.stack(r, -1) for r in rows], -2)


# --------------------------------------------------------------------------------------
# Van der Pol, μ = 1000 (unscaled)
# --------------------------------------------------------------------------------------
VDP_MU = 1000.0


def vdp_f(t: float, y: np.ndarray, mu: float = VDP_MU) -> np.ndarray:
    return np.array([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])


def vdp_jac(t: float, y: np.ndarray, mu: float = VDP_MU) -> np.ndarray:
    return np.array([[0.0, 1.0], [-2 * mu * y[0] * y[1] - 1, mu * (1 - y[0] ** 2)]])


class VanDerPol(nn.Module):
    def __init__(self, mu: float = VDP_MU):
        super().__init__()
        self.mu = mu

    def forward(self, t, y):
        x, v = y.unbind(-1)
        return torch.stack((v, self.mu * (1 - x * x) * v - x), -1)

    def jacobian(self, t, y):
        x, v = y.unbind(-1)
        rows = ((torch.zeros_like(x), torch.ones_like(x)),
                (-2 * self.mu * x * v - 1, self.mu * (1 - x * x)))
        return torch.stack([torch.stack(r, -1) for r in rows], -2)


# --------------------------------------------------------------------------------------
# HIRES: 8 species
# --------------------------------------------------------------------------------------
def hires_f(t: float, y: np.ndarray) -> np.ndarray:
    y1, y2, y3, y4, y5, y6, y7, y8 = y
    r = 280.0 * y6 * y8
    return np.array([
        -1.71 * y1 + 0.43 * y2 + 8.32 * y3 + 0.0007,
        1.71 * y1 - 8.75 * y2,
        -10.03 * y3 + 0.43 * y4 + 0.035 * y5,
        8.32 * y2 + 1.71 * y3 - 1.12 * y4,
        -1.745 * y5 + 0.43 * y6 + 0.43 * y7,
        -r + 0.69 * y4 + 1.71 * y5 - 0.43 * y6 + 0.69 * y7,
        r - 1.81 * y7,
        -r + 1.81 * y7,
    ])


# The linear part of HIRES (row i, column j: ∂f_i/∂y_j without the 280·y6·y8 term).
_HIRES_A = np.array([
    [-1.71, 0.43, 8.32, 0, 0, 0, 0, 0],
    [1.71, -8.75, 0, 0, 0, 0, 0, 0],
    [0, 0, -10.03, 0.43, 0.035, 0, 0, 0],
    [0, 8.32, 1.71, -1.12, 0, 0, 0, 0],
    [0, 0, 0, 0, -1.745, 0.43, 0.43, 0],
    [0, 0, 0, 0.69, 1.71, -0.43, 0.69, 0],
    [0, 0, 0, 0, 0, 0, -1.81, 0],
    [0, 0, 0, 0, 0, 0, 1.81, 0],
])


def hires_jac(t: float, y: np.ndarray) -> np.ndarray:
    jac = _HIRES_A.copy()
    # d(280 y6 y8) = 280 (y8 dy6 + y6 dy8): enters rows 6 (−), 7 (+), 8 (−).
    for row, sign in ((5, -1.0), (6, 1.0), (7, -1.0)):
        jac[row, 5] += sign * 280.0 * y[7]
        jac[row, 7] += sign * 280.0 * y[5]
    return jac


class Hires(nn.Module):
    def forward(self, t, y):
        y1, y2, y3, y4, y5, y6, y7, y8 = y.unbind(-1)
        r = 280.0 * y6 * y8
        return torch.stack((
            -1.71 * y1 + 0.43 * y2 + 8.32 * y3 + 0.0007,
            1.71 * y1 - 8.75 * y2,
            -10.03 * y3 + 0.43 * y4 + 0.035 * y5,
            8.32 * y2 + 1.71 * y3 - 1.12 * y4,
            -1.745 * y5 + 0.43 * y6 + 0.43 * y7,
            -r + 0.69 * y4 + 1.71 * y5 - 0.43 * y6 + 0.69 * y7,
            r - 1.81 * y7,
            -r + 1.81 * y7,
        ), -1)

    def jacobian(self, t, y):
        a = torch.as_tensor(_HIRES_A, dtype=y.dtype, device=y.device)
        jac = a.expand(*y.shape[:-1], 8, 8).clone()
        sign = torch.tensor([-1.0, 1.0, -1.0], dtype=y.dtype, device=y.device)
        jac[..., 5:8, 5] += sign * 280.0 * y[..., 7:8]
        jac[..., 5:8, 7] += sign * 280.0 * y[..., 5:6]
        return jac


# --------------------------------------------------------------------------------------
# Oregonator
# --------------------------------------------------------------------------------------
OREGO_S, OREGO_Q, OREGO_W = 77.27, 8.375e-6, 0.161


def orego_f(t: float, y: np.ndarray) -> np.ndarray:
    y1, y2, y3 = y
    return np.array([
        OREGO_S * (y2 + y1 * (1 - OREGO_Q * y1 - y2)),
        (y3 - (1 + y1) * y2) / OREGO_S,
        OREGO_W * (y1 - y3),
    ])


def orego_jac(t: float, y: np.ndarray) -> np.ndarray:
    y1, y2, _ = y
    s, q, w = OREGO_S, OREGO_Q, OREGO_W
    return np.array([
        [s * (1 - 2 * q * y1 - y2), s * (1 - y1), 0.0],
        [-y2 / s, -(1 + y1) / s, 1 / s],
        [w, 0.0, -w],
    ])


class Oregonator(nn.Module):
    def forward(self, t, y):
        y1, y2, y3 = y.unbind(-1)
        s, q, w = OREGO_S, OREGO_Q, OREGO_W
        return torch.stack((
            s * (y2 + y1 * (1 - q * y1 - y2)),
            (y3 - (1 + y1) * y2) / s,
            w * (y1 - y3),
        ), -1)

    def jacobian(self, t, y):
        y1, y2, _ = y.unbind(-1)
        s, q, w = OREGO_S, OREGO_Q, OREGO_W
        zero = torch.zeros_like(y1)
        rows = (
            (s * (1 - 2 * q * y1 - y2), s * (1 - y1), zero),
            (-y2 / s, -(1 + y1) / s, zero + 1 / s),
            (zero + w, zero, zero - w),
        )
        return torch.stack([torch.stack(r, -1) for r in rows], -2)


# --------------------------------------------------------------------------------------
# POLLU: 20 species, 25 mass-action reactions (Verwer 1994; the IVP test set)
# --------------------------------------------------------------------------------------
# (rate constant, reactant indices (1-based, one or two), {species: stoichiometric change})
POLLU_REACTIONS = (
    (0.35, (1,), {1: -1, 2: 1, 3: 1}),
    (26.6, (2, 4), {2: -1, 4: -1, 1: 1}),
    (1.23e4, (5, 2), {5: -1, 2: -1, 1: 1, 6: 1}),
    (8.6e-4, (7,), {7: -1, 5: 2, 8: 1}),
    (8.2e-4, (7,), {7: -1, 8: 1}),
    (1.5e4, (7, 6), {7: -1, 6: -1, 5: 1, 8: 1}),
    (1.3e-4, (9,), {9: -1, 5: 1, 8: 1, 10: 1}),
    (2.4e4, (9, 6), {9: -1, 6: -1, 11: 1}),
    (1.65e4, (11, 2), {11: -1, 2: -1, 1: 1, 10: 1, 12: 1}),
    (9.0e3, (11, 1), {11: -1, 1: -1, 13: 1}),
    (2.2e-2, (13,), {13: -1, 1: 1, 11: 1}),
    (1.2e4, (10, 2), {10: -1, 2: -1, 1: 1, 14: 1}),
    (1.88, (14,), {14: -1, 5: 1, 7: 1}),
    (1.63e4, (1, 6), {1: -1, 6: -1, 15: 1}),
    (4.8e6, (3,), {3: -1, 4: 1}),
    (3.5e-4, (4,), {4: -1, 16: 1}),
    (1.75e-2, (4,), {4: -1, 3: 1}),
    (1.0e8, (16,), {16: -1, 6: 2}),
    (4.44e11, (16,), {16: -1, 3: 1}),
    (1.24e3, (17, 6), {17: -1, 6: -1, 5: 1, 18: 1}),
    (2.1, (19,), {19: -1, 2: 1}),
    (5.78, (19,), {19: -1, 1: 1, 3: 1}),
    (4.74e-2, (1, 4), {1: -1, 4: -1, 19: 1}),
    (1.78e3, (19, 1), {19: -1, 1: -1, 20: 1}),
    (3.12, (20,), {20: -1, 1: 1, 19: 1}),
)
POLLU_N = 20
POLLU_Y0 = tuple({2: 0.2, 4: 0.04, 7: 0.1, 8: 0.3, 9: 0.01, 17: 0.007}.get(i, 0.0)
                 for i in range(1, POLLU_N + 1))


def _pollu_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(k (R,), first reactant (R,), second reactant or the index N of a constant 1 (R,),
    stoichiometry S (R, N)), zero-based."""
    r = len(POLLU_REACTIONS)
    k = np.array([rc[0] for rc in POLLU_REACTIONS])
    a = np.array([rc[1][0] - 1 for rc in POLLU_REACTIONS])
    b = np.array([rc[1][1] - 1 if len(rc[1]) == 2 else POLLU_N for rc in POLLU_REACTIONS])
    s = np.zeros((r, POLLU_N))
    for i, (_, _, change) in enumerate(POLLU_REACTIONS):
        for sp, c in change.items():
            s[i, sp - 1] = c
    return k, a, b, s


_PK, _PA, _PB, _PS = _pollu_tables()


def _pollu_rates(y: np.ndarray) -> np.ndarray:
    y1 = np.append(y, 1.0)  # index N is the constant 1 of unimolecular reactions
    return _PK * y1[_PA] * y1[_PB]


def pollu_f(t: float, y: np.ndarray) -> np.ndarray:
    return _pollu_rates(y) @ _PS


def pollu_jac(t: float, y: np.ndarray) -> np.ndarray:
    # ∂r_k/∂y_i = k (δ(a_k, i) y_b + y_a δ(b_k, i)); J = Sᵀ ∂r/∂y.
    y1 = np.append(y, 1.0)
    dr = np.zeros((len(_PK), POLLU_N + 1))
    rows = np.arange(len(_PK))
    np.add.at(dr, (rows, _PA), _PK * y1[_PB])
    np.add.at(dr, (rows, _PB), _PK * y1[_PA])
    return _PS.T @ dr[:, :POLLU_N]


class Pollu(nn.Module):
    """POLLU's 25 reactions as one gather, product and matrix product."""

    def __init__(self):
        super().__init__()
        self.register_buffer("k", torch.from_numpy(_PK))
        self.register_buffer("a", torch.from_numpy(_PA))
        self.register_buffer("b", torch.from_numpy(_PB))
        self.register_buffer("s", torch.from_numpy(_PS))

    def forward(self, t, y):
        y1 = torch.cat((y, torch.ones_like(y[..., :1])), -1)
        rates = self.k * y1[..., self.a] * y1[..., self.b]
        return rates @ self.s

    def jacobian(self, t, y):
        y1 = torch.cat((y, torch.ones_like(y[..., :1])), -1)
        r = len(self.k)
        dr = y.new_zeros(*y.shape[:-1], r, POLLU_N + 1)
        rows = torch.arange(r, device=y.device)
        dr[..., rows, self.a] += self.k * y1[..., self.b]
        dr[..., rows, self.b] += self.k * y1[..., self.a]
        return self.s.T @ dr[..., :POLLU_N]


# --------------------------------------------------------------------------------------
# The problem table
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StiffProblem:
    """One benchmark case: a problem, its time span and absolute tolerance."""

    key: str
    title: str
    y0: tuple[float, ...]
    t_end: float
    atol: float
    f: Callable[[float, np.ndarray], np.ndarray]
    jac: Callable[[float, np.ndarray], np.ndarray]
    module: Callable[[], nn.Module]
    published: tuple[float, ...] | None = None
    published_source: str = ""

    @property
    def n(self) -> int:
        return len(self.y0)


_TESTSET = "Mazzia & Magherini, Test Set for IVP Solvers (release 2.4), problem "

PROBLEMS: dict[str, StiffProblem] = {p.key: p for p in (
    StiffProblem("rober-1e5", "Robertson, t = 1e5", (1.0, 0.0, 0.0), 1e5, 1e-10,
                 rober_f, rober_jac, Robertson),
    StiffProblem("rober-1e11", "Robertson, t = 1e11", (1.0, 0.0, 0.0), 1e11, 1e-10,
                 rober_f, rober_jac, Robertson,
                 (0.2083340149701255e-07, 0.8333360770334713e-13, 0.9999999791665050),
                 _TESTSET + "ROBER"),
    StiffProblem("vdp-1000", "van der Pol μ = 1000, t = 3000", (2.0, 0.0), 3000.0, 1e-6,
                 vdp_f, vdp_jac, VanDerPol),
    StiffProblem("hires", "HIRES, t = 321.8122",
                 (1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0057), 321.8122, 1e-10,
                 hires_f, hires_jac, Hires,
                 (0.7371312573325668e-3, 0.1442485726316185e-3, 0.5888729740967575e-4,
                  0.1175651343283149e-2, 0.2386356198831331e-2, 0.6238968252742796e-2,
                  0.2849998395185769e-2, 0.2850001604814231e-2),
                 _TESTSET + "HIRES"),
    StiffProblem("orego", "Oregonator, t = 360", (1.0, 2.0, 3.0), 360.0, 1e-6,
                 orego_f, orego_jac, Oregonator,
                 (0.1000814870318523e1, 0.1228178521549917e4, 0.1320554942846706e3),
                 "Hairer & Wanner II, §IV.10 (OREGO)"),
    StiffProblem("pollu", "POLLU (20 species), t = 60", POLLU_Y0, 60.0, 1e-10,
                 pollu_f, pollu_jac, Pollu,
                 (0.5646255480022769e-01, 0.1342484130422339e+00, 0.4139734331099427e-08,
                  0.5523140207484359e-02, 0.2018977262302196e-06, 0.1464541863493966e-06,
                  0.7784249118997964e-01, 0.3245075353396018e+00, 0.7494013383880406e-02,
                  0.1622293157301561e-07, 0.1135863833257075e-07, 0.2230505975721359e-02,
                  0.2087162882798630e-03, 0.1396921016840158e-04, 0.8964884856898295e-02,
                  0.4352846369330103e-17, 0.6899219696263405e-02, 0.1007803037365946e-03,
                  0.1772146513969984e-05, 0.5682943292316392e-04),
                 _TESTSET + "POLLU"),
)}
