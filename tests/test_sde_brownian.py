"""Brownian motions of odeflow.sde: distribution, additivity, order independence, memory."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from odeflow.sde import (
    BrownianInterval,
    BrownianPath,
    BrownianTree,
    ReverseBrownian,
    brownian_interval_like,
)

stats = pytest.importorskip("scipy.stats")

B = 4000
DT64 = torch.float64


def _bm(**kw):
    kw.setdefault("size", (B,))
    kw.setdefault("dtype", DT64)
    kw.setdefault("entropy", 11)
    return BrownianInterval(0.0, 2.0, **kw)


@pytest.mark.parametrize("dt", [None, 0.01])
@pytest.mark.parametrize("levy", ["none", "space-time"])
def test_increments_and_bridge_midpoints_are_normal(dt, levy):
    bm = _bm(dt=dt, levy_area_approximation=levy)
    ta, tb = 0.3, 1.1234567
    w = bm(ta, tb)
    assert stats.kstest((w / math.sqrt(tb - ta)).numpy(), "norm").pvalue > 1e-3
    # The bridge midpoint given the whole increment: W(m) - (W(ta) + W(tb))/2 ~ N(0, h/4).
    tm = 0.5 * (ta + tb)
    bridge = bm(ta, tm) - 0.5 * w
    assert stats.kstest((bridge / math.sqrt((tb - ta) / 4)).numpy(), "norm").pvalue > 1e-3
    assert abs(torch.corrcoef(torch.stack([bridge, w]))[0, 1]) < 4 / math.sqrt(B)


def test_space_time_levy_area_is_normal_and_independent_of_the_increment():
    bm = _bm(levy_area_approximation="space-time", dt=0.1)
    ta, tb = 0.25, 0.8
    h = tb - ta
    W, U = bm(ta, tb, return_U=True)
    H = U / h - 0.5 * W
    assert stats.kstest((H / math.sqrt(h / 12)).numpy(), "norm").pvalue > 1e-3
    assert abs(torch.corrcoef(torch.stack([H, W]))[0, 1]) < 4 / math.sqrt(B)


def test_non_overlapping_increments_are_uncorrelated():
    bm = _bm(dt=0.05)
    pieces = [bm(a, b) for a, b in ((0.0, 0.1), (0.1, 0.37), (0.37, 0.4), (1.0, 2.0))]
    corr = torch.corrcoef(torch.stack(pieces))
    off = corr - torch.diag(torch.diag(corr))
    assert off.abs().max() < 4.5 / math.sqrt(B)


@pytest.mark.parametrize("levy", ["none", "space-time"])
def test_additivity(levy):
    bm = _bm(size=(64,), levy_area_approximation=levy, dt=0.1)
    a, b, c = 0.1234, 0.77, 1.9
    if levy == "none":
        torch.testing.assert_close(bm(a, c), bm(a, b) + bm(b, c), rtol=0, atol=1e-12)
        return
    Wac, Uac = bm(a, c, return_U=True)
    Wab, Uab = bm(a, b, return_U=True)
    Wbc, Ubc = bm(b, c, return_U=True)
    torch.testing.assert_close(Wac, Wab + Wbc, rtol=0, atol=1e-12)
    # Query times are resolved to 2^-32 of a cell, so U adds up to ~1e-11.
    torch.testing.assert_close(Uac, Uab + Ubc + (c - b) * Wab, rtol=0, atol=1e-9)


def test_same_entropy_same_values_in_any_query_order():
    queries = [(0.0, 0.5), (0.5, 0.51), (1.3, 1.7), (0.2, 1.9), (0.05, 0.06)]
    first = _bm(size=(3, 2), levy_area_approximation="foster", dt=0.01)
    ref = [first(a, b, return_U=True, return_A=True) for a, b in queries]
    second = _bm(size=(3, 2), levy_area_approximation="foster", dt=0.01)
    for a in torch.linspace(0, 2, 57).tolist():        # unrelated queries first
        second(0.0, a)
    for k in reversed(range(len(queries))):
        got = second(*queries[k], return_U=True, return_A=True)
        for x, y in zip(got, ref[k]):
            assert torch.equal(x, y)
    other = _bm(size=(3, 2), levy_area_approximation="foster", dt=0.01, entropy=12)
    assert not torch.equal(other(0.0, 0.5), ref[0][0])


def test_cache_is_bounded():
    bm = _bm(size=(2, 3), cache_size=45, levy_area_approximation="space-time")
    for k in range(400):   # each query adds ~20 tree nodes: 8000 without eviction
        bm(k * 2 / 400, (k + 1) * 2 / 400, return_U=True)
    assert bm.n_cached <= bm._capacity < 200


@pytest.mark.parametrize("kind", ["davie", "foster"])
def test_levy_area_shape_antisymmetry_and_variance(kind):
    bm = _bm(size=(B, 3), levy_area_approximation=kind)
    h = 0.5
    W, A = bm(0.0, h, return_A=True)
    assert A.shape == (B, 3, 3)
    torch.testing.assert_close(A, -A.transpose(-1, -2))
    # The exact Lévy area has variance h²/4 (both approximations match it).
    assert abs(A[:, 0, 1].var().item() / (h * h / 4) - 1) < 0.1


def test_float32_and_defaults():
    bm = BrownianInterval(size=(5, 2), entropy=0)
    assert bm(0.0, 0.5).dtype == torch.float32 and bm.shape == (5, 2)
    with pytest.raises(ValueError, match="levy_area_approximation"):
        BrownianInterval(size=(2,), levy_area_approximation="bad")
    with pytest.raises(ValueError, match="t0 <= t1"):
        BrownianInterval(1.0, 0.0, size=(2,))
    with pytest.raises(RuntimeError, match="ta <= tb"):
        bm(0.6, 0.5)


def test_path_tree_reverse_and_like():
    w0 = torch.zeros(B, dtype=DT64)
    for bm in (BrownianPath(0.0, w0), BrownianTree(0.0, w0, t1=1.0, entropy=3)):
        w = bm(0.5)
        assert stats.kstest((w / math.sqrt(0.5)).numpy(), "norm").pvalue > 1e-3
        torch.testing.assert_close(bm(0.25, 0.5), bm(0.5) - bm(0.25), rtol=0, atol=1e-12)
    base = _bm(size=(2,))
    rev = ReverseBrownian(base)
    assert torch.equal(rev(-1.0, -0.5), base(0.5, 1.0))
    like = brownian_interval_like(torch.zeros(3, 4, dtype=DT64), t0=0.0, t1=2.0)
    assert like.shape == (3, 4) and like.dtype == DT64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.equal(base(5.0, 6.0), torch.zeros(2, dtype=DT64))   # clamped to [t0, t1]


@pytest.mark.parametrize("dtype", [torch.float32, DT64])
def test_grid_cells_are_independent_with_the_right_law_in_any_order(dtype):
    # dt = 0.1 on [0, 2]: 20 cells drawn in blocks; the walk forwards and the walk
    # backwards (as an adjoint replays it) must see the same increments, bit for bit.
    kw = dict(size=(B,), dtype=dtype, dt=0.1, levy_area_approximation="space-time")
    fwd = _bm(**kw)
    cells = [fwd(k / 10, (k + 1) / 10, return_U=True) for k in range(20)]
    bwd = _bm(**kw)
    for k in reversed(range(20)):
        W, U = bwd(k / 10, (k + 1) / 10, return_U=True)
        assert torch.equal(W, cells[k][0]) and torch.equal(U, cells[k][1])
    W = torch.stack([c[0] for c in cells]).double()
    H = torch.stack([c[1] for c in cells]).double() / 0.1 - 0.5 * W
    for k in (0, 7, 8, 19):   # first, last of a block, first of the next, the end
        assert stats.kstest((W[k] / math.sqrt(0.1)).numpy(), "norm").pvalue > 1e-3
        assert stats.kstest((H[k] / math.sqrt(0.1 / 12)).numpy(), "norm").pvalue > 1e-3
    corr = torch.corrcoef(torch.cat([W, H]))
    off = corr - torch.diag(torch.diag(corr))
    assert off.abs().max() < 5 / math.sqrt(B)
    # A query over several cells is their sum (W) and their combination (U).
    W07, U07 = fwd(0.0, 0.7, return_U=True)
    torch.testing.assert_close(W07.double(), W[:7].sum(0), rtol=0,
                               atol=1e-12 if dtype == DT64 else 1e-5)
    U_sum = sum(cells[k][1].double() + 0.1 * W[:k].sum(0) for k in range(7))
    torch.testing.assert_close(U07.double(), U_sum, rtol=0, atol=1e-12 if dtype == DT64 else 1e-5)
