"""Seed A's figures from ``metrics.csv``: accuracy per epoch and NFE-F / NFE-B per epoch.

Headless (matplotlib's Agg backend). Several runs are overlaid, one colour per run, so
``odeflow plot runs/odenet runs/odenet-adjoint runs/resnet`` compares them directly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .metrics import read_metrics

__all__ = ["plot_runs"]


def plot_runs(
    run_dirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    labels: Sequence[str] | None = None,
) -> list[Path]:
    """Write ``accuracy.png`` and ``nfe.png`` for one or more runs into ``out_dir``.

    Args:
        run_dirs: run folders (each with a ``metrics.csv``).
        out_dir: where the figures go (created if needed).
        labels: legend names; by default the folder names.

    Returns:
        The paths of the two figures.

    Raises:
        FileNotFoundError: a run folder has no ``metrics.csv``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [read_metrics(d) for d in run_dirs]
    names = list(labels) if labels else [Path(d).resolve().name for d in run_dirs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    acc_path = _overlay(runs, names, colours, out / "accuracy.png", "accuracy",
                        (("test_acc", "-o", "test", 1.0), ("train_acc", "--", "train", 0.6)))
    nfe_path = _overlay(runs, names, colours, out / "nfe.png",
                        "function evaluations per batch",
                        (("nfe_f", "-o", "NFE-F", 1.0), ("nfe_b", "--s", "NFE-B", 1.0)))
    return [acc_path, nfe_path]


def _overlay(runs, names, colours, path: Path, ylabel: str, series) -> Path:
    """One figure: for every run, each (column, style, label, alpha) of ``series`` per epoch."""
    import matplotlib.pyplot as plt  # the caller has chosen the headless backend

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (rows, name) in enumerate(zip(runs, names, strict=True)):
        ep = [r["epoch"] for r in rows]
        c = colours[i % len(colours)]
        for column, style, label, alpha in series:
            ax.plot(ep, [r[column] for r in rows], style, color=c, ms=3, alpha=alpha,
                    label=f"{name} {label}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
