"""S1 at B = 4096, process by process: solve / bare-``func`` time and minor page faults.

S1's B = 4096 ratio moves between processes running the same code (1.05× to 1.4×). This
diagnostic starts ``--procs`` fresh processes; each times odeflow's and torchdiffeq's
forward solve of S1 against the same number of bare ``func`` calls (alternating, medians
of ``--rounds``) and counts the minor page faults of each. A process in which the solve
faults and the bare loop does not is one where glibc trims the heap top between two
evaluations (``brk`` shrinks, seen with ``strace -e brk``) and ``func``'s 1 MiB
intermediates are faulted in again. Run:
``OMP_WAIT_POLICY=PASSIVE python -m benchmarks.s1_heap --procs 6``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _child(rounds: int, threads: int) -> dict:
    import torchdiffeq

    import odeflow

    from .s1 import MLPField

    torch.set_num_threads(threads)
    func = MLPField()
    torch.manual_seed(1)
    y0, t = torch.randn(4096, 2), torch.tensor([0.0, 1.0])
    kw = dict(rtol=1e-6, atol=1e-6, method="dopri5")
    solvers = {"odeflow": odeflow.odeint, "torchdiffeq": torchdiffeq.odeint}
    out, calls = {}, [0]

    def counted(tt, y):
        calls[0] += 1
        return func(tt, y)
    with torch.no_grad():
        for name, odeint in solvers.items():
            calls[0] = 0
            for _ in range(3):
                odeint(counted, y0, t, **kw)
            nfe, t0 = calls[0] // 3, t[0]
            times: dict[str, list[float]] = {"solve": [], "bare": []}
            faults = {"solve": 0, "bare": 0}
            for _ in range(rounds):
                for kind in ("solve", "bare"):
                    f0, s0 = _faults(), time.perf_counter()
                    if kind == "solve":
                        odeint(func, y0, t, **kw)
                    else:
                        for _ in range(nfe):
                            func(t0, y0)
                    times[kind].append(time.perf_counter() - s0)
                    faults[kind] += _faults() - f0
            solve, bare = (statistics.median(times[k]) for k in ("solve", "bare"))
            out[name] = {"nfe": nfe, "solve_ms": solve * 1e3, "bare_ms": bare * 1e3,
                         "ratio": solve / bare, "faults_solve": faults["solve"] / rounds,
                         "faults_bare": faults["bare"] / rounds}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.rounds, args.threads)))
        return
    print("proc  library       ratio  solve ms  bare ms  faults/solve  faults/bare")
    for p in range(args.procs):
        res = json.loads(subprocess.run(
            [sys.executable, "-m", "benchmarks.s1_heap", "--child", "--rounds",
             str(args.rounds), "--threads", str(args.threads)],
            check=True, capture_output=True, text=True).stdout)
        for name, r in res.items():
            print(f"{p:4d}  {name:12s} {r['ratio']:6.3f}  {r['solve_ms']:8.1f} "
                  f"{r['bare_ms']:8.1f}  {r['faults_solve']:12.0f}  {r['faults_bare']:11.0f}")


if __name__ == "__main__":
    main()
