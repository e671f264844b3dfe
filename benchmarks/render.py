"""Render results files into ``BENCHMARKS.md``: one table per workload, its command,
the ratio of every row to torchdiffeq's, the targets of issue 7 (met or not, with the
numbers), the profiles, and the hand-written analysis in ``benchmarks/notes.md``.
"""

from __future__ import annotations

import glob
import json
import subprocess
from pathlib import Path

from . import WORKLOADS
from .common import REPO, RESULTS

NOTES = Path(__file__).resolve().parent / "notes.md"

TITLES = {
    "s1": "S1 — step-loop overhead (MLP on a batch of 2-D points, float32, dopri5, "
          "rtol = atol = 1e-6)",
    "s2": "S2 — accuracy per evaluation (van der Pol, Lorenz; float64; t ∈ [0, 10])",
    "s3": "S3 — a neural-ODE training step (MNIST ODEfunc(64), state (128, 64, 6, 6), "
          "dopri5, rtol = atol = 1e-3)",
    "s4": "S4 — 1000 independent van der Pol oscillators (dopri5, rtol = atol = 1e-6, "
          "t ∈ [0, 10])",
    "stiff": "Stiff — implicit methods against SciPy Radau, BDF, LSODA (float64, rtol = 1e-6)",
    "lanes": "Lanes — per-sample clock at B = 1 against a joint solve (float64, dopri5, "
             "one thread)",
    "sde": "SDE — odeflow.sde against torchsde 0.2.6 (float32, fixed dt = 1e-2 on [0, 1])",
}
BEFORE = RESULTS / "before-d70548b"
BEFORE_COMMIT = "d70548b"


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------
def _partial(d: dict) -> bool:
    """A run restricted with ``--only`` or to some sizes (``--size``)."""
    argv = d.get("argv") or []
    return "--only" in argv or "--size" in argv


def load(files: list[str]) -> dict[str, dict]:
    """The newest full results per workload (a full run wins over a --quick one), with the
    rows of newer partial runs (``--only``) laid over it.

    A partial run replaces the rows of the same (case, contender) it measured and adds
    the ones the full run lacks; every row keeps the command, commit and time of the run
    that measured it (``_src``), which the tables and the targets cite.
    """
    by_w: dict[str, list[dict]] = {}
    for f in files:
        try:
            d = json.loads(Path(f).read_text())
        except (OSError, json.JSONDecodeError):
            continue
        w = d.get("workload")
        if w not in WORKLOADS:
            continue
        d["_file"] = str(Path(f).resolve().relative_to(REPO)) if Path(f).resolve().is_relative_to(
            REPO) else f
        by_w.setdefault(w, []).append(d)
    best: dict[str, dict] = {}
    for w, ds in by_w.items():
        ds.sort(key=lambda d: (not d.get("quick"), d.get("finished", "")))
        full = [d for d in ds if not _partial(d)]
        # No full run: the partial runs are laid over the oldest of them, in time order.
        base = full[-1] if full else ds[0]
        for r in base["rows"]:
            r["_src"] = _src(base)
        key = (not base.get("quick"), base.get("finished", ""))
        overlays = [d for d in ds if d is not base and _partial(d)
                    and (not d.get("quick"), d.get("finished", "")) > key]
        base["_overlays"] = []
        for d in overlays:
            index = {(r["case"], r["contender"]): i for i, r in enumerate(base["rows"])}
            for r in d["rows"]:
                r["_src"] = _src(d)
                i = index.get((r["case"], r["contender"]))
                if i is None:
                    base["rows"].append(r)
                elif (not str(r.get("status")).startswith("unavailable")
                      or base["rows"][i].get("status") != "ok"):
                    # Measured or failed in the newer run: that is the news. (A contender
                    # the newer run skipped keeps the older measurement.)
                    base["rows"][i] = r
            base["_overlays"].append(d)
        if w == "stiff" and overlays:
            from .stiff import targets as stiff_targets

            cfg = base["config"]
            base["targets"] = stiff_targets(base["rows"], list(cfg["problems"]), cfg["sizes"])
        best[w] = base
    return best


_TREE: dict[str, str] = {}


def _odeflow_tree(commit: str | None) -> str | None:
    """The last commit at or before ``commit`` that changed ``odeflow/``: results files
    name the checkout's HEAD, which on a benchmarks branch is a commit that changed
    only ``benchmarks/``."""
    if not commit or commit == "unknown":
        return commit
    head, _, rest = commit.partition(" ")
    if head not in _TREE:
        try:
            out = subprocess.run(["git", "log", "-1", "--format=%h", head, "--", "odeflow"],
                                 cwd=REPO, capture_output=True, text=True, timeout=10)
            _TREE[head] = out.stdout.strip() or head
        except (OSError, subprocess.SubprocessError):
            _TREE[head] = head
    return _TREE[head] + (f" {rest}" if rest else "")


def _src(d: dict) -> dict:
    cmd = str(d.get("command")).replace(str(REPO) + "/", "")
    return {"command": cmd, "git": _odeflow_tree((d.get("versions") or {}).get("odeflow_git")),
            "started": d.get("started"), "load": (d.get("loadavg_start") or [None])[0]}


def _cite(*rows: dict | None) -> str:
    """The command (and odeflow commit, date) that measured these rows."""
    seen = []
    for r in rows:
        src = (r or {}).get("_src")
        if src and src not in seen:
            seen.append(src)
    return "; ".join(f"`{s['command']}` (odeflow/ at {s['git']}, {str(s['started'])[:16]}Z, "
                     f"load {s['load']})" for s in seen) or "–"


def _row(d: dict, case: str, contender: str) -> dict | None:
    for r in d["rows"]:
        if r["case"] == case and r["contender"] == contender:
            return r
    return None


def _ok(r: dict | None) -> bool:
    return bool(r) and r.get("status") == "ok" and bool(r.get("time"))


def _t(r: dict | None) -> float | None:
    return r["time"]["median"] if _ok(r) else None


def _ratio(d: dict, r: dict, key=_t) -> float | None:
    ref = _row(d, r["case"], r.get("reference") or "")
    a, b = key(r), key(ref)
    if a is None or not b:
        return None
    return a / b


# --------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------
def _ms(s: float | None) -> str:
    if s is None:
        return "–"
    ms = s * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def _time_cell(r: dict, scale: str = "ms") -> str:
    t = r["time"]
    if scale == "s":
        return f"{t['median']:.2f} [{t['min']:.2f}–{t['max']:.2f}]"
    return f"{_ms(t['median'])} [{_ms(t['min'])}–{_ms(t['max'])}]"


def _x(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}×"


def _g(v, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _e(v) -> str:
    return "–" if v is None else f"{v:.2e}"


def _steps(r: dict) -> str:
    acc, st = r.get("accepted"), r.get("steps")
    if r.get("accepted_total") is not None and acc is None and r.get("accepted_mean") is None:
        r = dict(r, accepted_mean=r["accepted_total"] / max(r.get("n", 1), 1))
    if acc is None and st is None:
        return "–"
    if st is None:
        return f"– ({acc})"
    s = f"{st} ({acc})"
    if r.get("accepted_mean") is not None:
        return f"{st} (–), {r['accepted_mean']:.0f} accepted per sample (mean)"
    if r.get("steps_median") is not None:
        s += f", median {r['steps_median']:.0f} ({r.get('accepted_median', 0):.0f})"
    return s


def _status_row(r: dict, ncols: int, lead: list[str]) -> str:
    cells = lead + [f"*{r['status']}*"] + [""] * (ncols - len(lead) - 1)
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"


def _table(head: list[str], lines: list[str]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *lines, ""]


def _meta(d: dict) -> list[str]:
    m, v = d["machine"], d["versions"]
    load = d.get("loadavg_start"), d.get("loadavg_end")
    lines = [
        "```",
        str(d["command"]).replace(str(REPO) + "/", ""),
        "```",
        "",
        f"Run {d.get('started')} → {d.get('finished')} on {m.get('cpu')} "
        f"({m.get('cores')} cores, torch threads {m.get('torch_threads')}, "
        f"OMP_WAIT_POLICY={m.get('omp_wait_policy')}); load average at start / end: "
        f"{load[0] and load[0][0]} / {load[1] and load[1][0]}. "
        f"torch {v.get('torch')}, odeflow {v.get('odeflow')} (odeflow/ at "
        f"{_odeflow_tree(v.get('odeflow_git'))}), "
        f"torchdiffeq {v.get('torchdiffeq')}, torchode {v.get('torchode')}, "
        f"SciPy {v.get('scipy')}. Results: `{d['_file']}`."
        + (" **Quick run: sizes and repetitions too small to rank anything.**"
           if d.get("quick") else ""),
        "",
    ]
    for o in d.get("_overlays", []):
        rows = sorted({f"{r['case']} / {r['contender']}" for r in o["rows"]
                       if r.get("status") == "ok"})
        lines += [f"Rows re-measured (they replace the run above's) by "
                  f"`{str(o['command']).replace(str(REPO) + '/', '')}`, "
                  f"{o.get('started')} → {o.get('finished')}, odeflow/ at "
                  f"{_odeflow_tree(o['versions'].get('odeflow_git'))}, load "
                  f"{(o.get('loadavg_start') or ['?'])[0]}"
                  f" / {(o.get('loadavg_end') or ['?'])[0]}; results `{o['_file']}`: "
                  + ", ".join(rows) + ".", ""]
    return lines


# --------------------------------------------------------------------------------------
# Per-workload tables
# --------------------------------------------------------------------------------------
def paired_overhead(r: dict) -> float | None:
    """Median over rounds of time_k / (NFE × bare_k): each rep against its own round's bare
    cost, which follows the machine's load more closely than two separate medians."""
    bare = r.get("bare_per_round_us")
    times = (r.get("time") or {}).get("all")
    nfe = r.get("nfe_total")
    if not bare or not times or not nfe or len(bare) != len(times):
        return r.get("overhead")
    ratios = sorted(t / (nfe * b * 1e-6) for t, b in zip(times, bare))
    n = len(ratios)
    return ratios[n // 2] if n % 2 else 0.5 * (ratios[n // 2 - 1] + ratios[n // 2])


def _s1(d: dict) -> list[str]:
    head = ["case", "contender", "time ms, median [min–max]", "vs torchdiffeq",
            "NFE fwd+bwd", "steps (accepted)", "µs/NFE", "bare f µs", "overhead"]
    lines = []
    for r in d["rows"]:
        lead = [r["case"], r["contender"]]
        if not _ok(r):
            lines.append(_status_row(r, len(head), lead))
            continue
        nfe = f"{r['nfe']}+{r.get('nfe_bwd', 0)}"
        extra = f" (compile {r['compile_s']:.1f} s)" if r.get("compile_s") else ""
        lines.append("| " + " | ".join(lead + [
            _time_cell(r) + extra, _x(_ratio(d, r)), nfe, _steps(r), _g(r.get("us_per_nfe")),
            _g(r.get("bare_us")), _g(paired_overhead(r))]) + " |")
    notes = [
        "Overhead = time / (NFE × bare cost), the median over rounds of each repetition",
        "against the bare cost measured in its own round; for forward+backward rows the",
        "bare cost is one call of `func` plus its vector–Jacobian product w.r.t. input and",
        "parameters, and NFE counts forward and backward calls (the adjoint's backward",
        "calls each do a vjp; backprop's backward replays the graph, 0 calls).",
        "The per-sample rows treat every point as its own problem (own steps, own error",
        "norm): not the same work as the joint rows, shown for reference.",
        "",
    ]
    return _table(head, lines) + notes


def _s2(d: dict) -> list[str]:
    head = ["case", "contender", "error at t=10", "NFE", "steps (accepted)",
            "time ms, median [min–max]", "vs torchdiffeq", "µs/NFE", "bare f µs"]
    lines = []
    for r in d["rows"]:
        lead = [r["case"], r["contender"]]
        if not _ok(r):
            lines.append(_status_row(r, len(head), lead))
            continue
        lines.append("| " + " | ".join(lead + [
            _e(r.get("error")), str(r["nfe"]), _steps(r), _time_cell(r),
            _x(_ratio(d, r)) + (f" ({r['reference'].split()[-1]})" if r.get("reference")
                                else ""), _g(r.get("us_per_nfe")),
            _g(r.get("bare_us"))]) + " |")
    notes = ["Ratios: dopri5, tsit5 and RK45 rows to torchdiffeq dopri5; dopri8 and DOP853 "
             "rows to torchdiffeq dopri8. SciPy reports no rejected steps, only accepted.",
             ""]
    return _table(head, lines) + notes


def _s3(d: dict) -> list[str]:
    head = ["kind", "contender", "time s, median [min–max]", "vs torchdiffeq", "NFE fwd / bwd",
            "steps fwd / bwd", "µs/NFE", "overhead", "peak MiB", "memory vs torchdiffeq"]
    lines = []

    def mem(r):
        m = r.get("memory") or {}
        return m.get("median_mb")

    for r in d["rows"]:
        lead = [r["case"], r["contender"]]
        if not _ok(r):
            lines.append(_status_row(r, len(head), lead))
            continue
        m = r.get("memory") or {}
        mcell = f"{m['median_mb']:.0f}" if m.get("median_mb") is not None else (
            m.get("status", "–") if m else "–")
        extra = f" (compile {r['compile_s']:.0f} s)" if r.get("compile_s") else ""
        steps_b = r.get("steps_bwd")
        lines.append("| " + " | ".join(lead + [
            _time_cell(r, "s") + extra, _x(_ratio(d, r)),
            f"{r['nfe']} / {r.get('nfe_bwd', 0)}",
            f"{_steps(r)} / {steps_b if steps_b is not None else '–'}",
            _g(r.get("us_per_nfe")), _g(r.get("overhead")), mcell,
            _x(_ratio(d, r, mem)) if r["case"] == "fwd+bwd" else ""]) + " |")
    notes = [
        "Kinds: `fwd+bwd` one training step; `fwd` its forward half (inputs require grad,",
        "no backward: backprop builds its graph, adjoint and checkpoint do not); `inference`",
        "a forward under `torch.no_grad()`. Ratios: backprop and checkpoint rows to",
        "torchdiffeq `odeint`, adjoint rows to the torchdiffeq adjoint with the same norm.",
        f"Memory: {d['config'].get('memory')}.",
        "",
    ]
    return _table(head, lines) + notes


def _s4(d: dict) -> list[str]:
    head = ["dtype", "contender", "time ms, median [min–max]", "vs torchdiffeq",
            "batched func calls", "steps (accepted)", "worst error", "median error",
            "worst error / own tol"]
    lines = []
    for r in d["rows"]:
        lead = [r["case"], r["contender"]]
        if not _ok(r):
            lines.append(_status_row(r, len(head), lead))
            continue
        extra = f" (compile {r['compile_s']:.1f} s)" if r.get("compile_s") else ""
        lines.append("| " + " | ".join(lead + [
            _time_cell(r) + extra, _x(_ratio(d, r)), str(r["nfe"]), _steps(r),
            _e(r.get("error_worst")), _e(r.get("error_median")),
            _g(r.get("error_worst_tol_units"))]) + " |")
    notes = [
        "Joint rows take one step size for the whole batch (RMS error norm over all 2000",
        "numbers); per-sample rows give every oscillator its own step size and count one",
        "batched call of `func` per stage of the loop. For per-sample rows, steps are the",
        "loop's iterations (the slowest oscillator) and the median oscillator's (odeflow",
        "per-sample: as its statistics report them). Own tolerance = atol + rtol·|y_ref(10)|.",
        "",
    ]
    return _table(head, lines) + notes


def _lanes(d: dict) -> list[str]:
    head = ["case", "contender", "time ms, median [min–max]", "NFE", "steps (accepted)",
            "µs per step", "per step vs odeflow joint (paired)", "µs/NFE", "bare f µs"]
    lines = []
    for r in d["rows"]:
        lead = [r["case"], r["contender"]]
        if not _ok(r):
            lines.append(_status_row(r, len(head), lead))
            continue
        lines.append("| " + " | ".join(lead + [
            _time_cell(r), str(r["nfe"]), _steps(r), _g(r.get("us_per_step")),
            _x(r.get("per_step_vs_joint_paired")) if r["contender"] != "odeflow joint"
            else "1.00×", _g(r.get("us_per_nfe")), _g(r.get("bare_us"))]) + " |")
    notes = [
        "Steps are the loop's iterations (accepted + rejected) from each solve's statistics;",
        "µs per step = median time / steps. The paired ratio is the median over rounds of",
        "round k's per-sample time per step over round k's joint one. The per-sample solve",
        "has state (1, n) and `options={\"per_sample\": True}`; the joint one state (n,).",
        "",
    ]
    return _table(head, lines) + notes


def _sde(d: dict) -> list[str]:
    head = ["case", "contender", "time ms, median [min–max]", "vs torchsde sdeint (paired)",
            "drift + diffusion calls (bwd)", "f, g calls alone ms", "steps", "accuracy"]
    lines = []
    for r in d["rows"]:
        lead = [r["case"], r["contender"]]
        if not _ok(r):
            lines.append(_status_row(r, len(head), lead))
            continue
        acc = []
        if "strong_error" in r:
            acc.append(f"strong error {_e(r['strong_error'])} (RMS {_e(r['strong_error_rms'])})")
        sp = r.get("same_path_float64") or {}
        if "strong_error" in sp:
            acc.append(f"shared path, float64: strong error {_e(sp['strong_error'])}")
        if "max_abs_dy" in sp and r["contender"] != d.get("reference"):
            acc.append(f"shared path, float64, vs torchsde sdeint: max |Δy| "
                       f"{_e(sp['max_abs_dy'])}"
                       + (f", max rel Δgrad {_e(sp['max_rel_dgrad'])}"
                          if r.get("gradient") == "fwd+bwd" else ""))
        ratio = r.get("vs_torchsde_paired")
        lines.append("| " + " | ".join(lead + [
            _time_cell(r), "1.00×" if r["contender"] == d.get("reference") else _x(ratio),
            f"{r['nfe_drift']} + {r['nfe_diffusion']}" + (
                f" ({r['nfe_bwd']})" if r.get("nfe_bwd") else ""),
            _ms(r.get("fg_floor_s")), str(r.get("steps")), "; ".join(acc) or "–"]) + " |")
    cfg = d["config"]
    notes = [
        f"GBM batch {tuple(cfg['gbm_batch'])}, latent batch {tuple(cfg['latent_batch'])}, "
        f"hidden {cfg['hidden']}, {cfg['output_times']} output times, torchsde "
        f"{cfg.get('versions_extra', {}).get('torchsde')}. Every call builds its own",
        "`BrownianInterval(dt=1e-2, entropy=seed)` (the library's own; the \"torchsde's BM\"",
        "rows drive odeflow with torchsde's, the torchsde row's path). Forward: under",
        "`torch.no_grad`; fwd+bwd: forward plus `autograd.grad(Σ ys², [y0, params])`",
        "(odeflow: backprop through the solver; adjoint rows: their own backward, whose",
        "drift/diffusion calls are the number in brackets). Paired ratio: the median over",
        "rounds of round k's time over round k's torchsde sdeint time. f, g calls alone:",
        "the forward calls of drift and diffusion times their bare costs (median over",
        "rounds of each function called alone on y0, no grad): the part of a forward",
        "solve no solver can remove (fwd+bwd rows add their backward). Strong error:",
        "E|y(1) − y_exact(1)| on the row's own path (W(1) read back from its Brownian",
        "motion). Shared path: a float64 solve, untimed, of each solver on one precomputed",
        "path (W and the space-time integral on the dt grid), against torchsde's sdeint",
        "on it (see `benchmarks/sde.py`). The adjoint rows are references: the",
        "target compares odeflow sdeint with torchsde sdeint.",
        "",
    ]
    from .sde_report import adjoint_lines  # kept apart: this file is long enough

    return _table(head, lines) + notes + adjoint_lines(d)



def _stiff(d: dict) -> list[str]:
    head = ["problem", "contender", "error", "f calls", "Jacobians", "LUs",
            "Newton its (failures)", "steps (accepted)", "time ms, median [min–max]"]
    lines = []
    for r in d["rows"]:
        lead = [r["case"], r["contender"]]
        if not _ok(r):
            lines.append(_status_row(r, len(head), lead))
            continue
        err = _g(r.get("error")) if "error" in r else (
            f"worst {_g(r.get('error_worst'))}, median {_g(r.get('error_median'))}"
            f" ({r.get('error_checked_samples')} samples)" if "error_worst" in r else "–")
        steps = _steps(r)
        if r.get("accepted_median") is not None:
            steps += f"; per sample median {r['accepted_median']:.0f}, max {r['accepted_max']}"
        lines.append("| " + " | ".join(lead + [
            err, str(r["nfe"]), _g(r.get("njac")), _g(r.get("nlu")),
            f"{r['newton_iters']} ({r.get('newton_failures')})" if r.get("newton_iters")
            else "–", steps, _time_cell(r)]) + " |")
    cfg = d["config"]
    probs = "; ".join(f"{k}: atol {v['atol']:g}" for k, v in cfg["problems"].items())
    notes = [
        "Error: max over components of |y − y_ref| / (atol + rtol·|y_ref|) at the end time",
        f"({probs}). References: SciPy Radau at rtol 1e-12 (`stiff-references.json`; for",
        f"the batch, {cfg.get('batch_reference')}). f calls: SciPy's `nfev` (its",
        "Jacobians are the analytic ones, counted apart); bridge rows: calls of the torch",
        "function, SciPy's finite-difference Jacobians included; odeflow: its `nfe`, one",
        "call per autodiff Jacobian included. SciPy reports accepted steps only.",
        "Batch rows: f calls are batched calls; steps are loop iterations.",
        "",
    ]
    return _table(head, lines) + notes


# --------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------
def _mark(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "**missed**")


def targets(res: dict[str, dict]) -> list[str]:
    out = ["## Targets (issues 7 and 4, the stiff issue, and \"One loop\") on this machine", "",
           "Each row cites the run that measured it: the command, the commit of `odeflow/` it",
           "ran (8ca0b2e is the one-loop core), when, and the load average at its start.",
           "Analysis of the misses, with profiles: \"The one-loop rebuild\" below.", "",
           "| workload | target | measured | status | command |", "|---|---|---|---|---|"]

    def add(w, target, measured, ok, *rows):
        out.append(f"| {w} | {target} | {measured} | {_mark(ok)} | {_cite(*rows)} |")

    d = res.get("s4")
    if d:
        for dt in ("float32", "float64"):
            of, to = _row(d, dt, "odeflow per-sample"), _row(d, dt, "torchode per-sample")
            tgt = f"{dt}: per-sample ≤ 0.67× torchode per-sample (eager)"
            if _ok(of) and _ok(to):
                r = _t(of) / _t(to)
                add("S4", tgt, f"{r:.2f}× ({_ms(_t(of))} vs {_ms(_t(to))} ms; "
                    f"{of['nfe']} vs {to['nfe']} batched calls)", r <= 0.67, of, to)
            else:
                add("S4", tgt, "odeflow or torchode per-sample missing", None, of, to)
    d = res.get("lanes")
    if d:
        lim = d["config"].get("target", 1.3)
        for case in dict.fromkeys(r["case"] for r in d["rows"]):
            ps, js = _row(d, case, "odeflow per-sample B=1"), _row(d, case, "odeflow joint")
            tgt = f"{case}: per-sample B=1 ≤ {lim}× joint time per step"
            if _ok(ps) and _ok(js) and ps.get("us_per_step") and js.get("us_per_step"):
                r = ps.get("per_step_vs_joint_paired") or ps["us_per_step"] / js["us_per_step"]
                add("lanes", tgt, f"{r:.2f}× ({ps['us_per_step']:.0f} vs "
                    f"{js['us_per_step']:.0f} µs per step; steps {ps['steps']} vs "
                    f"{js['steps']})", r <= lim, ps, js)
            else:
                add("lanes", tgt, "a row is missing", None, ps, js)
    d = res.get("s2")
    if d:
        cases = sorted({r["case"] for r in d["rows"]}, key=lambda c: [r["case"] for r in
                                                                       d["rows"]].index(c))
        for case in cases:
            of, td = _row(d, case, "odeflow dopri5"), _row(d, case, "torchdiffeq dopri5")
            if not (_ok(of) and _ok(td)):
                add("S2", f"{case}: dopri5 vs torchdiffeq", "odeflow or torchdiffeq missing",
                    None, of, td)
                continue
            us = of["us_per_nfe"]
            add("S2", f"{case}: ≤ 30 µs per evaluation",
                f"{us:.1f} µs (bare f {_g(of.get('bare_us'))} µs; torchdiffeq "
                f"{td['us_per_nfe']:.0f} µs)", us <= 30, of)
            tr = _t(of) / _t(td)
            er = of["error"] / td["error"] if td["error"] else float("inf")
            add("S2", f"{case}: ≤ 0.4× torchdiffeq's time at equal or better error",
                f"{tr:.2f}× time, error {er:.2f}× torchdiffeq's", tr <= 0.4 and er <= 1.0,
                of, td)
            nr = of["nfe"] / td["nfe"]
            # Same method (order 5): error ∝ NFE^-5 along the work–precision line, so
            # error × NFE^5 compares the two points at equal work.
            eq = er * nr ** 5
            add("S2", f"{case}: error per NFE no worse than torchdiffeq",
                f"error {er:.2f}×, NFE {nr:.2f}× ({of['nfe']} vs {td['nfe']}); "
                f"error at equal NFE ≈ {eq:.2f}×", eq <= 1.0, of, td)
    d = res.get("s1")
    if d:
        for B, lim in ((16, 1.3), (4096, 1.1)):
            of = _row(d, f"B={B} fwd", "odeflow")
            td = _row(d, f"B={B} fwd", "torchdiffeq")
            if _ok(of):
                ov = paired_overhead(of)
                add("S1", f"B={B} forward: time ≤ {lim}× bare cost of its evaluations",
                    f"{ov:.2f}× (torchdiffeq {_g(td and paired_overhead(td))}×; "
                    f"{_ms(_t(of))} ms, {of['nfe']} NFE)", ov <= lim, of)
            else:
                add("S1", f"B={B} forward ≤ {lim}× bare", "no odeflow row", None)
    d = res.get("s3")
    if d:
        for kind in ("fwd", "inference"):
            of, td = _row(d, kind, "odeflow direct"), _row(d, kind, "torchdiffeq odeint")
            if _ok(of) and _ok(td):
                r = _t(of) / _t(td)
                add("S3", f"forward ({kind}) ≤ 0.8× torchdiffeq's time",
                    f"{r:.2f}× ({_t(of):.2f} s vs {_t(td):.2f} s)", r <= 0.8, of, td)
        di = _row(d, "fwd+bwd", "odeflow direct")
        ck = _row(d, "fwd+bwd", "odeflow checkpoint")
        td = _row(d, "fwd+bwd", "torchdiffeq odeint")
        if _ok(di) and _ok(ck):
            r = _t(ck) / _t(di)
            add("S3", "checkpoint ≤ 1.3× backprop time", f"{r:.2f}× ({_t(ck):.2f} s vs "
                f"{_t(di):.2f} s)", r <= 1.3, ck, di)
            md, mc = (di.get("memory") or {}).get("median_mb"), (ck.get("memory") or {}).get(
                "median_mb")
            if md and mc is not None:
                add("S3", "checkpoint ≤ 40% of backprop's peak memory",
                    f"{mc / md:.0%} ({mc:.0f} vs {md:.0f} MiB)", mc / md <= 0.4, ck, di)
        if _ok(di) and _ok(td):
            md, mt = (di.get("memory") or {}).get("median_mb"), (td.get("memory") or {}).get(
                "median_mb")
            if md is not None and mt:
                add("S3", "backprop memory ≤ torchdiffeq's backprop",
                    f"{md:.0f} vs {mt:.0f} MiB", md <= mt, di, td)
        for mine, theirs in (("odeflow adjoint", "torchdiffeq adjoint"),
                             ("odeflow adjoint seminorm", "torchdiffeq adjoint seminorm")):
            a, b = _row(d, "fwd+bwd", mine), _row(d, "fwd+bwd", theirs)
            if _ok(a) and _ok(b):
                add("S3", f"{mine}: backward NFE ≤ torchdiffeq's",
                    f"{a['nfe_bwd']} vs {b['nfe_bwd']}", a["nfe_bwd"] <= b["nfe_bwd"], a, b)
    d = res.get("s4")
    if d:
        for dt in ("float32", "float64"):
            of, to = _row(d, dt, "odeflow joint"), _row(d, dt, "torchode joint")
            if _ok(of) and _ok(to):
                r = _t(of) / _t(to)
                add("S4", f"{dt}: joint solve at least as fast as torchode eager joint",
                    f"{r:.2f}× torchode's time ({_ms(_t(of))} vs {_ms(_t(to))} ms)", r <= 1.0,
                    of, to)
    d = res.get("stiff")
    for t in (d or {}).get("targets", []):
        rows = [_row(d, c, k) for c, k in t.get("rows", [])]
        add("stiff", t["target"], t["measured"], t["ok"], *rows)
    d = res.get("sde")
    if d:
        lim = d["config"].get("target", 0.5)
        for case in dict.fromkeys(r["case"] for r in d["rows"]):
            of, ts = _row(d, case, "odeflow sdeint"), _row(d, case, "torchsde sdeint")
            tgt = f"{case}: odeflow sdeint ≤ {lim}× torchsde sdeint"
            if _ok(of) and _ok(ts):
                r = of.get("vs_torchsde_paired") or _t(of) / _t(ts)
                acc = ""
                if "strong_error" in of and "strong_error" in ts:
                    acc = (f"; strong error {_e(of['strong_error'])} vs "
                           f"{_e(ts['strong_error'])}")
                add("SDE", tgt, f"{r:.2f}× ({_ms(_t(of))} vs {_ms(_t(ts))} ms{acc})",
                    r <= lim, of, ts)
            else:
                add("SDE", tgt, "a row is missing", None, of, ts)
    out.append("")
    return out


# --------------------------------------------------------------------------------------
# Before / after the rebuild
# --------------------------------------------------------------------------------------
def before_after(res: dict[str, dict]) -> list[str]:
    """odeflow's rows measured on the core before the rebuild (d70548b) and after it, with
    the same harness back to back (``benchmarks/results/before-d70548b/``)."""
    out = []
    before = load(sorted(glob.glob(str(BEFORE / "*.json"))))
    for w in WORKLOADS:
        if w not in res or w not in before:
            continue
        old = before[w]
        new = res[w]
        lines = []
        for r in new["rows"]:
            if not r["contender"].startswith("odeflow") or not _ok(r):
                continue
            o = _row(old, r["case"], r["contender"])
            if not _ok(o):
                continue
            # The stiff batch rows name no reference: their peer is BDF on the stacked system.
            peer = r.get("reference") or ("" if w != "stiff" else "scipy BDF stacked"
                                          if "batch" in r["case"] else "scipy BDF")
            ref_new = _row(new, r["case"], peer)
            ref_old = _row(old, r["case"], peer)
            rn = _t(r) / _t(ref_new) if _ok(ref_new) else None
            ro = _t(o) / _t(ref_old) if _ok(ref_old) else None
            nfe = f"{o['nfe']} → {r['nfe']}" if o.get("nfe") != r.get("nfe") else str(r["nfe"])
            lines.append("| " + " | ".join([
                r["case"], r["contender"], _time_cell(o), _time_cell(r),
                f"{_t(r) / _t(o):.2f}×", f"{_x(ro)} → {_x(rn)}", nfe]) + " |")
        if not lines:
            continue
        runs = [old] + old.get("_overlays", [])
        out += [f"### {w.upper() if w.startswith('s') and len(w) == 2 else w}", "",
                "Before: " + "; ".join(
                    f"`{str(o['command']).replace(str(REPO) + '/', '')}` at odeflow "
                    f"{o['versions'].get('odeflow_git')}, "
                    f"{o.get('started')}, load {(o.get('loadavg_start') or ['?'])[0]} / "
                    f"{(o.get('loadavg_end') or ['?'])[0]}" for o in runs)
                + ". After: the rows of the table above (same commands).", ""]
        out += _table(["case", "contender", "before ms", "after ms", "after / before",
                       "vs peer, before → after", "NFE"], lines)
    if out:
        out = ["## Before and after the one-loop rebuild", "",
               f"The same harness run on the core before the rebuild ({BEFORE_COMMIT}, a "
               "temporary worktree) and after it, back to back in the same time window "
               "(results in `benchmarks/results/before-d70548b/`). 'vs peer' is each row's "
               "ratio to its reference row measured in the same run (torchdiffeq for S1–S3, "
               "S4's torchdiffeq joint; stiff: SciPy BDF, on the stacked system for the "
               "batch; lanes: odeflow joint): the load moves both alike, so that ratio is "
               "the steadier before/after figure.", ""] + out
    return out


# --------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------
def profiles() -> list[str]:
    out = []
    for f in sorted(RESULTS.glob("profile-*.json")):
        p = json.loads(f.read_text())
        w = f.stem.split("-", 1)[1]
        w = w if w in ("stiff-batch", "lanes") else w.split("-")[0]
        out += [f"### Profile of one {w.upper() if len(w) == 2 else w} odeflow solve: "
                f"{p['what']}", "",
                "```", p["command"], "```", "",
                f"Run {p.get('started')} at odeflow {p['versions'].get('odeflow_git')}, load "
                f"{(p.get('loadavg_start') or ['?'])[0]}, torch threads "
                f"{p['machine'].get('torch_threads')}. "
                f"Wall time {p['wall_s'] * 1e3:.1f} ms per solve, {p.get('nfe')} function "
                f"evaluations"
                + (f", {p['steps']} steps ({p['wall_s'] / p['steps'] * 1e6:.0f} µs per "
                   "step; 'per step' columns below divide by it)" if p.get("steps") else "")
                + (f"; {p['func_forward_share']:.0%} of the wall time is spent inside "
                   "`func`'s forward calls (timed around each call, no profiler running)"
                   if p.get("func_forward_share") is not None else "")
                + ". Top torch operators by self CPU time (torch.profiler):",
                ""]
        ns = p.get("steps")
        if ns:
            out += _table(["operator", "calls", "calls per step", "self CPU ms",
                           "µs per step", "share"],
                          [f"| `{o['name']}` | {o['calls']} | {o['calls'] / ns:.1f} | "
                           f"{o['self_cpu_ms']:.2f} | {o['self_cpu_ms'] * 1e3 / ns:.1f} | "
                           f"{o['share']:.0%} |" for o in p["ops"][:15]])
        else:
            out += _table(["operator", "calls", "self CPU ms", "share"],
                          [f"| `{o['name']}` | {o['calls']} | {o['self_cpu_ms']:.2f} | "
                           f"{o['share']:.0%} |" for o in p["ops"][:12]])
        out += ["Python functions by own time (cProfile, odeflow's files first):", ""]
        if ns:
            out += _table(["function", "calls", "calls per step", "own ms", "own µs per step",
                           "cumulative ms"],
                          [f"| `{o['where']}` | {o['calls']} | {o['calls'] / ns:.1f} | "
                           f"{o['tottime_ms']:.2f} | {o['tottime_ms'] * 1e3 / ns:.1f} | "
                           f"{o['cumtime_ms']:.2f} |" for o in p["python"][:15]])
        else:
            out += _table(["function", "calls", "own ms", "cumulative ms"],
                          [f"| `{o['where']}` | {o['calls']} | {o['tottime_ms']:.2f} | "
                           f"{o['cumtime_ms']:.2f} |" for o in p["python"][:15]])
    if out:
        out = ["## Profiles", ""] + out
    return out


# --------------------------------------------------------------------------------------
def render(files: list[str] | None = None, out: str | None = None) -> Path:
    files = files or sorted(glob.glob(str(RESULTS / "*.json")))
    res = load(files)
    md = [
        "# Benchmarks",
        "",
        "odeflow against torchdiffeq, torchode (eager, and `torch.compile`d where it",
        "compiles) and SciPy, on the four workloads of `BENCHMARK_WORKLOADS.md` (plus stiff",
        "problems and the per-sample clock's cost at B = 1), measured",
        "the same way in the same run. Generated by `python -m benchmarks render` from the",
        "JSON files in `benchmarks/results/`; every table gives the command that produced",
        "it. Method: one warm-up call per contender, then repetitions timed round-robin",
        "(repetition k of every contender before k + 1, the order rotating each round) so",
        "that load from other processes falls on all alike; medians with min–max; NFE =",
        "calls of the user's `func` counted by one wrapper shared by every contender; steps",
        "from each library's statistics (torchdiffeq's from its step callbacks on that",
        "wrapper); the bare cost of `func` re-measured every round. Speed is only ever",
        "measured here, never asserted in tests.",
        "",
        "This machine is shared with other jobs; the load average of each run is printed",
        "with its table. The harness runs with `OMP_WAIT_POLICY=PASSIVE` (unless set): with",
        "OpenMP's default spin-waiting a 2-thread process on an oversubscribed box waits",
        "for descheduled siblings at every parallel region (a 20 ms solve measured 1.1 s).",
        "",
    ]
    md += targets(res)
    for w in WORKLOADS:
        if w not in res:
            md += [f"## {TITLES[w]}", "", f"*No results yet: run `python -m benchmarks {w}`.*",
                   ""]
            continue
        d = res[w]
        md += [f"## {TITLES[w]}", ""] + _meta(d)
        md += {"s1": _s1, "s2": _s2, "s3": _s3, "s4": _s4, "stiff": _stiff,
               "lanes": _lanes, "sde": _sde}[w](d)
    md += before_after(res)
    md += profiles()
    if NOTES.exists():
        md += ["", NOTES.read_text().rstrip(), ""]
    path = Path(out) if out else REPO / "BENCHMARKS.md"
    path.write_text("\n".join(md).rstrip() + "\n")
    return path
