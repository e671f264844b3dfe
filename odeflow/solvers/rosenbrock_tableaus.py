"""Coefficients of the Rosenbrock methods, in the transformed form of Hairer & Wanner.

A step of an ``s``-stage Rosenbrock method with ``M = I - hγ J`` solves, for
``i = 1..s``, ::

    Y_i = y + Σ_{j<i} a_ij u_j
    M u_i = hγ ( f(t + c_i h, Y_i) + Σ_{j<i} (C_ij / h) u_j + h d_i ∂f/∂t )

and takes ``y_new = y + Σ_i m_i u_i`` (E. Hairer & G. Wanner, *Solving Ordinary
Differential Equations II*, 2nd ed., Springer 1996, Section IV.7, eq. (7.25)). The methods
here are stiffly accurate: ``y_new`` is the last stage's ``Y_s + u_s``, the embedded
solution is ``Y_s`` and the error estimate is ``u_s``. Their dense output is
``y(θ) = (1-θ) y + θ (y_new + (1-θ)(k_1 + θ k_2 + θ² k_3))`` with ``k_r = Σ_j H_rj u_j``.

The coefficients are the published ones (quoted to the digits the papers give).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RosenbrockTableau", "ROSENBROCK_TABLEAUS"]


@dataclass(frozen=True)
class RosenbrockTableau:
    """A Rosenbrock method in the transformed form (see the module docstring)."""

    name: str
    order: int
    error_order: int
    gamma: float
    a: tuple[tuple[float, ...], ...]  # a[i] has i entries (stage inputs)
    C: tuple[tuple[float, ...], ...]  # C[i] has i entries
    c: tuple[float, ...]  # stage times
    d: tuple[float, ...]  # ∂f/∂t weights
    m: tuple[float, ...]  # y_new = y + Σ m_i u_i
    H: tuple[tuple[float, ...], ...]  # dense output rows

    @property
    def stages(self) -> int:
        return len(self.c)


def _stiffly_accurate(name: str, order: int, gamma: float, a_inner: list[list[float]],
                      C: list[list[float]], c_inner: list[float], d_inner: list[float],
                      H: list[list[float]], n_tail: int) -> RosenbrockTableau:
    """Build the tableau of a stiffly accurate method whose last ``n_tail + 1`` stages sit at
    ``c = 1`` and each add the previous increment: ``Y_{k+1} = Y_k + u_k``."""
    a = [list(r) for r in a_inner]
    a += [a[-1] + [1.0] * (k + 1) for k in range(n_tail)]
    s = len(a)
    c = list(c_inner) + [1.0] * (s - len(c_inner))
    d = list(d_inner) + [0.0] * (s - len(d_inner))
    m = a[-1] + [1.0]
    H_full = tuple(tuple(list(r) + [0.0] * (s - len(r))) for r in H)
    return RosenbrockTableau(name, order, order - 1, gamma, tuple(tuple(r) for r in a),
                             tuple(tuple(r) for r in C), tuple(c), tuple(d), tuple(m), H_full)


# Rodas4: Hairer & Wanner, Solving ODEs II (1996), Section VI.4, Table 4.1 (the code
# RODAS); 6 stages, order 4 with an embedded order-3 solution, L-stable, stiffly accurate.
RODAS4 = _stiffly_accurate(
    "rodas4", 4, 0.25,
    a_inner=[[], [1.544], [0.9466785280815826, 0.2557011698983284],
             [3.314825187068521, 2.896124015972201, 0.9986419139977817],
             [1.221224509226641, 6.019134481288629, 12.53708332932087, -0.6878860361058950]],
    C=[[], [-5.6688],
       [-2.430093356833875, -0.2063599157091915],
       [-0.1073529058151375, -9.594562251023355, -20.47028614809616],
       [7.496443313967647, -10.24680431464352, -33.99990352819905, 11.70890893206160],
       [8.083246795921522, -7.981132988064893, -31.52159432874371, 16.31930543123136,
        -6.058818238834054]],
    c_inner=[0.0, 0.386, 0.21, 0.63],
    d_inner=[0.25, -0.1043, 0.1035, -0.0362],
    H=[[10.12623508344586, -7.487995877610167, -34.80091861555747, -7.992771707568823,
        1.025137723295662],
       [-0.6762803392801253, 6.087714651680015, 16.43084320892478, 24.76722511418386,
        -6.594389125716872],
       []],
    n_tail=1,
)

# Rodas5P: G. Steinebach, "Construction of Rosenbrock–Wanner method Rodas5P and numerical
# benchmarks within the Julia Differential Equations package", BIT Numer. Math. 63, 27
# (2023); 8 stages, order 5 with an embedded order-4 solution, stiffly accurate, with a
# dense output of order 4.
RODAS5P = _stiffly_accurate(
    "rodas5p", 5, 0.21193756319429014,
    a_inner=[[], [3.0], [2.849394379747939, 0.45842242204463923],
             [-6.954028509809101, 2.489845061869568, -10.358996098473584],
             [2.8029986275628964, 0.5072464736228206, -0.3988312541770524,
              -0.04721187230404641],
             [-7.502846399306121, 2.561846144803919, -11.627539656261098,
              -0.18268767659942256, 0.030198172008377946]],
    C=[[], [-14.155112264123755],
       [-17.97296035885952, -2.859693295451294],
       [147.12150275711716, -1.41221402718213, 71.68940251302358],
       [165.43517024871676, -0.4592823456491126, 42.90938336958603, -5.961986721573306],
       [24.854864614690072, -3.0009227002832186, 47.4931110020768, 5.5814197821558125,
        -0.6610691825249471],
       [30.91273214028599, -3.1208243349937974, 77.79954646070892, 34.28646028294783,
        -19.097331116725623, -28.087943162872662],
       [37.80277123390563, -3.2571969029072276, 112.26918849496327, 66.9347231244047,
        -40.06618937091002, -54.66780262877968, -9.48861652309627]],
    c_inner=[0.0, 0.6358126895828704, 0.4095798393397535, 0.9769306725060716,
             0.4288403609558664],
    d_inner=[0.21193756319429014, -0.42387512638858027, -0.3384627126235924,
             1.8046452872882734, 2.325825639765069],
    H=[[25.948786856663858, -2.5579724845846235, 10.433815404888879, -2.3679251022685204,
        0.524948541321073, 1.1241088310450404, 0.4272876194431874, -0.17202221070155493],
       [-9.91568850695171, -0.9689944594115154, 3.0438037242978453, -24.495224566215796,
        20.176138334709044, 15.98066361424651, -6.789040303419874, -6.710236069923372],
       [11.419903575922262, 2.8879645146136994, 72.92137995996029, 80.12511834622643,
        -52.072871366152654, -59.78993625266729, -0.15582684282751913, 4.883087185713722]],
    n_tail=2,
)

ROSENBROCK_TABLEAUS: dict[str, RosenbrockTableau] = {"rodas4": RODAS4, "rodas5p": RODAS5P}
