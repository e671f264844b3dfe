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

REPO = Path(__file__).resolve().parent.parent

# A few contenders per workload keep the test short; every code path still runs
# (in-process round-robin for S1, S2, S4; a subprocess worker and peak memory for S3).
RUNS = {
    "s1": "odeflow direct,torchdiffeq odeint,torchode",
    "s2": "odeflow dopri5,torchdiffeq dopri5,torchode dopri5,scipy RK45",
    "s3": "torchdiffeq odeint",
    "s4": "odeflow joint,torchdiffeq joint,torchode per-sample",
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
        assert data["versions"]["torch"] and data["machine"]["torch_threads"] == 2
        assert data["command"].startswith(f"python -m benchmarks {workload}")
        rows = data["rows"]
        assert rows, workload
        ok = [r for r in rows if r["status"] == "ok"]
        # torchdiffeq always runs; odeflow may be recorded as unavailable, with a reason.
        assert any(r["contender"].startswith("torchdiffeq") for r in ok), rows
        for r in rows:
            assert r["status"] == "ok" or r["status"].startswith("unavailable:"), r
        for r in ok:
            assert r["time"]["n"] >= 1 and r["time"]["median"] > 0
            assert r["nfe"] > 0
        if workload == "s3":
            mem = [r for r in ok if r["case"] == "fwd+bwd" and "memory" in r]
            assert mem and all(r["memory"]["median_mb"] >= 0 for r in mem)
        if workload in ("s2", "s4"):
            key = "error" if workload == "s2" else "error_worst"
            assert all(r[key] < 1.0 for r in ok)
        files.append(str(out))
    md = tmp_path / "BENCHMARKS.md"
    assert bench_main(["render", *files, "--out", str(md)]) == 0
    text = md.read_text()
    for title in ("## S1", "## S2", "## S3", "## S4", "## Targets"):
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
