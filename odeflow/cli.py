"""The ``odeflow`` command: ``demo``, ``train <experiment>``, ``plot <run>...``, ``bench``.

Examples::

    odeflow demo
    odeflow train fashion-mnist --network odenet --adjoint True --nepochs 5 --save runs/f-adj
    odeflow train mnist --network resnet --resume runs/mnist-resnet
    torchrun --nproc_per_node=2 -m odeflow.cli train digits --nepochs 3
    odeflow train robertson --method kvaerno5    # a stiff neural ODE; dopri5 side by side
    odeflow plot runs/f-adj runs/f-direct --out runs/compare
    odeflow bench --help

This module imports only the standard library: ``--help``, ``--version`` and the study
names cost nothing; a command imports what it needs (torch, the study) when it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

USAGE = """usage: odeflow <command> [args]    (odeflow --version)

commands:
  demo                      ODE-Net on scikit-learn's digits (< 1 min on a CPU)
  train EXPERIMENT [flags]  train one of: {experiments} (odeflow train EXPERIMENT --help)
  plot RUN [RUN ...]        accuracy and NFE figures, several runs overlaid
  bench [args]              the benchmarks of a source checkout (benchmarks/)
"""


def _usage() -> str:
    from .experiments import STUDIES  # names only: no study (nor torch) is imported

    return USAGE.format(experiments=", ".join(STUDIES))


def _version() -> str:
    from . import __version__

    return f"odeflow {__version__}"


def _train(argv: list[str]) -> int:
    from .experiments import STUDIES, train

    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: odeflow train {{{','.join(STUDIES)}}} [flags]")
        print("\nRun `odeflow train EXPERIMENT --help` for the flags.")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in STUDIES:
        print(f"odeflow train: unknown experiment {name!r}; choose from {', '.join(STUDIES)}",
              file=sys.stderr)
        return 2
    train(name, rest)
    return 0


def _plot(argv: list[str]) -> int:
    from .training.plots import plot_runs

    parser = argparse.ArgumentParser(
        prog="odeflow plot",
        description="Accuracy (or loss) and NFE-F/NFE-B per epoch or step, runs overlaid.",
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
    except (FileNotFoundError, ValueError) as exc:
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
    make_parser = getattr(module, "_parser", None)
    if callable(make_parser) and not getattr(make_parser, "_odeflow_bench", False):
        # its parser calls itself `python -m benchmarks` and lists the internal `_worker`
        # command; here it answers as `odeflow bench`, with the public commands only
        def renamed() -> argparse.ArgumentParser:
            return _public(make_parser(), "odeflow bench")

        renamed._odeflow_bench = True  # type: ignore[attr-defined]
        module._parser = renamed
    result = module.main(argv)
    return int(result) if isinstance(result, int) else 0


def _public(parser: argparse.ArgumentParser, prog: str) -> argparse.ArgumentParser:
    """``parser`` named ``prog``, its subcommands ``prog NAME``, and the subcommands whose
    name starts with ``_`` (internal) left out of the usage and help."""
    parser.prog = prog
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            public = [name for name in action.choices if not name.startswith("_")]
            action.metavar = "{" + ",".join(public) + "}"
            action._choices_actions = [
                a for a in action._choices_actions if not a.dest.startswith("_")
            ]
            for name, sub in action.choices.items():
                sub.prog = f"{prog} {name}"
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``odeflow`` command. Returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(_version())
        return 0
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
    except BrokenPipeError:
        # the reader of the output went away (`odeflow ... | head`): stop quietly, and keep
        # Python from failing again when it flushes stdout at exit
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        if not _is_user_error(exc):
            raise
        # A mistake the user can fix (bad run folder, corrupt data, clashing flags):
        # the message, not a traceback.
        where = f"{command} {rest[0]}" if command == "train" and rest else command
        print(f"odeflow {where}: error: {exc}", file=sys.stderr)
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
