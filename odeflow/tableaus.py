"""Butcher tableaus of the explicit Runge–Kutta methods, as plain data.

Each method is one frozen :class:`ButcherTableau`; the generic stepper in
``solvers/explicit_rk.py`` drives all of them, so adding a method means adding data here.
``__post_init__`` checks the consistency conditions (row sums equal the nodes, the
weights sum to one, the error weights to zero, the dense output ends at ``b``) so that a
mistyped coefficient fails at import rather than as a slow loss of accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import torch

__all__ = ["ButcherTableau", "TABLEAUS"]

CHECK_TOL = 1e-13
_DENSE_COEFS: dict = {}  # ButcherTableau._horner's coefficients, by tableau and theta's kind


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge–Kutta method in Butcher's notation.

    Args:
        name: the method's name as ``odeint(method=...)`` spells it.
        c: nodes, one per stage (``c[0] == 0``).
        a: strictly lower-triangular coupling; ``a[i]`` has ``i`` entries (``a[0] == ()``).
        b: weights of the propagated solution, one per stage.
        order: order of the propagated solution.
        b_err: ``b - b_hat``, weights of the embedded error estimate (sum zero), or
            ``None`` for a fixed-grid method.
        error_order: order of the embedded solution ``b_hat``; the step-size controller
            uses ``1 / (error_order + 1)`` as its exponent.
        dense: coefficients of the dense output ``y(t + θh) = y + h Σ_i b_i(θ) k_i`` with
            ``b_i(θ) = Σ_p dense[i][p] θ^(p+1)``; ``None`` means cubic Hermite.
        reference: where the coefficients come from.

    Derived: ``fsal`` is true when the last stage is evaluated at the new solution
    (``c[-1] == 1`` and ``a[-1] == b[:-1]``), so it is reused as the next step's first stage.
    """

    name: str
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int
    b_err: tuple[float, ...] | None = None
    error_order: int | None = None
    dense: tuple[tuple[float, ...], ...] | None = None
    reference: str = ""
    fsal: bool = field(init=False)

    def __post_init__(self) -> None:
        s = len(self.c)
        check_tableau(self.name, self.c, self.a, self.b, 0.0, self.dense)
        if self.b_err is not None:
            require(len(self.b_err) == s, f"{self.name}: b_err needs {s} entries")
            require(abs(sum(self.b_err)) < CHECK_TOL, f"{self.name}: sum(b_err) != 0")
            require(self.error_order is not None, f"{self.name}: error_order is required")
        last_is_b = all(abs(x - y) < CHECK_TOL for x, y in zip(self.a[-1], self.b[:-1]))
        fsal = s > 1 and self.c[-1] == 1 and last_is_b and self.b[-1] == 0
        object.__setattr__(self, "fsal", fsal)

    @property
    def stages(self) -> int:
        """Number of stages (function evaluations per step, counting the reused first one)."""
        return len(self.c)

    def _horner(self, theta: Any, derivative: bool) -> Any:
        """``b_i(θ)`` (``derivative``: ``b_i'(θ)``) by Horner's rule, from the coefficient of
        the highest power of ``θ`` down (cached): a list for a float ``theta``; for a tensor
        an ``(s, *theta.shape)`` tensor, by one step for all stages at a time on ``(s, 1,
        ...)`` columns (the shorter polynomials led by zeros), with the float form's roundings."""
        lanes = isinstance(theta, torch.Tensor)
        key = ((self.name, derivative, theta.dtype, theta.device, theta.ndim) if lanes
               else (self.name, derivative))
        rows = _DENSE_COEFS.get(key)
        if rows is None:
            assert self.dense is not None
            rows = [tuple((p + 1) * coef if derivative else coef
                          for p, coef in enumerate(poly))[::-1] for poly in self.dense]
            if lanes:
                degree = max(map(len, rows))
                rows = [torch.tensor([[0.0] * (degree - len(r)) + list(r) for r in rows],
                                     dtype=theta.dtype, device=theta.device).T.reshape(
                    degree, len(rows), *([1] * theta.ndim)).unbind(0)]
            _DENSE_COEFS[key] = rows
        out = []
        for coefs in rows:
            acc = coefs[0]
            for coef in coefs[1:]:
                acc = acc * theta + coef
            out.append(acc if derivative else acc * theta)  # b_i(θ) = θ Σ_p poly[p] θ^p
        return out[0] if lanes else out

    def dense_weights(self, theta: Any) -> Any:
        """The weights ``b_i(θ)`` of the dense output at fraction ``theta`` of the step: a list
        for a float, an ``(s, *theta.shape)`` tensor for a tensor."""
        return self._horner(theta, False)

    def dense_derivative_weights(self, theta: Any) -> Any:
        """``b_i'(θ)``, the weights of the dense output's derivative: a list for a float, an
        ``(s, *theta.shape)`` tensor for a tensor."""
        return self._horner(theta, True)


def require(condition: bool, message: str) -> None:
    """A tableau's consistency check: ``ValueError`` with ``message`` if it fails."""
    if not condition:
        raise ValueError(f"inconsistent Butcher tableau: {message}")


def check_tableau(name: str, c: Sequence[float], a: Sequence[Sequence[float]],
                  b: Sequence[float], diag: float, dense: Sequence[Sequence[float]] | None
                  ) -> None:
    """The checks every tableau passes (module docstring): ``a[i]`` has ``i`` entries and,
    with ``diag`` on the diagonal below the first row (an ESDIRK method's ``γ``), row ``i``
    of ``A`` sums to ``c[i]``; ``Σ b = 1``; each ``dense`` polynomial ends at its ``b``."""
    s = len(c)
    require(len(a) == s, f"{name}: a has {len(a)} rows, c has {s} nodes")
    require(len(b) == s, f"{name}: b has {len(b)} weights for {s} stages")
    require(c[0] == 0, f"{name}: c[0] must be 0")
    for i, row in enumerate(a):
        require(len(row) == i, f"{name}: a[{i}] must have {i} entries, has {len(row)}")
        total = sum(row) + (diag if i else 0.0)
        require(abs(total - c[i]) < CHECK_TOL,
                f"{name}: row sum of A's row {i} = {total!r} differs from c[{i}] = {c[i]!r}")
    require(abs(sum(b) - 1) < CHECK_TOL, f"{name}: sum(b) = {sum(b)!r} != 1")
    if dense:
        require(len(dense) == s, f"{name}: dense needs one polynomial per stage")
        for i, poly in enumerate(dense):
            require(abs(sum(poly) - b[i]) < CHECK_TOL,
                    f"{name}: dense output b_{i}(1) = {sum(poly)!r} differs from b[{i}]")


def _f(*values: int | str | Fraction) -> tuple[float, ...]:
    return tuple(float(Fraction(v)) for v in values)


def _minus(x: Sequence[float | int | str], y: Sequence[float | int | str]) -> tuple[float, ...]:
    """``x - y`` computed exactly on the rationals, then rounded once to floats (for floats
    the same as ``p - q``: IEEE subtraction is correctly rounded too)."""
    return tuple(float(Fraction(p) - Fraction(q)) for p, q in zip(x, y, strict=True))


def _hairer_dense(b: tuple[float, ...], d: tuple[float, ...]) -> tuple[tuple[float, ...], ...]:
    """Dense-output polynomials from Hairer's continuous extension of an FSAL 5(4) pair.

    Hairer, Nørsett & Wanner write it as
    ``y(θ) = y0 + θ r2 + θ(1-θ) r3 + θ²(1-θ) r4 + θ²(1-θ)² r5`` with ``r2 = h Σ b_i k_i``,
    ``r3 = h k_1 - r2``, ``r4 = 2 r2 - h k_1 - h k_s`` and ``r5 = h Σ d_i k_i``; expanding in
    powers of θ gives ``b_i(θ)`` for each stage.
    """
    s = len(b)
    e1 = tuple(1.0 if i == 0 else 0.0 for i in range(s))
    es = tuple(1.0 if i == s - 1 else 0.0 for i in range(s))
    r3 = _minus(e1, b)
    r4 = tuple(2 * bi - x - y for bi, x, y in zip(b, e1, es, strict=True))
    # θ b + (θ - θ²) r3 + (θ² - θ³) r4 + (θ² - 2θ³ + θ⁴) r5, as coefficients of θ^1..θ^4.
    return tuple((b[i] + r3[i], -r3[i] + r4[i] + d[i], -r4[i] - 2 * d[i], d[i])
                 for i in range(s))


EULER = ButcherTableau(
    name="euler", c=(0.0,), a=((),), b=(1.0,), order=1,
    reference="Euler (1768); Hairer, Nørsett & Wanner, Solving ODEs I, §II.1.",
)

MIDPOINT = ButcherTableau(
    name="midpoint", c=_f(0, "1/2"), a=((), _f("1/2")), b=_f(0, 1), order=2,
    reference="Explicit midpoint rule (Runge 1895); Hairer, Nørsett & Wanner I, §II.1.",
)

HEUN2 = ButcherTableau(
    name="heun2", c=_f(0, 1), a=((), _f(1)), b=_f("1/2", "1/2"), order=2,
    reference="Heun's method (explicit trapezoid); Hairer, Nørsett & Wanner I, §II.1.",
)

HEUN3 = ButcherTableau(
    name="heun3", c=_f(0, "1/3", "2/3"), a=((), _f("1/3"), _f(0, "2/3")),
    b=_f("1/4", 0, "3/4"), order=3,
    reference="Heun (1900), third-order method; Hairer, Nørsett & Wanner I, Table II.1.1.",
)

RK4 = ButcherTableau(
    name="rk4", c=_f(0, "1/3", "2/3", 1),
    a=((), _f("1/3"), _f("-1/3", 1), _f(1, -1, 1)),
    b=_f("1/8", "3/8", "3/8", "1/8"), order=4,
    reference="Kutta's 3/8 rule (Kutta 1901); Hairer, Nørsett & Wanner I, Table II.1.2. "
    "torchdiffeq's 'rk4' uses this rule.",
)

RK4_CLASSIC = ButcherTableau(
    name="rk4_classic", c=_f(0, "1/2", "1/2", 1),
    a=((), _f("1/2"), _f(0, "1/2"), _f(0, 0, 1)),
    b=_f("1/6", "1/3", "1/3", "1/6"), order=4,
    reference="The classical Runge–Kutta method (Kutta 1901); Hairer, Nørsett & Wanner I, "
    "Table II.1.2.",
)

ADAPTIVE_HEUN = ButcherTableau(
    name="adaptive_heun", c=_f(0, 1), a=((), _f(1)), b=_f("1/2", "1/2"), order=2,
    b_err=_minus(_f("1/2", "1/2"), _f(1, 0)), error_order=1,
    reference="Heun–Euler 2(1) embedded pair; Hairer, Nørsett & Wanner I, §II.4.",
)

FEHLBERG2 = ButcherTableau(
    name="fehlberg2", c=_f(0, "1/2", 1),
    a=((), _f("1/2"), _f("1/256", "255/256")),
    b=_f("1/512", "255/256", "1/512"), order=2,
    b_err=_minus(_f("1/512", "255/256", "1/512"), _f("1/256", "255/256", 0)), error_order=1,
    reference="Fehlberg (1969), RKF 1(2), NASA TR R-315; the second-order solution is "
    "propagated, as in torchdiffeq's 'fehlberg2'.",
)

_BOSH3_B = _f("2/9", "1/3", "4/9", 0)
BOSH3 = ButcherTableau(
    name="bosh3", c=_f(0, "1/2", "3/4", 1),
    a=((), _f("1/2"), _f(0, "3/4"), _f("2/9", "1/3", "4/9")),
    b=_BOSH3_B, order=3,
    b_err=_minus(_BOSH3_B, _f("7/24", "1/4", "1/3", "1/8")), error_order=2,
    reference="Bogacki & Shampine (1989), 'A 3(2) pair of Runge–Kutta formulas', "
    "Appl. Math. Lett. 2(4):321–325.",
)

_DOPRI5_B = _f("35/384", 0, "500/1113", "125/192", "-2187/6784", "11/84", 0)
_DOPRI5_D = _f(
    "-12715105075/11282082432", 0, "87487479700/32700410799", "-10690763975/1880347072",
    "701980252875/199316789632", "-1453857185/822651844", "69997945/29380423",
)
DOPRI5 = ButcherTableau(
    name="dopri5", c=_f(0, "1/5", "3/10", "4/5", "8/9", 1, 1),
    a=(
        (),
        _f("1/5"),
        _f("3/40", "9/40"),
        _f("44/45", "-56/15", "32/9"),
        _f("19372/6561", "-25360/2187", "64448/6561", "-212/729"),
        _f("9017/3168", "-355/33", "46732/5247", "49/176", "-5103/18656"),
        _DOPRI5_B[:6],
    ),
    b=_DOPRI5_B, order=5, error_order=4, dense=_hairer_dense(_DOPRI5_B, _DOPRI5_D),
    b_err=_minus(_DOPRI5_B, _f("5179/57600", 0, "7571/16695", "393/640", "-92097/339200",
                               "187/2100", "1/40")),
    reference="Dormand & Prince (1980), 'A family of embedded Runge–Kutta formulae', "
    "J. Comp. Appl. Math. 6(1):19–26; dense output of order 4 from Hairer, Nørsett & "
    "Wanner, Solving ODEs I, §II.6 (continuous extension of DOPRI5).",
)


# Tsitouras 5(4). Apart from a few chosen values (c2 = 0.161, c3 = 0.327, c4 = 0.9,
# b2 = 0.01) the coefficients are irrational solutions of the order conditions, published as
# decimals; below they are rounded to 30 significant digits, far beyond double precision, so each
# float is correctly rounded. The paper's second weight row is the difference b_hat - b,
# not b_hat, and its last entry has the wrong sign (SUNDIALS PR #850, OrdinaryDiffEq.jl
# issue #1654): Σ b_hat = 1 and the order-4 conditions force b_hat[6] = +1/66.
_TSIT5_C5 = "0.980025540904509685729810286287"
_TSIT5_B = (
    "0.0964607668180652295181673131651", "0.01", "0.479889650414499574775249532291",
    "1.37900857410374189319227482186", "-3.29006951543608067990104758571",
    "2.3247105240997739824153559184", 0,
)
_TSIT5_B_HAT = (
    "0.0946807557658394580747887625576", "0.00918356554034325309677636393665",
    "0.487770528424761570785564259963", "1.23429756693047898565510967388",
    "-2.70771234998352545488110997506", "1.86662841817058703575371939957", "1/66",
)
# Dense output of order 4 (no extra stage): coefficients of θ, θ², θ³, θ⁴ in b_i(θ).
# In the published interpolant b_2(θ) has decimal coefficients, b_7(θ) = (5/2) θ²(θ - 1)(θ - 3/5)
# and b_6(θ) ∝ θ²(θ - 6/5)(θ - 2/3); given those, the other four polynomials are the unique
# solution of the continuous order conditions with b_i(1) = b_i. We recomputed them in 60-digit
# arithmetic: as doubles they equal the values OrdinaryDiffEq.jl carries, bit for bit, except
# its 0.13169999999999998 for 0.1317 (one ulp).
_TSIT5_DENSE = (
    (1, "-2.76370619727482586867298836303", "2.91325546182191265541864597872",
     "-1.05308849772902155722749030252"),
    (0, "0.1317", "-0.2234", "0.1017"),
    (0, "3.93029623689475151740929366946", "-5.94103387213150473571758920976",
     "2.49062728565125279308354507259"),
    (0, "-12.4110771669336770387304733967", "30.3381886302823216502300460809",
     "-16.5481028892449027183072978623"),
    (0, "37.5093134165110391789784391111", "-88.178904894766401077561068565",
     "47.3795219628192812186815818682"),
    (0, "-27.8965262891972877889842710208", "65.0918946747936715076299657152",
     "-34.870657861496609736230338776"),
    (0, "1.5", -4, "2.5"),
)
TSIT5 = ButcherTableau(
    name="tsit5", c=_f(0, "0.161", "0.327", "0.9", _TSIT5_C5, 1, 1),
    a=(
        (),
        _f("0.161"),
        _f("-0.00848065549235698854442687425023", "0.33548065549235698854442687425"),
        _f("2.89715305710549343213043259419", "-6.35944848997507484314815991238",
           "4.36229543286958141101772731819"),
        _f("5.32586482843925660442887792084", "-11.7488835640628278777471703398",
           "7.49553934288983620830460478456", "-0.0924950663617552492565020793321"),
        _f("5.86145544294642002865925148698", "-12.9209693178471092917061186818",
           "8.15936789857615864318040079454", "-0.0715849732814009972245305425258",
           "-0.0282690503940683829090030572127"),
        _f(*_TSIT5_B[:6]),
    ),
    b=_f(*_TSIT5_B), order=5,
    b_err=_minus(_TSIT5_B, _TSIT5_B_HAT), error_order=4,
    dense=tuple(_f(*poly) for poly in _TSIT5_DENSE),
    reference="Tsitouras (2011), 'Runge–Kutta pairs of order 5(4) satisfying only the first "
    "column simplifying assumption', Computers & Mathematics with Applications "
    "62(2):770–775; the pair and its order-4 continuous extension.",
)

# Prince & Dormand RK8(7)13M. The paper's coefficients are rational approximations
# (to about 1e-18) of irrational values, so the row sums and order conditions hold to
# that accuracy rather than exactly; well inside double precision.
_DOPRI8_B = (
    "14005451/335480064", 0, 0, 0, 0, "-59238493/1068277825", "181606767/758867731",
    "561292985/797845732", "-1041891430/1371343529", "760417239/1151165299",
    "118820643/751138087", "-528747749/2220607170", "1/4",
)
_DOPRI8_B_HAT = (
    "13451932/455176623", 0, 0, 0, 0, "-808719846/976000145", "1757004468/5645159321",
    "656045339/265891186", "-3867574721/1518517206", "465885868/322736535",
    "53011238/667516719", "2/45", 0,
)
DOPRI8 = ButcherTableau(
    name="dopri8", c=_f(0, "1/18", "1/12", "1/8", "5/16", "3/8", "59/400", "93/200",
                        "5490023248/9719169821", "13/20", "1201146811/1299019798", 1, 1),
    a=(
        (),
        _f("1/18"),
        _f("1/48", "1/16"),
        _f("1/32", 0, "3/32"),
        _f("5/16", 0, "-75/64", "75/64"),
        _f("3/80", 0, 0, "3/16", "3/20"),
        _f("29443841/614563906", 0, 0, "77736538/692538347", "-28693883/1125000000",
           "23124283/1800000000"),
        _f("16016141/946692911", 0, 0, "61564180/158732637", "22789713/633445777",
           "545815736/2771057229", "-180193667/1043307555"),
        _f("39632708/573591083", 0, 0, "-433636366/683701615", "-421739975/2616292301",
           "100302831/723423059", "790204164/839813087", "800635310/3783071287"),
        _f("246121993/1340847787", 0, 0, "-37695042795/15268766246",
           "-309121744/1061227803", "-12992083/490766935", "6005943493/2108947869",
           "393006217/1396673457", "123872331/1001029789"),
        _f("-1028468189/846180014", 0, 0, "8478235783/508512852", "1311729495/1432422823",
           "-10304129995/1701304382", "-48777925059/3047939560", "15336726248/1032824649",
           "-45442868181/3398467696", "3065993473/597172653"),
        _f("185892177/718116043", 0, 0, "-3185094517/667107341", "-477755414/1098053517",
           "-703635378/230739211", "5731566787/1027545527", "5232866602/850066563",
           "-4093664535/808688257", "3962137247/1805957418", "65686358/487910083"),
        _f("403863854/491063109", 0, 0, "-5068492393/434740067", "-411421997/543043805",
           "652783627/914296604", "11173962825/925320556", "-13158990841/6184727034",
           "3936647629/1978049680", "-160528059/685178525", "248638103/1413531060", 0),
    ),
    b=_f(*_DOPRI8_B), order=8,
    b_err=_minus(_DOPRI8_B, _DOPRI8_B_HAT), error_order=7,
    reference="Prince & Dormand (1981), 'High order embedded Runge–Kutta formulae', "
    "J. Comp. Appl. Math. 7(1):67–75, the RK8(7)13M pair (eighth order propagated), "
    "as torchdiffeq's 'dopri8' uses; no dense output of its own (cubic Hermite).",
)

TABLEAUS: dict[str, ButcherTableau] = {t.name: t for t in (
    EULER, MIDPOINT, HEUN2, HEUN3, RK4, RK4_CLASSIC,
    ADAPTIVE_HEUN, FEHLBERG2, BOSH3, DOPRI5, TSIT5, DOPRI8)}
