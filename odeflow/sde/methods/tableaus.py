"""Stochastic Runge–Kutta tableaus (Rößler 2010), as checked frozen data.

References:
    A. Rößler, "Runge–Kutta methods for the strong approximation of solutions of
    stochastic differential equations", SIAM J. Numer. Anal. 48(3), 2010: SRI2 (the
    SRI family of §5, strong order 1.5 for Itô SDEs with diagonal or scalar noise) and
    SRA1 (the SRA family of §6, strong order 1.5 for additive noise). The coefficients are
    the paper's; ``__post_init__`` checks the consistency conditions.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SRITableau", "SRATableau", "SRI2", "SRA1"]


def _close(a: float, b: float) -> bool:
    return abs(a - b) < 1e-12


@dataclass(frozen=True)
class SRITableau:
    """A strong order 1.5 SRI scheme: stages ``H0`` (drift) and ``H1`` (diffusion).

    ``H0_i = y + Σ_j A0_ij f(H0_j) h + Σ_j B0_ij g(H1_j) I10/h``,
    ``H1_i = y + Σ_j A1_ij f(H0_j) h + Σ_j B1_ij g(H1_j) √h``,
    ``y1 = y + Σ α_i f(H0_i) h + Σ (β1_i I1 + β2_i I11/√h + β3_i I10/h + β4_i I111/h) g(H1_i)``.
    """

    c0: tuple[float, ...]
    c1: tuple[float, ...]
    A0: tuple[tuple[float, ...], ...]
    A1: tuple[tuple[float, ...], ...]
    B0: tuple[tuple[float, ...], ...]
    B1: tuple[tuple[float, ...], ...]
    alpha: tuple[float, ...]
    beta1: tuple[float, ...]
    beta2: tuple[float, ...]
    beta3: tuple[float, ...]
    beta4: tuple[float, ...]

    def __post_init__(self) -> None:
        s = len(self.alpha)
        if not _close(sum(self.alpha), 1.0) or not _close(sum(self.beta1), 1.0):
            raise ValueError("need Σα = 1 and Σβ1 = 1 (consistency)")
        for name in ("beta2", "beta3", "beta4"):
            if not _close(sum(getattr(self, name)), 0.0):
                raise ValueError(f"need Σ{name} = 0")
        for c, A in ((self.c0, self.A0), (self.c1, self.A1)):
            for i in range(s):
                if not _close(sum(A[i]), c[i]):
                    raise ValueError(f"row {i} of a drift matrix does not sum to its node")


@dataclass(frozen=True)
class SRATableau:
    """A strong order 1.5 SRA scheme for additive noise (diffusion at the step start).

    ``H0_i = y + Σ_j A0_ij f(H0_j) h + Σ_j B0_ij g(t + c1_j h) I10/h``,
    ``y1 = y + Σ α_i f(H0_i) h + Σ (β1_i I1 + β2_i I10/h) g(t + c1_i h)``.
    """

    c0: tuple[float, ...]
    c1: tuple[float, ...]
    A0: tuple[tuple[float, ...], ...]
    B0: tuple[tuple[float, ...], ...]
    alpha: tuple[float, ...]
    beta1: tuple[float, ...]
    beta2: tuple[float, ...]

    def __post_init__(self) -> None:
        if not _close(sum(self.alpha), 1.0) or not _close(sum(self.beta1), 1.0):
            raise ValueError("need Σα = 1 and Σβ1 = 1 (consistency)")
        if not _close(sum(self.beta2), 0.0):
            raise ValueError("need Σβ2 = 0")
        for i, row in enumerate(self.A0):
            if not _close(sum(row), self.c0[i]):
                raise ValueError(f"row {i} of A0 does not sum to c0[{i}]")


SRI2 = SRITableau(
    c0=(0.0, 1.0, 0.5, 0.0), c1=(0.0, 0.25, 1.0, 0.25),
    A0=((), (1.0,), (0.25, 0.25), (0.0, 0.0, 0.0)),
    A1=((), (0.25,), (1.0, 0.0), (0.0, 0.0, 0.25)),
    B0=((), (0.0,), (1.0, 0.5), (0.0, 0.0, 0.0)),
    B1=((), (-0.5,), (1.0, 0.0), (2.0, -1.0, 0.5)),
    alpha=(1 / 6, 1 / 6, 2 / 3, 0.0),
    beta1=(-1.0, 4 / 3, 2 / 3, 0.0),
    beta2=(1.0, -4 / 3, 1 / 3, 0.0),
    beta3=(2.0, -4 / 3, -2 / 3, 0.0),
    beta4=(-2.0, 5 / 3, -2 / 3, 1.0),
)

SRA1 = SRATableau(
    c0=(0.0, 0.75), c1=(1.0, 0.0),
    A0=((), (0.75,)), B0=((), (1.5,)),
    alpha=(1 / 3, 2 / 3), beta1=(1.0, 0.0), beta2=(-1.0, 1.0),
)
