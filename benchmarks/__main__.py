"""Command line: ``python -m benchmarks {s1,s2,s3,s4,stiff,lanes,sde,all,render,profile} ...``.

``odeflow bench ...`` calls :func:`main` with the same arguments.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from . import WORKLOADS

# torch (through .common) is imported only after the possible restart below.


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="odeflow vs torchdiffeq vs torchode (vs SciPy), same work, same run.")
    sub = ap.add_subparsers(dest="command", required=True)
    for name in (*WORKLOADS, "all"):
        sp = sub.add_parser(name, help=f"run workload {name}" if name != "all"
                            else "run every workload, one results file each")
        sp.add_argument("--quick", action="store_true",
                        help="a tiny size and few repetitions: checks the harness, "
                             "not the speed")
        sp.add_argument("--out", default=None,
                        help="results file (default benchmarks/results/<workload>.json;"
                             " with 'all', a folder)")
        sp.add_argument("--reps", type=int, default=None,
                        help="timed repetitions (default 7; 5 for s3; fewer with --quick)")
        sp.add_argument("--no-compile", action="store_true",
                        help="skip the torch.compile(torchode) contenders")
        sp.add_argument("--threads", type=int, default=None,
                        help="torch threads (default 2, as the workloads specify; lanes: 1)")
        sp.add_argument("--only", default=None,
                        help="comma-separated substrings: run only contenders whose label"
                             " contains one (e.g. 'torchdiffeq,odeflow direct')")
        sp.add_argument("--no-memory", action="store_true",
                        help="s3: skip the peak-memory subprocesses")
        sp.add_argument("--size", default=None,
                        help="stiff: comma-separated sizes, e.g. 'batch=1000,batch_large=10000';"
                             " s1: the batch sizes, e.g. 'batches=16' or 'batches=16/4096'")
    rp = sub.add_parser("render", help="write BENCHMARKS.md from results files")
    rp.add_argument("files", nargs="*", help="results JSON files "
                    "(default benchmarks/results/*.json)")
    rp.add_argument("--out", default=None, help="markdown file (default BENCHMARKS.md)")
    pp = sub.add_parser("profile", help="torch.profiler + cProfile of one odeflow solve")
    pp.add_argument("workload", choices=("s1", "s2", "s3", "s4", "lanes", "stiff-batch",
                                                   "sde-gbm", "sde-latent", "sde-revheun"))
    pp.add_argument("--out", default=None)
    pp.add_argument("--threads", type=int, default=None)
    pp.add_argument("--gradient", default="direct",
                    help="s3: the gradient mode to profile (direct, adjoint, checkpoint)")
    wp = sub.add_parser("_worker", help=argparse.SUPPRESS)
    wp.add_argument("workload")
    wp.add_argument("spec")
    return ap


def _run_workload(name: str, args, argv: list[str]) -> None:
    from .common import THREADS, finish, header, log, setup_torch, write_results

    mod = importlib.import_module(f".{name}", __package__)
    # A workload may fix its own thread count (lanes: one thread); --threads overrides.
    setup_torch(args.threads or getattr(mod, "THREADS", THREADS))
    # The command that reproduces this file (for 'all', the per-workload command).
    cmd_argv = list(argv)
    if argv and argv[0] == "all":
        cmd_argv = [name] + argv[1:]
        if "--out" in cmd_argv:
            i = cmd_argv.index("--out")
            del cmd_argv[i:i + 2]
    only = [o.strip() for o in args.only.split(",")] if args.only else None
    kwargs = dict(quick=args.quick, reps=args.reps, compile=not args.no_compile, only=only)
    if name == "s3":
        kwargs["memory"] = not args.no_memory
    if name in ("stiff", "s1") and args.size:
        kwargs["sizes"] = dict(kv.split("=", 1) for kv in args.size.split(","))
    payload = header(name, cmd_argv, args.quick, {})
    log(f"{name}: start")
    result = mod.run(**kwargs)
    payload.update(result)
    finish(payload)
    out = args.out
    if argv and argv[0] == "all" and out:
        out = f"{out.rstrip('/')}/{name}{'-quick' if args.quick else ''}.json"
    path = write_results(payload, out)
    log(f"{name}: wrote {path}")
    print(path)


def _reexec_with_passive_omp(argv: list[str]) -> None:
    """Restart this command with ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a policy.

    On a box shared with other jobs, OpenMP's default spin-waiting makes every parallel
    region of a 2-thread process wait for a descheduled sibling: a 20 ms solve was
    measured at 1.1 s. Passive waiting removes that, for every contender alike. The
    policy is read when the OpenMP runtime loads (with torch), hence the restart.
    """
    if "OMP_WAIT_POLICY" in os.environ:
        return
    repo = Path(__file__).resolve().parent.parent
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(repo) + (os.pathsep + path if path else "")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "benchmarks", *argv], env)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.command != "render":
        _reexec_with_passive_omp(argv)
    from .common import setup_torch

    threads = getattr(args, "threads", None)
    if args.command == "profile" and threads is None and args.workload == "lanes":
        threads = 1  # as the lanes workload runs
    setup_torch(threads)
    if args.command == "_worker":
        from .worker import serve

        return serve(args.workload, args.spec)
    if args.command == "render":
        from .render import render

        path = render(args.files, args.out)
        print(path)
        return 0
    if args.command == "profile":
        from .profile import profile

        print(profile(args.workload, args.out, gradient=args.gradient))
        return 0
    names = WORKLOADS if args.command == "all" else (args.command,)
    for name in names:
        _run_workload(name, args, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
