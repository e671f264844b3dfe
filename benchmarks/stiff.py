"""Stiff problems: odeflow's implicit methods against SciPy's Radau, BDF and LSODA.

Float64, rtol = 1e-6, one solve from t = 0 to the problem's end (``stiff_problems``:
Robertson to 1e5 and 1e11, van der Pol μ = 1000, HIRES, Oregonator, POLLU). Contenders:

- ``scipy Radau|BDF|LSODA``: ``solve_ivp`` on the NumPy right-hand side with its analytic
  Jacobian (what a SciPy user would write);
- ``bridge Radau|BDF|LSODA``: odeflow's ``method="scipy_solver"`` on the torch module
  (SciPy then forms its Jacobians by finite differences of the torch function);
- ``odeflow <method>``: ``rodas5p``, ``rodas4``, ``kvaerno5``, ``kvaerno3``, ``trbdf2`` and
  ``auto`` with their default Jacobian (automatic differentiation), and ``rodas5p`` with
  the analytic Jacobian passed as ``options["jacobian"]`` and ``options["autonomous"]``;
  a method odeflow has not registered is reported as unavailable.

Error = max over components of |y(t_end) − y_ref| / (atol + rtol·|y_ref|), the reference
from SciPy Radau at rtol 1e-12 (cached in ``results/stiff-references.json``; the published
test-set values agree with it to < 1e-6 of these units). Counts come from each library:
SciPy's ``nfev``/``njev``/``nlu`` and accepted steps, odeflow's ``SolveStats`` (its nfe
counts one call per autodiff Jacobian; the harness's own counting wrapper agrees); the
bridge's calls are counted by that wrapper. Times: median of round-robin repetitions
after one warm-up each.

Batch: B Robertsons to t = 1e5 whose three rate constants are each scaled by U[0.5, 2]
(seeded): odeflow ``options={"per_sample": True}`` against SciPy BDF on the stacked 3B
system with a sparse (CSC) block-diagonal Jacobian, errors per sample against per-sample
references (SciPy LSODA at rtol 1e-12, cached); then a larger B for odeflow alone.
Sizes: ``--size batch=1000,batch_large=10000`` (``--quick``: 4 and 8; ``batch=0`` skips the
batch case).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

import numpy as np
import torch

from .common import (
    RESULTS,
    CountingFunc,
    Unavailable,
    describe_error,
    log,
    make_row,
    round_robin,
    selected,
)
from .stiff_problems import PROBLEMS, ROBER_K, Robertson, StiffProblem, rober_f, rober_jac

RTOL = 1e-6
SCIPY_METHODS = ("Radau", "BDF", "LSODA")
ODEFLOW_METHODS = ("rodas5p", "rodas4", "kvaerno5", "kvaerno3", "trbdf2", "auto")
BATCH_METHODS = ("rodas5p", "rodas4", "kvaerno5")
# Time targets of the batch against SciPy BDF on the stacked system (default: < 1).
BATCH_TARGET = {"rodas5p": 0.8}
SIZES = {"batch": 1000, "batch_large": 10000}
QUICK_SIZES = {"batch": 4, "batch_large": 8}
QUICK_PROBLEMS = ("rober-1e5",)
SEED = 0
SCALE = (0.5, 2.0)  # each rate constant of each batch sample times U[0.5, 2]
REFERENCES = RESULTS / "stiff-references.json"
REF_RTOL = 1e-12
BATCH_REF = "scipy LSODA rtol=1e-12 atol=1e-16, analytic Jacobian, per sample"


def contenders() -> list[tuple[str, str, str]]:
    """(library, method, label) in table order."""
    out = [("scipy", m, f"scipy {m}") for m in SCIPY_METHODS]
    out += [("bridge", m, f"bridge {m}") for m in SCIPY_METHODS]
    out += [("odeflow", m, f"odeflow {m}") for m in ODEFLOW_METHODS]
    out.append(("odeflow-jac", "rodas5p", "odeflow rodas5p (analytic J, autonomous)"))
    return out


# --------------------------------------------------------------------------------------
# References (cached: the tight solves take seconds per problem, minutes per batch)
# --------------------------------------------------------------------------------------
def _fingerprint(f: Callable, y0: np.ndarray, extra: object = "") -> str:
    """A digest of the problem's definition: f at a fixed point off y0, plus settings, so
    that an edited problem never meets a stale cached reference."""
    probe = np.asarray(y0, dtype=np.float64) + 0.1 * np.arange(1, len(y0) + 1)
    data = np.asarray(f(0.5, probe)).tobytes() + repr(extra).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def _load_cache() -> dict:
    try:
        return json.loads(REFERENCES.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _save_cache(cache: dict) -> None:
    REFERENCES.parent.mkdir(parents=True, exist_ok=True)
    tmp = REFERENCES.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(cache, indent=1) + "\n")
    tmp.replace(REFERENCES)


def tight_reference(p: StiffProblem) -> np.ndarray:
    """y(t_end) from SciPy Radau at rtol 1e-12, atol 1e-6 × the problem's atol."""
    from scipy.integrate import solve_ivp

    res = solve_ivp(p.f, (0.0, p.t_end), np.array(p.y0), method="Radau", rtol=REF_RTOL,
                    atol=p.atol * 1e-6, jac=p.jac)
    if not res.success:
        raise RuntimeError(f"reference for {p.key} failed: {res.message}")
    return res.y[:, -1]


def reference(p: StiffProblem, cache: dict, write: bool) -> tuple[np.ndarray, dict]:
    """The cached (or freshly computed) reference and what is known about it."""
    fp = _fingerprint(p.f, np.array(p.y0), (p.t_end, p.atol, REF_RTOL))
    hit = cache.get("problems", {}).get(p.key)
    if hit and hit.get("fingerprint") == fp:
        return np.array(hit["y_end"]), hit
    t0 = time.perf_counter()
    y = tight_reference(p)
    info = {"fingerprint": fp, "y_end": y.tolist(),
            "how": f"scipy Radau rtol={REF_RTOL:g} atol={p.atol * 1e-6:g}, analytic Jacobian",
            "seconds": time.perf_counter() - t0}
    if p.published:
        pub = np.array(p.published)
        info["published_source"] = p.published_source
        info["published_distance"] = float(error_units(y, pub, p.atol))
    if write:
        cache.setdefault("problems", {})[p.key] = info
        _save_cache(cache)
    return y, info


def batch_rates(n: int, seed: int = SEED) -> np.ndarray:
    """(n, 3) rate constants; the first rows do not depend on ``n`` (a prefix of one
    stream), so the small batch is the start of the large one."""
    rng = np.random.default_rng(seed)
    return np.array(ROBER_K) * rng.uniform(*SCALE, size=(n, 3))


def batch_reference(k: np.ndarray, p: StiffProblem, cache: dict, write: bool) -> np.ndarray:
    """y(t_end) of every sample alone (SciPy LSODA, rtol 1e-12; ~0.02 s per sample).

    A cached batch serves any prefix of itself: the rates are a prefix of one stream.
    """
    from scipy.integrate import solve_ivp

    def digest(kk: np.ndarray) -> str:
        fp = _fingerprint(rober_f, np.array(p.y0), (p.t_end, REF_RTOL))
        return hashlib.sha256(kk.tobytes() + fp.encode()).hexdigest()[:16]

    n = len(k)
    hit = cache.get("batches", {}).get(p.key)
    if hit and len(hit["y_end"]) >= n:
        stored = batch_rates(len(hit["y_end"]), hit["seed"])
        if digest(stored) == hit["fingerprint"] and np.array_equal(stored[:n], k):
            return np.array(hit["y_end"])[:n]
    t0 = time.perf_counter()
    out = np.empty((n, p.n))
    for i in range(n):
        res = solve_ivp(rober_f, (0.0, p.t_end), np.array(p.y0), method="LSODA",
                        rtol=REF_RTOL, atol=1e-16, jac=rober_jac, args=(k[i],))
        if not res.success:
            raise RuntimeError(f"batch reference {i} failed: {res.message}")
        out[i] = res.y[:, -1]
    seconds = time.perf_counter() - t0
    log(f"stiff: batch reference of {n} samples in {seconds:.1f} s")
    if write:
        # How far LSODA's answers are from tight Radau's, on the first samples.
        check = []
        for i in range(min(n, 3)):
            res = solve_ivp(rober_f, (0.0, p.t_end), np.array(p.y0), method="Radau",
                            rtol=REF_RTOL, atol=1e-16, jac=rober_jac, args=(k[i],))
            check.append(float(error_units(out[i], res.y[:, -1], p.atol)))
        cache.setdefault("batches", {})[p.key] = {
            "seed": SEED, "scale": list(SCALE), "how": BATCH_REF, "fingerprint": digest(k),
            "radau_check_units": check, "seconds": seconds, "y_end": out.tolist()}
        _save_cache(cache)
    return out


def error_units(y: np.ndarray, ref: np.ndarray, atol: float, rtol: float = RTOL):
    """max over the last axis of |y − ref| / (atol + rtol·|ref|) (NaN counts as inf)."""
    e = np.abs(np.asarray(y) - ref) / (atol + rtol * np.abs(ref))
    return np.where(np.isnan(e), np.inf, e).max(axis=-1)


# --------------------------------------------------------------------------------------
# Contenders
# --------------------------------------------------------------------------------------
def _st(stats, name: str):
    v = getattr(stats, name, None)
    if isinstance(v, torch.Tensor):
        return int(v.sum().item())
    return None if v is None else int(v)


def _scipy_runner(p: StiffProblem, method: str) -> Callable[[], dict]:
    from scipy.integrate import solve_ivp

    y0 = np.array(p.y0)

    def run():
        res = solve_ivp(p.f, (0.0, p.t_end), y0, method=method, rtol=RTOL, atol=p.atol,
                        jac=p.jac)
        if not res.success:
            raise RuntimeError(f"solve_ivp {method}: {res.message}")
        return {"nfe": int(res.nfev), "njac": int(res.njev), "nlu": int(res.nlu),
                "steps": None, "accepted": len(res.t) - 1, "y_end": res.y[:, -1]}

    return run


def _odeflow_runner(p: StiffProblem, library: str, method: str,
                    module: torch.nn.Module | None = None,
                    y0: torch.Tensor | None = None) -> Callable[[], dict]:
    try:
        import odeflow
    except ImportError as e:
        raise Unavailable(f"odeflow: {describe_error(e)}") from e
    module = p.module() if module is None else module
    f = CountingFunc(module)
    y0 = torch.tensor(p.y0, dtype=torch.float64) if y0 is None else y0
    t = torch.tensor([0.0, p.t_end], dtype=torch.float64)
    options: dict = {}
    if library == "bridge":
        name, options = "scipy_solver", {"solver": method}
    else:
        name = method
        if name not in odeflow.METHODS:
            raise Unavailable(f"odeflow has no method {name!r} yet")
        if library == "odeflow-jac":
            # What a user who knows the problem passes: its Jacobian, and that f does not
            # depend on t (else Rosenbrock methods still call f once per step for ∂f/∂t).
            options.update(jacobian=module.jacobian, autonomous=True)
        if library == "odeflow-batch":
            options["per_sample"] = True

    def run():
        f.reset()
        try:
            with torch.no_grad():
                sol = odeflow.solve(f, y0, t, method=name, rtol=RTOL, atol=p.atol,
                                    options=options)
        except odeflow.SolveError:
            raise  # the method ran and failed: a failure, reported as such
        except Exception as e:
            # An option the method does not take (yet), or per-sample implicit stepping
            # that is missing or unfinished, is a missing feature: say what solve raised.
            if library == "odeflow-batch" or (
                    isinstance(e, ValueError) and any(k in str(e) for k in options)):
                raise Unavailable(f"solve(..., options={sorted(options)}) raised "
                                  f"{describe_error(e)}") from e
            raise
        st = sol.stats
        out = {"nfe": f.nfe, "lib_nfe": _st(st, "nfe"), "njac": _st(st, "n_jacobians"),
               "nlu": _st(st, "n_lu"), "newton_iters": _st(st, "n_newton_iters"),
               "newton_failures": _st(st, "n_newton_failures"),
               "steps": _st(st, "n_steps"), "accepted": _st(st, "n_accepted"),
               "rejected": _st(st, "n_rejected"),
               "y_end": sol.ys[-1].detach().numpy().copy()}
        if library == "bridge":
            # The bridge passes neither SciPy's Jacobian/LU counts nor its steps through
            # (its n_steps counts output intervals).
            for k in ("njac", "nlu", "newton_iters", "newton_failures", "steps",
                      "accepted", "rejected"):
                out[k] = None
        if st.switches:
            out["switches"] = [(float(a), str(b)) for a, b in st.switches]
        ss = getattr(sol, "sample_stats", None)
        if library == "odeflow-batch" and ss is not None:
            # n_steps counts the loop's iterations; accepted and rejected are summed over
            # the samples: show them per sample.
            out["accepted_total"] = out.pop("accepted")
            out["rejected_total"] = out.pop("rejected")
            out["accepted_mean"] = out["accepted_total"] / y0.shape[0]
            acc = ss.n_accepted.double()
            out["accepted_median"] = float(acc.median())
            out["accepted_max"] = int(acc.max())
            # SampleStats.status is a list of Status members since the one-loop core
            # (its (B,) code tensor is ``codes``); a tensor before.
            codes = getattr(ss, "codes", None)
            codes = ss.status if codes is None else codes
            out["failed_samples"] = int((torch.as_tensor(codes) != 0).sum())
        return out

    return run


def build(p: StiffProblem, library: str, method: str) -> Callable[[], dict]:
    if library == "scipy":
        return _scipy_runner(p, method)
    return _odeflow_runner(p, library, method)


# --------------------------------------------------------------------------------------
# The batch case
# --------------------------------------------------------------------------------------
def _stacked_bdf_runner(p: StiffProblem, k: np.ndarray) -> Callable[[], dict]:
    """SciPy BDF on the stacked (3B,) system with a sparse block-diagonal Jacobian."""
    from scipy.integrate import solve_ivp
    from scipy.sparse import bsr_matrix

    n = len(k)
    k1, k2, k3 = k.T
    idx = np.arange(n)

    def f(t, y):
        y1, y2, y3 = y.reshape(n, 3).T
        a, b, c = k1 * y1, k2 * y2 * y3, k3 * y2 * y2
        return np.stack((b - a, a - b - c, c), -1).reshape(-1)

    def jac(t, y):
        _, y2, y3 = y.reshape(n, 3).T
        blocks = np.zeros((n, 3, 3))
        blocks[:, 0] = np.stack((-k1, k2 * y3, k2 * y2), -1)
        blocks[:, 1] = np.stack((k1, -k2 * y3 - 2 * k3 * y2, -k2 * y2), -1)
        blocks[:, 2, 1] = 2 * k3 * y2
        return bsr_matrix((blocks, idx, np.arange(n + 1)), shape=(3 * n, 3 * n)).tocsc()

    y0 = np.tile(np.array(p.y0), n)

    def run():
        res = solve_ivp(f, (0.0, p.t_end), y0, method="BDF", rtol=RTOL, atol=p.atol, jac=jac)
        if not res.success:
            raise RuntimeError(f"solve_ivp BDF: {res.message}")
        return {"nfe": int(res.nfev), "njac": int(res.njev), "nlu": int(res.nlu),
                "steps": None, "accepted": len(res.t) - 1,
                "y_end": res.y[:, -1].reshape(n, 3)}

    return run


def run_batch(sizes: dict, reps: int, only: list[str] | None, cache: dict,
              write: bool) -> list[dict]:
    """Rows of the batch case: B samples (with errors) and B_large (odeflow, time only)."""
    p = PROBLEMS["rober-1e5"]
    rows = []
    # The large batch starts with the small one: its errors are checked on that prefix.
    ref_all = batch_reference(batch_rates(sizes["batch"]), p, cache, write)
    for n, with_scipy in ((sizes["batch"], True), (sizes["batch_large"], False)):
        case = f"rober-1e5 batch B={n}"
        k = batch_rates(n)
        n_ref = min(n, sizes["batch"])
        ref = ref_all[:n_ref]
        runners, pre = {}, {}
        labels = [f"odeflow {m} per-sample" for m in BATCH_METHODS]
        for m, label in zip(BATCH_METHODS, labels):
            if not selected(label, only):
                continue
            module = Robertson(torch.from_numpy(k))
            y0 = torch.tensor(p.y0, dtype=torch.float64).expand(n, 3).contiguous()
            try:
                runners[label] = _odeflow_runner(p, "odeflow-batch", m, module, y0)
            except Unavailable as e:
                pre[label] = {"status": f"unavailable: {e}"}
        if with_scipy and selected("scipy BDF stacked", only):
            labels.append("scipy BDF stacked")
            runners["scipy BDF stacked"] = _stacked_bdf_runner(p, k)
        log(f"stiff {case}: {len(runners)} contenders x {reps} reps")
        outcomes, _ = round_robin(runners, reps, label=f"stiff {case}")
        outcomes.update(pre)
        for label in labels:
            if label not in outcomes:
                continue
            o = outcomes[label]
            errs = None
            if o["status"] == "ok":
                errs = error_units(o["stats"]["y_end"][:n_ref], ref, p.atol)
            row = make_row(case, label, o, problem=p.key, n=n, atol=p.atol, rtol=RTOL)
            if errs is not None:
                row.update(error_worst=float(errs.max()), error_median=float(np.median(errs)),
                           error_checked_samples=n_ref,
                           samples_over_1=int((errs > 1).sum()))
            rows.append(row)
    return rows


# --------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------
def _find(rows: list[dict], case: str, contender: str) -> dict | None:
    for r in rows:
        if r["case"] == case and r["contender"] == contender:
            return r
    return None


def _okrow(r: dict | None) -> bool:
    return bool(r) and r.get("status") == "ok" and bool(r.get("time", {}).get("median"))


def _na(r: dict | None) -> tuple[str, bool | None]:
    """A row without a measurement: (why, verdict). A method that is missing cannot be
    judged (None); one that ran and failed misses the target."""
    if not r:
        return "not run", None
    if r["status"].startswith("failed"):
        return r["status"], False
    return "not available: " + r["status"].split(": ", 1)[-1], None


def targets(rows: list[dict], problems: list[str], sizes: dict) -> list[dict]:
    """The issue's targets, each with what was measured and met / missed / None (n/a)."""
    out = []

    def add(target, measured, ok, *rows):
        # rows: the (case, contender) pairs measured, so the report can cite their run.
        out.append({"target": target, "measured": measured, "ok": ok,
                    "rows": [(r["case"], r["contender"]) for r in rows if r]})

    for method in ("rodas5p", "kvaerno5"):
        for key in problems:
            r = _find(rows, key, f"odeflow {method}")
            if not _okrow(r):
                add(f"{key}: {method} error ≤ 1", *_na(r), r)
                continue
            add(f"{key}: {method} error ≤ 1", f"{r['error']:.3g}", r["error"] <= 1, r)
    key = "rober-1e5"
    ro, ra, bdf = (_find(rows, key, c) for c in ("odeflow rodas5p", "scipy Radau",
                                                  "scipy BDF"))
    n = PROBLEMS[key].n
    if _okrow(ro) and _okrow(ra):
        budget = ra["nfe"] + n * ra["njac"]
        add(f"{key}: rodas5p nfe ≤ Radau nfev + {n}·njev at error ≤ 0.5",
            f"{ro['nfe']} vs {budget} ({ra['nfe']} + {n}·{ra['njac']}); error {ro['error']:.3g}",
            ro["nfe"] <= budget and ro["error"] <= 0.5, ro, ra)
    else:
        add(f"{key}: rodas5p nfe ≤ Radau nfev + {n}·njev at error ≤ 0.5",
            "not available (rodas5p or Radau missing)", None)
    if _okrow(ro) and _okrow(bdf):
        ratio = ro["time"]["median"] / bdf["time"]["median"]
        add(f"{key}: rodas5p time ≤ 2× SciPy BDF (NumPy f)",
            f"{ratio:.2f}× ({ro['time']['median'] * 1e3:.3g} vs "
            f"{bdf['time']['median'] * 1e3:.3g} ms)", ratio <= 2, ro, bdf)
    else:
        add(f"{key}: rodas5p time ≤ 2× SciPy BDF (NumPy f)",
            "not available (rodas5p or BDF missing)", None)
    for label in (f"odeflow {m} per-sample" for m in BATCH_METHODS):
        b = sizes["batch"]
        r = _find(rows, f"rober-1e5 batch B={b}", label)
        tgt = f"batch B={b}: {label}, every sample's error ≤ 1"
        if _okrow(r):
            add(tgt, f"worst {r['error_worst']:.3g}, {r['samples_over_1']} of {b} over 1",
                r["samples_over_1"] == 0, r)
        else:
            add(tgt, *_na(r), r)
        stacked = _find(rows, f"rober-1e5 batch B={b}", "scipy BDF stacked")
        # Issue "One loop": rodas5p per sample ≤ 0.8× BDF; the others: faster than BDF.
        lim = BATCH_TARGET.get(label.split()[1], 1.0)
        tgt = (f"batch B={b}: {label} ≤ {lim}× SciPy BDF on the stacked system" if lim < 1
               else f"batch B={b}: {label} faster than SciPy BDF on the stacked system")
        if _okrow(r) and _okrow(stacked):
            ratio = r["time"]["median"] / stacked["time"]["median"]
            add(tgt, f"{ratio:.2f}× ({r['time']['median']:.3g} vs "
                f"{stacked['time']['median']:.3g} s)", ratio <= lim if lim < 1 else ratio < 1,
                r, stacked)
        else:
            add(tgt, *_na(r if not _okrow(r) else stacked), r, stacked)
        big = sizes["batch_large"]
        r = _find(rows, f"rober-1e5 batch B={big}", label)
        tgt = f"batch B={big}: {label} ≤ 5 s"
        if _okrow(r):
            add(tgt, f"{r['time']['median']:.2f} s", r["time"]["median"] <= 5, r)
        else:
            add(tgt, *_na(r), r)
    return out


# --------------------------------------------------------------------------------------
def run(quick: bool, reps: int | None, compile: bool = True, only: list[str] | None = None,
        sizes: dict | None = None) -> dict:
    reps = reps or (1 if quick else 5)
    sz = dict(QUICK_SIZES if quick else SIZES)
    unknown = set(sizes or {}) - set(sz) - {"reps_batch"}
    if unknown:
        raise ValueError(f"unknown --size keys {sorted(unknown)}; known: {sorted(sz)}")
    sz.update({k: int(v) for k, v in (sizes or {}).items()})
    reps_batch = sz.pop("reps_batch", min(reps, 3))
    keys = list(QUICK_PROBLEMS if quick else PROBLEMS)
    # A --quick run (the tests) reads the cache but never writes into the repository.
    write = not quick
    cache = _load_cache()
    rows, refs = [], {}
    for key in keys:
        p = PROBLEMS[key]
        ref, info = reference(p, cache, write)
        refs[key] = {k: v for k, v in info.items() if k != "fingerprint"}
        runners, pre = {}, {}
        chosen = [c for c in contenders() if selected(c[2], only)]
        for lib, method, label in chosen:
            try:
                runners[label] = build(p, lib, method)
            except Unavailable as e:
                pre[label] = {"status": f"unavailable: {e}"}
        log(f"stiff {key}: {len(runners)} contenders x {reps} reps")
        outcomes, _ = round_robin(runners, reps, label=f"stiff {key}")
        outcomes.update(pre)
        for lib, _, label in chosen:
            o = outcomes[label]
            row = make_row(key, label, o, problem=key, n=p.n, atol=p.atol, rtol=RTOL)
            if o["status"] == "ok":
                row["error"] = float(error_units(o["stats"]["y_end"], ref, p.atol))
                if row.get("njac") is not None and lib == "scipy":
                    row["nfe_plus_n_njac"] = row["nfe"] + p.n * row["njac"]
            rows.append(row)
    if sz["batch"] > 0:  # --size batch=0: the single problems only
        rows += run_batch(sz, reps_batch, only, cache, write)
    return {
        "config": {"rtol": RTOL, "dtype": "float64", "reps": reps, "reps_batch": reps_batch,
                   "problems": {k: {"title": PROBLEMS[k].title, "t_end": PROBLEMS[k].t_end,
                                    "atol": PROBLEMS[k].atol, "n": PROBLEMS[k].n}
                                for k in keys},
                   "sizes": sz, "seed": SEED, "scale": list(SCALE),
                   "batch_reference": BATCH_REF,
                   "error": "max_i |y_i − ref_i| / (atol + rtol·|ref_i|) at t_end"},
        "references": refs,
        "rows": rows,
        "targets": targets(rows, keys, sz),
    }
