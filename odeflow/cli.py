"""The ``odeflow`` command: ``demo``, ``train <experiment>``, ``plot <run>...``, ``bench``.

Examples::

    odeflow demo
    odeflow train fashion-mnist --network odenet --adjoint True --nepochs 5 --save runs/f-adj
    odeflow train mnist --network resnet --resume runs/mnist-resnet
    torchrun --nproc_per_node=2 -m odeflow.cli train digits --nepochs 3
    odeflow train robertson --method kvaerno5    # a stiff neural ODE; dopri5 side by side
    odeflow plot runs/f-adj runs/f-direct --out runs/compare
    odeflow bench --help
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

USAGE = """usage: odeflow <command> [args]

commands:
  demo                      ODE-Net on scikit-learn's digits (< 1 min on a CPU)
  train EXPERIMENT [flags]  train one of: {experiments} (odeflow train EXPERIMENT --help)
  plot RUN [RUN ...]        accuracy and NFE figures, several runs overlaid
  bench [args]              the benchmarks of a source checkout (benchmarks/)
"""


def _usage() -> str:
    from .experiments import EXPERIMENTS

    return USAGE.format(experiments=", ".join(EXPERIMENTS))


def _train(argv: list[str]) -> int:
    from .experiments import EXPERIMENTS, train

    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: odeflow train {{{','.join(EXPERIMENTS)}}} [flags]")
        print("\nRun `odeflow train EXPERIMENT --help` for the flags.")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in EXPERIMENTS:
        print(f"odeflow train: unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
        return 2
    train(name, rest)
    return 0


def _plot(argv: list[str]) -> int:
    from .training.plots import plot_runs

    parser = argparse.ArgumentParser(
        prog="odeflow plot", description="Accuracy and NFE-F/NFE-B per epoch, runs overlaid."
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders with metrics.csv")
    parser.add_argument("--out", default=None, help="output folder (default: the single RUN)")
    parser.add_argument("--labels", nargs="*", default=None, help="legend names, one per RUN")
    args = parser.parse_args(argv)
    if args.labels and len(args.labels) != len(args.runs):
        parser.error("--labels needs one name per RUN")
    out = args.out or (args.runs[0] if len(args.runs) == 1 else "runs/compare")
    try:
        paths = plot_runs(args.runs, out, labels=args.labels)
    except FileNotFoundError as exc:
        parser.error(str(exc))
    for p in paths:
        print(p)
    return 0


def repo_root() -> Path:
    """The folder holding the ``odeflow`` package (a source checkout's root)."""
    return Path(__file__).resolve().parent.parent


def _bench(argv: list[str]) -> int:
    root = repo_root()
    if not (root / "benchmarks" / "__main__.py").is_file():
        print(
            f"odeflow bench: no benchmarks/__main__.py in {root}. The benchmarks ship with a "
            "source checkout of odeflow, not with the installed package; run this command "
            "from an editable install (pip install -e .) of the repository.",
            file=sys.stderr,
        )
        return 2
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module = importlib.import_module("benchmarks.__main__")
    if not hasattr(module, "main"):
        print("odeflow bench: benchmarks/__main__.py defines no main(argv)", file=sys.stderr)
        return 2
    result = module.main(argv)
    return int(result) if isinstance(result, int) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``odeflow`` command. Returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    try:
        if command == "demo":
            from .experiments.demo import main as demo_main

            demo_main(rest)
            return 0
        if command == "train":
            return _train(rest)
        if command == "plot":
            return _plot(rest)
        if command == "bench":
            return _bench(rest)
    except Exception as exc:
        if not _is_user_error(exc):
            raise
        # A mistake the user can fix (bad run folder, corrupt data, clashing flags):
        # the message, not a traceback.
        print(f"odeflow {command}: error: {exc}", file=sys.stderr)
        return 2
    print(f"odeflow: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
    return 2


def _is_user_error(exc: BaseException) -> bool:
    """True for :data:`odeflow.training.USER_ERRORS` (imported only when needed: the
    training layer pulls in torch)."""
    try:
        from .training.errors import USER_ERRORS
    except ImportError:
        return False
    return isinstance(exc, USER_ERRORS)


if __name__ == "__main__":
    sys.exit(main())
