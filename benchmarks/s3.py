"""S3 — a neural-ODE training step: the MNIST study's ODE block.

``ODEfunc(64)``: GroupNorm(32, 64) → ReLU → ConcatConv2d(65 → 64, 3×3, pad 1) → GroupNorm
→ ReLU → ConcatConv2d → GroupNorm, seeded init; state (128, 64, 6, 6) float32, seeded;
t = [0, 1]; dopri5; rtol = atol = 1e-3; loss ``ys[-1].pow(2).sum()``; gradients w.r.t.
the state and all parameters.

Every contender runs in a fresh subprocess of its own (``benchmarks.worker``); the parent
drives them round-robin: per round, the bare costs, then for each contender one
forward+backward, one forward (the training forward: inputs require grad, no backward)
and, for the backprop modes, one inference forward under ``torch.no_grad``. Peak memory
of one forward+backward is measured afterwards in a second fresh subprocess per
contender started with ``MALLOC_MMAP_THRESHOLD_=65536`` (so freed tensors go back to the
OS): after a warm-up step, the kernel's peak counter is reset (``echo 5 >
/proc/self/clear_refs``) and peak RSS (VmHWM) minus RSS before is taken, median of 3.
"""

from __future__ import annotations

import statistics

import torch
from torch import nn

from .common import log, nograd_closure, selected, summarize, vjp_closure
from .contenders import Problem, build
from .worker import Worker

SHAPE = (128, 64, 6, 6)
QUICK_SHAPE = (4, 64, 6, 6)
RTOL = ATOL = 1e-3

# (library, mode, label, also time an inference forward)
CONTENDERS = [
    ("odeflow", "direct", "odeflow direct", True),
    ("odeflow", "adjoint", "odeflow adjoint", False),
    ("odeflow", "seminorm", "odeflow adjoint seminorm", False),
    ("odeflow", "checkpoint", "odeflow checkpoint", False),
    ("torchdiffeq", "odeint", "torchdiffeq odeint", True),
    ("torchdiffeq", "adjoint", "torchdiffeq adjoint", False),
    ("torchdiffeq", "seminorm", "torchdiffeq adjoint seminorm", False),
    ("torchode", "joint", "torchode", True),
    ("torchode", "joint compiled", "torchode compiled", True),
]
# Ratios: each row to the torchdiffeq row of the same gradient strategy.
REFERENCE = {
    "odeflow direct": "torchdiffeq odeint",
    "odeflow checkpoint": "torchdiffeq odeint",
    "odeflow adjoint": "torchdiffeq adjoint",
    "odeflow adjoint seminorm": "torchdiffeq adjoint seminorm",
    "torchdiffeq odeint": "torchdiffeq odeint",
    "torchdiffeq adjoint": "torchdiffeq adjoint",
    "torchdiffeq adjoint seminorm": "torchdiffeq adjoint seminorm",
    "torchode": "torchdiffeq odeint",
    "torchode compiled": "torchdiffeq odeint",
}
KINDS = {"fwd+bwd": "backward", "fwd": "forward", "inference": "none"}


def _norm(dim: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, dim), dim)


class ConcatConv2d(nn.Module):
    """A 3×3 convolution of the input with ``t`` appended as one constant channel."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.conv = nn.Conv2d(dim_in + 1, dim_out, kernel_size=3, stride=1, padding=1)

    def forward(self, t, x):
        tt = torch.ones_like(x[:, :1]) * t
        return self.conv(torch.cat([tt, x], 1))


class ODEfunc(nn.Module):
    """The MNIST study's ODE function (GN → ReLU → ConcatConv → GN → ReLU → ConcatConv → GN)."""

    def __init__(self, dim: int = 64):
        super().__init__()
        self.norm1 = _norm(dim)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = ConcatConv2d(dim, dim)
        self.norm2 = _norm(dim)
        self.conv2 = ConcatConv2d(dim, dim)
        self.norm3 = _norm(dim)

    def forward(self, t, x):
        out = self.relu(self.norm1(x))
        out = self.conv1(t, out)
        out = self.relu(self.norm2(out))
        out = self.conv2(t, out)
        return self.norm3(out)


def make_problem(shape=SHAPE, seed: int = 0) -> tuple[ODEfunc, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    func = ODEfunc(shape[1])
    y0 = torch.randn(*shape, generator=torch.Generator().manual_seed(seed + 1))
    return func, y0, torch.tensor([0.0, 1.0])


def worker_job(spec: dict) -> dict:
    """Built inside the worker process: the runners for each kind, and the bare costs."""
    shape = tuple(spec["shape"])
    func, y0, t = make_problem(shape)
    runs = {}
    kinds = ["fwd+bwd", "fwd"] + (["inference"] if spec.get("inference") else [])
    for kind in kinds:
        p = Problem(func, y0, t, RTOL, ATOL, "dopri5", grad=KINDS[kind])
        runs[kind] = build(spec["library"], spec["mode"], p)
    t0 = torch.tensor(0.0)
    return {"runs": runs,
            "bare": {"f": nograd_closure(func, t0, y0), "f+vjp": vjp_closure(func, t0, y0)}}


def run(quick: bool, reps: int | None, compile: bool = True, memory: bool = True,
        only: list[str] | None = None) -> dict:
    reps = reps or (2 if quick else 5)
    shape = QUICK_SHAPE if quick else SHAPE
    chosen = [c for c in CONTENDERS if selected(c[2], only)]
    outcomes: dict[str, dict] = {}
    workers: dict[str, Worker] = {}
    for lib, mode, label, inference in chosen:
        if "compiled" in mode and not compile:
            outcomes[label] = {"status": "unavailable: skipped (--no-compile)"}
            continue
        spec = {"library": lib, "mode": mode, "shape": list(shape), "inference": inference}
        workers[label] = Worker("s3", spec)
    live: list[str] = []
    for label, w in workers.items():
        hello = w.wait()
        if hello.get("ready"):
            live.append(label)
            outcomes[label] = {"status": "ok", "kinds": {}}
        else:
            reason = hello.get("unavailable") or hello.get("failed")
            prefix = "unavailable" if "unavailable" in hello else "failed"
            outcomes[label] = {"status": f"{prefix}: {reason}"}
            log(f"S3 {label}: {prefix}: {reason}")
            w.close()
    kinds_of = {label: ["fwd+bwd", "fwd"] + (["inference"] if inf else [])
                for _, _, label, inf in chosen}

    def drop(label: str, status: str) -> None:
        outcomes[label]["status"] = status
        live.remove(label)
        workers[label].close()
        log(f"S3 {label}: {status}")

    # Warm-up: one call of each kind; its statistics are the row's.
    for label in list(live):
        for kind in kinds_of[label]:
            ans = workers[label].call("run", kind=kind)
            if "time" not in ans:
                reason = ans.get("unavailable") or ans.get("error") or ans.get("failed")
                drop(label, f"{'unavailable' if 'unavailable' in ans else 'failed'}: "
                            f"{reason}")
                break
            outcomes[label]["kinds"][kind] = {"stats": ans["stats"], "warmup_s": ans["time"],
                                              "times": []}
            log(f"S3 {label} {kind}: warm-up {ans['time']:.2f} s")
    bare = {"f": [], "f+vjp": []}
    for k in range(reps):
        if live:
            for key in bare:
                ans = workers[live[0]].call("bare", kind=key)
                if "time" in ans:
                    bare[key].append(ans["time"])
        order = live[k % len(live):] + live[: k % len(live)] if live else []
        for label in order:
            for kind in kinds_of[label]:
                ans = workers[label].call("run", kind=kind)
                if "time" not in ans:
                    drop(label, f"failed: {ans}")
                    break
                outcomes[label]["kinds"][kind]["times"].append(ans["time"])
        log(f"S3 round {k + 1}/{reps} done")
    for w in workers.values():
        w.close()

    mem: dict[str, dict] = {}
    if memory:
        for label in [lb for lb in outcomes if outcomes[lb]["status"] == "ok"]:
            if "compiled" in label:
                mem[label] = {"status": "not measured (the fresh process would recompile)"}
                continue
            lib, mode, _, _ = next(c for c in chosen if c[2] == label)
            spec = {"library": lib, "mode": mode, "shape": list(shape), "inference": False}
            w = Worker("s3", spec, env={"MALLOC_MMAP_THRESHOLD_": "65536"})
            if w.ready:
                ans = w.call("memory", kind="fwd+bwd", reps=3)
                if "bytes" in ans:
                    mb = [b / 2**20 for b in ans["bytes"]]
                    mem[label] = {"median_mb": statistics.median(mb), "all_mb": mb,
                                  "peak_reset": ans["reset"]}
                    log(f"S3 {label}: peak memory {statistics.median(mb):.1f} MiB")
                else:
                    mem[label] = {"status": str(ans)}
            w.close()

    bare_s = {k: (statistics.median(v) if v else None) for k, v in bare.items()}
    rows = []
    for _, _, label, _ in chosen:
        o = outcomes[label]
        for kind in kinds_of[label]:
            row = {"case": kind, "contender": label, "status": o["status"],
                   "reference": REFERENCE[label]}
            ko = o.get("kinds", {}).get(kind)
            if o["status"] == "ok" and ko and ko["times"]:
                st = ko["stats"]
                row.update({k: v for k, v in st.items()})
                t = summarize(ko["times"])
                row["time"] = t
                row["warmup_s"] = ko["warmup_s"]
                nfe_total = (st.get("nfe") or 0) + (st.get("nfe_bwd") or 0)
                row["nfe_total"] = nfe_total
                b = bare_s["f+vjp" if kind == "fwd+bwd" else "f"]
                if nfe_total:
                    row["us_per_nfe"] = t["median"] / nfe_total * 1e6
                    if b:
                        row["bare_us"] = b * 1e6
                        row["overhead"] = t["median"] / (nfe_total * b)
                if "compiled" in label:
                    row["compile_s"] = ko["warmup_s"] - t["median"]
                if kind == "fwd+bwd" and label in mem:
                    row["memory"] = mem[label]
            elif o["status"] == "ok":
                row["status"] = "failed: no timed repetitions"
            rows.append(row)
    return {
        "config": {"shape": list(shape), "rtol": RTOL, "atol": ATOL, "t": [0.0, 1.0],
                   "method": "dopri5", "dtype": "float32", "reps": reps,
                   "memory": "peak RSS (VmHWM after clear_refs) minus RSS before, one "
                             "fwd+bwd after a warm-up, MALLOC_MMAP_THRESHOLD_=65536, "
                             "median of 3, fresh process per contender"},
        "bare_s": {k: summarize(v) for k, v in bare.items()},
        "rows": rows,
        "reference": REFERENCE,
    }
