"""Checks on the Butcher tableaus: consistency, FSAL, and the order conditions.

The order conditions are checked from first principles: every rooted tree τ up to order 9
is generated, and the weights must satisfy ``Σ_i b_i Φ_i(τ) = 1/γ(τ)`` for every tree of
order ``ρ(τ) <= order`` (Butcher; Hairer, Nørsett & Wanner I, §II.2), where the elementary
weight ``Φ(τ)`` and the density ``γ(τ)`` are computed recursively from the subtrees.

All coefficients are stored as correctly rounded doubles (rationals, or decimals given
to 30 digits), so the conditions hold up to rounding in the float evaluation of Φ; one
tolerance of 1e-12 serves every tableau. The Dormand–Prince 8(7) coefficients are
rational approximations (to about 1e-18) of irrational numbers, still far inside it.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest

from odeflow.tableaus import TABLEAUS, ButcherTableau

# A rooted tree is the sorted tuple of its root's subtrees; the single node is ``()``.
Tree = tuple

MAX_TREE_ORDER = 9
ORDER_TOL = 1e-12
# A violated condition must be violated clearly, not by rounding.
VIOLATION_MIN = 1e-6
FSAL_EXPECTED = {"bosh3", "dopri5", "tsit5"}
THETAS = (0.1, 0.25, 0.5, 0.6, 0.75, 0.9, 1.0)  # > 4 points: pins a quartic in θ exactly


def _canonical(children) -> Tree:
    return tuple(sorted(children))


def _add_leaf_everywhere(tree: Tree):
    """Every tree obtained from ``tree`` by attaching one new leaf to one of its nodes."""
    yield _canonical(tree + ((),))
    for i, child in enumerate(tree):
        for grown in _add_leaf_everywhere(child):
            yield _canonical(tree[:i] + (grown,) + tree[i + 1 :])


@cache
def trees_of_order(n: int) -> tuple[Tree, ...]:
    """All rooted trees with ``n`` nodes (each tree of order n minus a leaf has order n - 1)."""
    if n == 1:
        return ((),)
    grown = {g for t in trees_of_order(n - 1) for g in _add_leaf_everywhere(t)}
    return tuple(sorted(grown))


def order_of(tree: Tree) -> int:
    return 1 + sum(order_of(child) for child in tree)


def density(tree: Tree) -> int:
    """γ(τ) = ρ(τ) Π γ(τ_k) over the subtrees τ_k of the root."""
    return order_of(tree) * math.prod(density(child) for child in tree)


def _coupling_matrix(tab: ButcherTableau) -> np.ndarray:
    s = tab.stages
    a = np.zeros((s, s))
    for i, row in enumerate(tab.a):
        a[i, :i] = row
    return a


def elementary_weights(tab: ButcherTableau, max_order: int) -> dict[Tree, np.ndarray]:
    """Φ(τ) for every tree up to ``max_order``: Φ(•) = 1, Φ([τ_1..τ_m]) = Π_k A Φ(τ_k)."""
    a = _coupling_matrix(tab)
    phi: dict[Tree, np.ndarray] = {}
    for n in range(1, max_order + 1):
        for tree in trees_of_order(n):
            value = np.ones(tab.stages)
            for child in tree:
                value = value * (a @ phi[child])  # children have lower order: already known
            phi[tree] = value
    return phi


def order_residuals(weights, phi: dict[Tree, np.ndarray], n: int) -> np.ndarray:
    """|Σ_i w_i Φ_i(τ) - 1/γ(τ)| over the trees of order ``n``."""
    w = np.asarray(weights, dtype=float)
    return np.array([abs(w @ phi[t] - 1.0 / density(t)) for t in trees_of_order(n)])


PARAMS = [pytest.param(tab, id=name) for name, tab in TABLEAUS.items()]


def test_tree_counts_match_known_sequence():
    # Number of rooted trees with n nodes (OEIS A000081).
    counts = [len(trees_of_order(n)) for n in range(1, MAX_TREE_ORDER + 1)]
    assert counts == [1, 1, 2, 4, 9, 20, 48, 115, 286]
    assert density(((), ())) == 3 and density((((),),)) == 6  # [•, •] and [[•]]
    assert density(((), ((),))) == 8 and density(((((),),),)) == 24


def test_registry_has_the_expected_methods():
    assert {"tsit5", "dopri8", "dopri5", "bosh3", "rk4", "euler"} <= set(TABLEAUS)
    for name, tab in TABLEAUS.items():
        assert tab.name == name


@pytest.mark.parametrize("tab", PARAMS)
def test_tableau(tab: ButcherTableau):
    s = tab.stages
    # Consistency: row sums are the nodes, weights sum to one, error weights to zero.
    assert len(tab.a) == len(tab.b) == s and tab.c[0] == 0
    for i, row in enumerate(tab.a):
        assert len(row) == i
        assert sum(row) == pytest.approx(tab.c[i], abs=1e-14)
    assert sum(tab.b) == pytest.approx(1.0, abs=1e-14)
    if tab.b_err is not None:
        assert sum(tab.b_err) == pytest.approx(0.0, abs=1e-14)

    # FSAL detection.
    assert tab.fsal == (tab.name in FSAL_EXPECTED)
    if tab.fsal:
        assert tab.c[-1] == 1 and tab.b[-1] == 0
        np.testing.assert_allclose(tab.a[-1], tab.b[:-1], rtol=0, atol=1e-15)

    phi = elementary_weights(tab, MAX_TREE_ORDER)

    # The propagated solution has exactly the claimed order.
    for n in range(1, tab.order + 1):
        assert order_residuals(tab.b, phi, n).max() < ORDER_TOL, f"order condition {n} fails"
    if tab.order < MAX_TREE_ORDER:
        assert order_residuals(tab.b, phi, tab.order + 1).max() > VIOLATION_MIN

    # The embedded solution b_hat = b - b_err has exactly the claimed error order.
    if tab.b_err is not None:
        assert tab.error_order is not None and tab.error_order < tab.order
        b_hat = np.subtract(tab.b, tab.b_err)
        for n in range(1, tab.error_order + 1):
            assert order_residuals(b_hat, phi, n).max() < ORDER_TOL, f"b_hat fails order {n}"
        assert order_residuals(b_hat, phi, tab.error_order + 1).max() > VIOLATION_MIN

    # Dense output: ends at b, reproduces the step, and has order 4 uniformly in θ.
    if tab.dense is not None:
        np.testing.assert_allclose(tab.dense_weights(1.0), tab.b, rtol=0, atol=1e-13)
        assert tab.dense_weights(0.0) == [0.0] * s
        for theta in THETAS:
            w = tab.dense_weights(theta)
            assert sum(w) == pytest.approx(theta, abs=1e-13)
            for n in range(1, 5):
                target = np.array([theta**n / density(t) for t in trees_of_order(n)])
                got = np.array([np.dot(w, phi[t]) for t in trees_of_order(n)])
                np.testing.assert_allclose(got, target, rtol=0, atol=ORDER_TOL)


def _logistic(y: float) -> float:
    return y * (1.0 - y)


def _logistic_exact(y0: float, t: float) -> float:
    return 1.0 / (1.0 + (1.0 / y0 - 1.0) * math.exp(-t))


def _one_step_dense(tab: ButcherTableau, y0: float, h: float, theta: float) -> float:
    k: list[float] = []
    for i in range(tab.stages):
        k.append(_logistic(y0 + h * sum(aij * kj for aij, kj in zip(tab.a[i], k, strict=True))))
    return y0 + h * sum(w * ki for w, ki in zip(tab.dense_weights(theta), k, strict=True))


@pytest.mark.parametrize("tab", [p for p in PARAMS if p.values[0].dense is not None])
def test_dense_output_local_error_is_fifth_order(tab: ButcherTableau):
    # An order-4 interpolant has local error O(h^5) at interior points: halving h divides
    # the error by about 32 on a nonlinear problem (errors stay far above rounding here).
    y0 = 0.2
    for theta in (0.37, 0.8):
        errors = [
            abs(_one_step_dense(tab, y0, h, theta) - _logistic_exact(y0, theta * h))
            for h in (0.2, 0.1, 0.05)
        ]
        rates = [math.log2(e0 / e1) for e0, e1 in zip(errors, errors[1:], strict=False)]
        assert min(rates) > 4.6, (theta, rates)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (dict(c=(0.0, 0.5), a=((), (0.4,)), b=(0.5, 0.5), order=1), "row sum"),
        (dict(c=(0.0, 0.5), a=((), (0.5,)), b=(0.5, 0.6), order=1), "sum(b)"),
        (
            dict(c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5), order=2,
                 b_err=(0.5, -0.4), error_order=1),
            "sum(b_err)",
        ),
        (
            dict(c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5), order=2,
                 dense=((0.5,), (0.25,))),
            "dense output",
        ),
    ],
)
def test_inconsistent_tableau_raises(kwargs, fragment):
    with pytest.raises(ValueError, match="broken_method") as info:
        ButcherTableau(name="broken_method", **kwargs)
    assert fragment in str(info.value)
