"""The stiff benchmark's problems and harness: NumPy and torch right-hand sides agree, the
analytic Jacobians agree with each other, with autograd and with finite differences, the
POLLU and HIRES definitions reproduce the published reference values, and a ``--quick`` run
writes JSON that renders. All in float64; speed is never asserted here."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

scipy_integrate = pytest.importorskip("scipy.integrate")

REPO = Path(__file__).resolve().parent.parent

from benchmarks.stiff_problems import PROBLEMS, Robertson, rober_f, rober_jac  # noqa: E402

KEYS = list(PROBLEMS)


def states(key: str, n: int = 6, seed: int = 0) -> np.ndarray:
    """States met along the problem's trajectory (a coarse LSODA solve), each component
    perturbed by a factor in [0.9, 1.1] so that no point is special."""
    p = PROBLEMS[key]
    ts = np.geomspace(1e-3, p.t_end, n)
    res = scipy_integrate.solve_ivp(p.f, (0.0, p.t_end), np.array(p.y0), method="LSODA",
                                    rtol=1e-4, atol=p.atol * 1e3, jac=p.jac, t_eval=ts)
    assert res.success, res.message
    rng = np.random.default_rng(seed)
    return res.y.T * rng.uniform(0.9, 1.1, size=res.y.T.shape)


@pytest.mark.parametrize("key", KEYS)
def test_numpy_and_torch_rhs_agree(key):
    p = PROBLEMS[key]
    module = p.module()
    ys = states(key)
    for y in ys:
        want = p.f(1.0, y)
        got = module(torch.tensor(1.0, dtype=torch.float64), torch.from_numpy(y)).numpy()
        # Same formula, possibly another order of operations: agreement to rounding,
        # relative to the largest term (|f| can cancel to far below its terms).
        scale = np.abs(p.jac(1.0, y)).max(axis=1) * np.abs(y).max() + np.abs(want) + 1e-300
        np.testing.assert_array_less(np.abs(got - want) / scale, 1e-13)
    # Batched: one call on (B, n) equals B calls.
    got = module(torch.tensor(1.0, dtype=torch.float64), torch.from_numpy(ys)).numpy()
    want = np.stack([p.f(1.0, y) for y in ys])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14 * np.abs(want).max())


@pytest.mark.parametrize("key", KEYS)
def test_jacobians_agree(key):
    """NumPy jac == torch jacobian == autograd's Jacobian of the torch f (to 1e-12 of the
    row's largest entry), batched too."""
    p = PROBLEMS[key]
    module = p.module()
    t = torch.tensor(1.0, dtype=torch.float64)
    ys = states(key)
    for y in ys:
        want = p.jac(1.0, y)
        row = np.abs(want).max(axis=1, keepdims=True) + 1e-300
        yt = torch.from_numpy(y)
        analytic = module.jacobian(t, yt).numpy()
        auto = torch.func.jacrev(lambda v: module(t, v))(yt).numpy()
        assert np.max(np.abs(analytic - want) / row) < 1e-12
        assert np.max(np.abs(auto - want) / row) < 1e-12
    batched = module.jacobian(t, torch.from_numpy(ys)).numpy()
    np.testing.assert_allclose(batched, np.stack([p.jac(1.0, y) for y in ys]), rtol=1e-12,
                               atol=1e-12 * np.abs(batched).max())


@pytest.mark.parametrize("key", KEYS)
def test_jacobian_matches_finite_differences(key):
    """Central differences with step h_j = 1e-6·max(|y_j|, 1e-4·max|y|): no right-hand side
    here is more than quadratic in any one component, so central differences are exact but
    for rounding, about 1e-16·|f's terms|/h; the tolerance, 1e-6 of the row's largest entry
    plus 1e-9 of the largest entry overall, covers that with room."""
    p = PROBLEMS[key]
    for y in states(key):
        jac = p.jac(1.0, y)
        fd = np.empty_like(jac)
        for j in range(len(y)):
            h = 1e-6 * max(abs(y[j]), 1e-4 * np.abs(y).max())
            e = np.zeros_like(y)
            e[j] = h
            fd[:, j] = (p.f(1.0, y + e) - p.f(1.0, y - e)) / (2 * h)
        tol = 1e-6 * np.abs(jac).max(axis=1, keepdims=True) + 1e-9 * np.abs(jac).max()
        assert np.all(np.abs(fd - jac) <= tol), (key, np.max(np.abs(fd - jac) - tol))


def test_batched_robertson_matches_per_sample_numpy():
    rng = np.random.default_rng(1)
    k = np.array([0.04, 1e4, 3e7]) * rng.uniform(0.5, 2, size=(5, 3))
    ys = states("rober-1e5", n=5)
    module = Robertson(torch.from_numpy(k))
    t = torch.tensor(0.0, dtype=torch.float64)
    got = module(t, torch.from_numpy(ys)).numpy()
    jac = module.jacobian(t, torch.from_numpy(ys)).numpy()
    for i in range(5):
        np.testing.assert_allclose(got[i], rober_f(0.0, ys[i], k[i]), rtol=1e-13, atol=1e-18)
        np.testing.assert_allclose(jac[i], rober_jac(0.0, ys[i], k[i]), rtol=1e-13,
                                   atol=1e-18)


@pytest.mark.parametrize("key", ["pollu", "hires"])
def test_definitions_reproduce_published_values(key):
    """Radau at rtol 1e-10 lands within 1e-7 (relative, per component) of the test set's
    reference: a wrong rate or stoichiometry would be off by percents."""
    p = PROBLEMS[key]
    res = scipy_integrate.solve_ivp(p.f, (0.0, p.t_end), np.array(p.y0), method="Radau",
                                    rtol=1e-10, atol=p.atol * 1e-8, jac=p.jac)
    assert res.success
    pub = np.array(p.published)
    np.testing.assert_allclose(res.y[:, -1], pub, rtol=1e-7, atol=1e-25)


@pytest.fixture
def bench_main(monkeypatch):
    """``benchmarks.main`` run in this process (no restart, threads restored after)."""
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.setenv("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.delenv("BENCH_THREADS", raising=False)
    threads = torch.get_num_threads()
    from benchmarks.__main__ import main

    yield main
    torch.set_num_threads(threads)


def test_quick_stiff_run_writes_json_and_renders(tmp_path, bench_main):
    out = tmp_path / "stiff.json"
    only = "scipy Radau,scipy BDF,bridge Radau,odeflow rodas5p,odeflow kvaerno5"
    rc = bench_main(["stiff", "--quick", "--reps", "1", "--only", only,
                     "--size", "batch=3,batch_large=4", "--out", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["workload"] == "stiff" and data["quick"] is True
    assert data["config"]["sizes"] == {"batch": 3, "batch_large": 4}
    rows = data["rows"]
    by = {(r["case"], r["contender"]): r for r in rows}
    for label in ("scipy Radau", "scipy BDF", "bridge Radau"):
        r = by[("rober-1e5", label)]
        assert r["status"] == "ok", r
        assert r["nfe"] > 0 and r["time"]["median"] > 0
        # SciPy's own solvers at rtol 1e-6 land within a few tolerance units.
        assert r["error"] < 10
    # odeflow's implicit methods: measured where registered, else unavailable with a reason.
    for r in rows:
        assert r["status"] == "ok" or r["status"].startswith(("unavailable:", "failed:")), r
    stacked = by[("rober-1e5 batch B=3", "scipy BDF stacked")]
    assert stacked["status"] == "ok" and stacked["error_checked_samples"] == 3
    assert data["targets"] and all(t["ok"] in (True, False, None) for t in data["targets"])
    md = tmp_path / "BENCHMARKS.md"
    assert bench_main(["render", str(out), "--out", str(md)]) == 0
    text = md.read_text()
    assert "## Stiff" in text and "python -m benchmarks stiff --quick" in text
    assert "| rober-1e5 | scipy Radau |" in text
