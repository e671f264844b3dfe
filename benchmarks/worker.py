"""Contenders in fresh processes, driven one JSON line at a time.

The parent starts ``python -m benchmarks _worker <workload> <spec-json>``; the child builds
the contender with ``benchmarks.<workload>.worker_job(spec)`` and answers commands read
from stdin, one JSON line each, with one line on stdout prefixed by ``@@``:

- ``{"op": "run", "kind": K}`` → ``{"time": s, "stats": {...}}`` (one timed call)
- ``{"op": "bare", "kind": K}`` → ``{"time": s}`` (the bare-function cost)
- ``{"op": "memory", "kind": K, "reps": 3}`` → ``{"bytes": [...], "reset": bool}``
- ``{"op": "quit"}``

Keeping one process per contender alive lets the parent time them round-robin while
each still runs in a fresh interpreter of its own.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import select
import subprocess
import sys
import time

from .common import REPO, Unavailable, bare_cost, describe_error

PREFIX = "@@"


def _send(obj: dict) -> None:
    sys.stdout.write(PREFIX + json.dumps(obj, default=_plain) + "\n")
    sys.stdout.flush()


def _plain(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_rss_delta(fn) -> tuple[int, bool]:
    """Peak RSS during ``fn()`` minus RSS before it, in bytes; and whether the peak was reset.

    The kernel's high-water mark (VmHWM) is reset to the current RSS by writing 5 to
    ``/proc/self/clear_refs``; where that is not allowed the figure is the process's peak
    so far, which the warm-up call has already set, so it is reported as not reset.
    """
    gc.collect()
    reset = True
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        reset = False
    before = _status_kb("VmRSS")
    out = fn()
    peak = _status_kb("VmHWM")
    del out
    return (peak - before) * 1024, reset


def _clean(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if k != "y_end"}


def serve(workload: str, spec_json: str) -> int:
    """The child side: build the job, then answer commands until ``quit`` or EOF."""
    spec = json.loads(spec_json)
    try:
        mod = importlib.import_module(f"benchmarks.{workload}")
        job = mod.worker_job(spec)
    except Unavailable as e:
        _send({"unavailable": str(e)})
        return 0
    except Exception as e:
        _send({"failed": describe_error(e)})
        return 0
    _send({"ready": True, "pid": os.getpid()})
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        op = cmd.get("op")
        try:
            if op == "quit":
                break
            if op == "run":
                fn = job["runs"][cmd["kind"]]
                gc.collect()
                t0 = time.perf_counter()
                stats = fn()
                dt = time.perf_counter() - t0
                _send({"time": dt, "stats": _clean(stats)})
            elif op == "bare":
                _send({"time": bare_cost(job["bare"][cmd["kind"]], budget_s=0.1)})
            elif op == "memory":
                fn = job["runs"][cmd["kind"]]
                fn()  # warm-up step
                res = [peak_rss_delta(fn) for _ in range(int(cmd.get("reps", 3)))]
                _send({"bytes": [r[0] for r in res], "reset": all(r[1] for r in res)})
            else:
                _send({"error": f"unknown op {op!r}"})
        except NotImplementedError as e:
            _send({"unavailable": f"NotImplementedError: {e}"})
        except Unavailable as e:
            _send({"unavailable": str(e)})
        except Exception as e:
            _send({"error": describe_error(e)})
    return 0


class Worker:
    """The parent side: one contender in a fresh ``python -m benchmarks _worker`` process."""

    def __init__(self, workload: str, spec: dict, env: dict | None = None,
                 timeout_s: float = 600.0):
        self.timeout_s = timeout_s
        full_env = dict(os.environ)
        full_env.update(env or {})
        path = full_env.get("PYTHONPATH")
        full_env["PYTHONPATH"] = str(REPO) + (os.pathsep + path if path else "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks", "_worker", workload, json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=full_env,
            cwd=REPO)
        self._hello: dict | None = None

    def wait(self) -> dict:
        """The child's first answer: ``ready``, ``unavailable`` or ``failed``."""
        if self._hello is None:
            self._hello = self._read()
        return self._hello

    @property
    def ready(self) -> bool:
        return bool(self.wait().get("ready"))

    def _read(self) -> dict:
        deadline = time.monotonic() + self.timeout_s
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            if not ready:
                self.proc.kill()
                self.proc.wait()
                return {"failed": f"no answer within {self.timeout_s:.0f} s (killed)"}
            line = self.proc.stdout.readline()
            if not line:
                return {"failed": f"worker exited (code {self.proc.poll()})"}
            if line.startswith(PREFIX):
                return json.loads(line[len(PREFIX):])

    def call(self, op: str, **kw) -> dict:
        if self.proc.poll() is not None:
            return {"failed": f"worker exited (code {self.proc.returncode})"}
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
