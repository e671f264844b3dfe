"""Smoke test of the benchmark harness: each workload at its --quick size writes valid JSON
and the renderer turns the files into tables. Speed is never asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torchdiffeq")
pytest.importorskip("torchode")
pytest.importorskip("scipy")
pytest.importorskip("torchsde")

REPO = Path(__file__).resolve().parent.parent

# A few contenders per workload keep the test short; every code path still runs
# (in-process round-robin for S1, S2, S4; a subprocess worker and peak memory for S3).
RUNS = {
    "s1": "odeflow direct,torchdiffeq odeint,torchode",
    "s2": "odeflow dopri5,torchdiffeq dopri5,torchode dopri5,scipy RK45",
    "s3": "torchdiffeq odeint",
    "s4": "odeflow joint,torchdiffeq joint,torchode per-sample",
    "lanes": "odeflow,torchdiffeq joint",
    "sde": "odeflow sdeint,torchsde sdeint",
}


@pytest.fixture
def bench_main(monkeypatch):
    """``benchmarks.main`` run in this process (no restart, threads restored after)."""
    import torch

    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.setenv("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.delenv("BENCH_THREADS", raising=False)
    threads = torch.get_num_threads()
    from benchmarks.__main__ import main

    yield main
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_quick_runs_write_json_and_render(tmp_path, bench_main, capsys):
    files = []
    for workload, only in RUNS.items():
        out = tmp_path / f"{workload}.json"
        rc = bench_main([workload, "--quick", "--reps", "1", "--no-compile", "--only", only,
                         "--out", str(out)])
        assert rc == 0
        data = json.loads(out.read_text())
        assert data["workload"] == workload and data["quick"] is True
        # lanes runs on one thread (the workload's own setting), the others on two.
        assert data["versions"]["torch"] and data["machine"]["torch_threads"] == (
            1 if workload == "lanes" else 2)
        assert data["command"].startswith(f"python -m benchmarks {workload}")
        rows = data["rows"]
        assert rows, workload
        ok = [r for r in rows if r["status"] == "ok"]
        # torchdiffeq (torchsde for sde) always runs; odeflow may be recorded as
        # unavailable, with a reason.
        peer = "torchsde" if workload == "sde" else "torchdiffeq"
        assert any(r["contender"].startswith(peer) for r in ok), rows
        for r in rows:
            assert r["status"] == "ok" or r["status"].startswith("unavailable:"), r
        for r in ok:
            assert r["time"]["n"] >= 1 and r["time"]["median"] > 0
            assert r["nfe"] > 0
        if workload == "s3":
            mem = [r for r in ok if r["case"] == "fwd+bwd" and "memory" in r]
            assert mem and all(r["memory"]["median_mb"] >= 0 for r in mem)
        if workload == "sde":
            # Equal accuracy on the shared path: the same numbers as torchsde's sdeint.
            checked = [r for r in ok if "max_abs_dy" in r.get("same_path_float64", {})]
            assert checked and all(r["same_path_float64"]["max_abs_dy"] < 1e-8
                                   for r in checked if "adjoint" not in r["contender"])
            gbm = [r for r in ok if r["case"].startswith("gbm")]
            assert gbm and all(r["strong_error"] < 1e-2 for r in gbm)
        if workload in ("s2", "s4"):
            key = "error" if workload == "s2" else "error_worst"
            assert all(r[key] < 1.0 for r in ok)
        files.append(str(out))
    md = tmp_path / "BENCHMARKS.md"
    assert bench_main(["render", *files, "--out", str(md)]) == 0
    text = md.read_text()
    for title in ("## S1", "## S2", "## S3", "## S4", "## Lanes", "## SDE", "## Targets"):
        assert title in text
    assert "python -m benchmarks s3 --quick" in text


def test_cli_help_runs_without_torch_restart():
    """``python -m benchmarks --help`` parses before anything heavy is imported."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for word in ("s1", "s4", "render", "profile"):
        assert word in proc.stdout


def test_render_lays_partial_runs_over_the_full_one(tmp_path):
    """A newer ``--only`` run replaces the rows it measured; the rest stay, and each row
    cites the run that measured it."""
    from benchmarks.render import load, targets

    def row(case, contender, median):
        return {"case": case, "contender": contender, "status": "ok", "nfe": 10,
                "time": {"median": median, "min": median, "max": median, "n": 1,
                         "all": [median]}}

    def payload(argv, finished, rows, git):
        return {"workload": "s4", "command": "python -m benchmarks " + " ".join(argv),
                "argv": argv, "quick": False, "started": finished, "finished": finished,
                "loadavg_start": [1.0], "loadavg_end": [1.0], "machine": {},
                "versions": {"odeflow_git": git}, "config": {}, "rows": rows}

    full = payload(["s4"], "2026-01-01T00:00:00Z",
                   [row("float64", "odeflow per-sample", 0.3),
                    row("float64", "torchode per-sample", 0.2),
                    row("float64", "odeflow joint", 0.1)], "aaaaaaa")
    part = payload(["s4", "--only", "per-sample"], "2026-01-02T00:00:00Z",
                   [row("float64", "odeflow per-sample", 0.1),
                    row("float64", "torchode per-sample", 0.2)], "bbbbbbb")
    files = []
    for name, d in (("a.json", full), ("b.json", part)):
        (tmp_path / name).write_text(json.dumps(d))
        files.append(str(tmp_path / name))
    d = load(files)["s4"]
    by = {r["contender"]: r for r in d["rows"]}
    assert by["odeflow per-sample"]["time"]["median"] == 0.1
    assert by["odeflow per-sample"]["_src"]["git"] == "bbbbbbb"
    assert by["odeflow joint"]["_src"]["git"] == "aaaaaaa"
    text = "\n".join(targets({"s4": d}))
    assert "per-sample ≤ 0.67× torchode per-sample" in text and "0.50×" in text
    assert "--only per-sample" in text
