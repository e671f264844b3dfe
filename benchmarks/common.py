"""Shared helpers: the counting wrapper, timing, round-robin repetitions, machine facts.

Every contender of every workload goes through the same pieces here, so that a
difference in the tables is a difference between the libraries and not between the
ways they were measured.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

THREADS = 2
REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


class Unavailable(Exception):
    """A contender cannot run here (library missing, mode not implemented); says why."""


def setup_torch(threads: int | None = None) -> None:
    """The one thread setting every process of the harness uses (workers inherit it)."""
    if threads is None:
        threads = int(os.environ.get("BENCH_THREADS", THREADS))
    os.environ["BENCH_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def log(msg: str) -> None:
    """Progress on stderr, so that stdout stays machine-readable for the workers."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Counting the user's function
# --------------------------------------------------------------------------------------
class CountingFunc(nn.Module):
    """Wraps the user's ``func(t, y)`` and counts its calls; the same for every contender.

    It is an ``nn.Module`` holding ``func`` as a submodule, so the adjoints of odeflow and
    torchdiffeq find the parameters through it.
    """

    def __init__(self, func: nn.Module):
        super().__init__()
        self.func = func
        self.reset()

    def reset(self) -> None:
        self.nfe = 0
        self.steps = 0
        self.accepted = 0
        self.steps_adjoint = 0
        self.accepted_adjoint = 0

    def forward(self, t, y):
        self.nfe += 1
        return self.func(t, y)


class StepCountingFunc(CountingFunc):
    """:class:`CountingFunc` plus torchdiffeq's step callbacks, for torchdiffeq only.

    torchdiffeq returns no statistics, so its steps are counted by its callbacks. It calls
    a no-op callback in their place when they are absent, so defining them costs it
    nothing extra. Other libraries get the plain wrapper: odeflow honours the same
    callbacks (building time tensors for them), which would charge it for our counting.
    """

    # torchdiffeq's callbacks (called with t0, y0, dt).
    def callback_step(self, t0, y0, dt):
        self.steps += 1

    def callback_accept_step(self, t0, y0, dt):
        self.accepted += 1

    def callback_step_adjoint(self, t0, y0, dt):
        self.steps_adjoint += 1

    def callback_accept_step_adjoint(self, t0, y0, dt):
        self.accepted_adjoint += 1


def selected(label: str, only: list[str] | None) -> bool:
    """Whether a contender's label matches the ``--only`` filter (any substring)."""
    return not only or any(o in label for o in only)


def params_of(func: nn.Module) -> list[torch.Tensor]:
    return [p for p in func.parameters() if p.requires_grad]


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------
def summarize(xs: list[float]) -> dict:
    """Median with min–max of a list of seconds."""
    if not xs:
        return {"median": None, "min": None, "max": None, "n": 0, "all": []}
    return {
        "median": statistics.median(xs),
        "min": min(xs),
        "max": max(xs),
        "n": len(xs),
        "all": list(xs),
    }


def bare_cost(fn: Callable[[], object], budget_s: float = 0.03, batches: int = 5) -> float:
    """Seconds for one call of ``fn``: median over ``batches`` batches of repeated calls.

    The batch length is chosen so that all batches together take about ``budget_s``.
    """
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    n = int(min(max(budget_s / batches / one, 1), 2000))
    per = []
    for _ in range(batches):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        per.append((time.perf_counter() - t0) / n)
    return statistics.median(per)


def vjp_closure(func: nn.Module, t, y: torch.Tensor) -> Callable[[], object]:
    """One call of ``func`` plus its vector–Jacobian product w.r.t. input and parameters."""
    params = params_of(func)

    def call():
        yy = y.detach().requires_grad_(True)
        with torch.enable_grad():
            out = func(t, yy)
            return torch.autograd.grad(out, [yy, *params], torch.ones_like(out),
                                       allow_unused=True)

    return call


def nograd_closure(func: nn.Module, t, y: torch.Tensor) -> Callable[[], object]:
    def call():
        with torch.no_grad():
            return func(t, y)

    return call


def describe_error(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    first = msg[0] if msg else ""
    return f"{type(exc).__name__}: {first}"[:300]


def round_robin(
    runners: dict[str, Callable[[], dict]],
    reps: int,
    bare: dict[str, Callable[[], object]] | None = None,
    label: str = "",
) -> tuple[dict[str, dict], dict[str, list[float]]]:
    """Time every runner ``reps`` times, round-robin, after one warm-up call each.

    Repetition k of every runner runs before repetition k + 1 of any, and the order
    within a round rotates, so that load from other processes falls on all alike. The
    bare-function costs in ``bare`` are re-measured at the start of every round.

    Returns ``(outcomes, bare_costs)``: for each runner a dict with ``status`` ("ok",
    "unavailable: ...", or "failed: ..."), ``times`` (seconds), ``stats`` (what the
    warm-up call returned), ``warmup_s``; and for each bare key the list of per-round
    costs in seconds.
    """
    bare = bare or {}
    outcomes: dict[str, dict] = {}
    live: list[str] = []
    for name, run in runners.items():
        gc.collect()
        t0 = time.perf_counter()
        try:
            stats = run()
        except Unavailable as e:
            outcomes[name] = {"status": f"unavailable: {e}"}
            log(f"{label} {name}: unavailable: {e}")
            continue
        except NotImplementedError as e:
            outcomes[name] = {"status": f"unavailable: NotImplementedError: {e}"}
            log(f"{label} {name}: not implemented: {e}")
            continue
        except Exception as e:  # a failing contender must not stop the others
            outcomes[name] = {"status": f"failed: {describe_error(e)}"}
            log(f"{label} {name}: FAILED: {describe_error(e)}")
            continue
        warm = time.perf_counter() - t0
        outcomes[name] = {"status": "ok", "times": [], "stats": stats, "warmup_s": warm}
        live.append(name)
        log(f"{label} {name}: warm-up {warm * 1e3:.1f} ms")
    costs: dict[str, list[float]] = {k: [] for k in bare}
    for k in range(reps):
        for key, fn in bare.items():
            costs[key].append(bare_cost(fn))
        order = live[k % len(live):] + live[: k % len(live)] if live else []
        for name in order:
            gc.collect()
            t0 = time.perf_counter()
            try:
                stats = runners[name]()
            except Exception as e:
                outcomes[name]["status"] = f"failed: {describe_error(e)}"
                live.remove(name)
                continue
            outcomes[name]["times"].append(time.perf_counter() - t0)
            if stats.get("nfe") != outcomes[name]["stats"].get("nfe"):
                outcomes[name].setdefault("notes", []).append(
                    f"nfe changed between calls: {outcomes[name]['stats'].get('nfe')}"
                    f" -> {stats.get('nfe')}")
    return outcomes, costs


# --------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------
def make_row(case: str, contender: str, outcome: dict, *, bare_s: float | None = None,
             **extra) -> dict:
    """One table row from a round-robin outcome: time, NFE, steps, µs/NFE, overhead."""
    row = {"case": case, "contender": contender, "status": outcome["status"]}
    row.update(extra)
    if outcome["status"] != "ok":
        return row
    st = dict(outcome["stats"])
    st.pop("y_end", None)
    time_s = summarize(outcome["times"])
    row["time"] = time_s
    row["warmup_s"] = outcome.get("warmup_s")
    row.update({k: v for k, v in st.items() if not k.startswith("_")})
    nfe_total = (st.get("nfe") or 0) + (st.get("nfe_bwd") or 0)
    row["nfe_total"] = nfe_total
    if time_s["median"] is not None and nfe_total:
        row["us_per_nfe"] = time_s["median"] / nfe_total * 1e6
        if bare_s:
            row["bare_us"] = bare_s * 1e6
            row["overhead"] = time_s["median"] / (nfe_total * bare_s)
    if outcome.get("notes"):
        row["notes"] = outcome["notes"]
    return row


# --------------------------------------------------------------------------------------
# Machine and versions
# --------------------------------------------------------------------------------------
def _version(mod: str) -> str:
    try:
        m = __import__(mod)
    except Exception as e:  # absent or broken: say which
        return f"missing ({type(e).__name__})"
    return str(getattr(m, "__version__", "unknown"))


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("odeflow", "torchdiffeq", "torchode", "scipy", "numpy"):
        out[mod] = _version(mod)
    try:
        # The checkout odeflow was imported from (it may be another worktree's, e.g. the
        # core before a change, run under this harness), not necessarily this one.
        import odeflow

        root = Path(odeflow.__file__).resolve().parent.parent
        out["odeflow_git"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
            text=True, timeout=10).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "odeflow"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if dirty:
            out["odeflow_git"] += " (odeflow/ has uncommitted changes)"
        if root != REPO:
            out["odeflow_path"] = str(root)
    except Exception:
        out["odeflow_git"] = "unknown"
    return out


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gb = None
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": affinity,
        "memory_gb": round(mem_gb, 1) if mem_gb else None,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
        "hostname": platform.node(),
    }


def loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_results(payload: dict, out: str | None) -> Path:
    """Write a results file atomically; default ``benchmarks/results/<workload>.json``."""
    if out is None:
        suffix = "-quick" if payload.get("quick") else ""
        path = RESULTS / f"{payload['workload']}{suffix}.json"
    else:
        path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=_json_default) + "\n")
    os.replace(tmp, path)
    return path


def _json_default(o):
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def header(workload: str, argv: list[str], quick: bool, config: dict) -> dict:
    """The common head of every results file."""
    return {
        "workload": workload,
        "command": "python -m benchmarks " + " ".join(argv),
        "argv": list(argv),
        "quick": quick,
        "started": now(),
        "loadavg_start": loadavg(),
        "machine": machine(),
        "versions": versions(),
        "config": config,
    }


def finish(payload: dict) -> dict:
    payload["finished"] = now()
    payload["loadavg_end"] = loadavg()
    return payload
