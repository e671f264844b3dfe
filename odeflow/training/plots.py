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

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (rows, name) in enumerate(zip(runs, names, strict=True)):
        ep = [r["epoch"] for r in rows]
        c = colours[i % len(colours)]
        ax.plot(ep, [r["test_acc"] for r in rows], "-o", color=c, ms=3, label=f"{name} test")
        ax.plot(ep, [r["train_acc"] for r in rows], "--", color=c, alpha=0.6, label=f"{name} train")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    acc_path = out / "accuracy.png"
    fig.savefig(acc_path, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (rows, name) in enumerate(zip(runs, names, strict=True)):
        ep = [r["epoch"] for r in rows]
        c = colours[i % len(colours)]
        ax.plot(ep, [r["nfe_f"] for r in rows], "-o", color=c, ms=3, label=f"{name} NFE-F")
        ax.plot(ep, [r["nfe_b"] for r in rows], "--s", color=c, ms=3, label=f"{name} NFE-B")
    ax.set_xlabel("epoch")
    ax.set_ylabel("function evaluations per batch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    nfe_path = out / "nfe.png"
    fig.savefig(nfe_path, dpi=120)
    plt.close(fig)
    return [acc_path, nfe_path]
