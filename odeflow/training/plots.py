"""Figures from ``metrics.csv``, several runs overlaid (one colour per run), so
``odeflow plot runs/odenet runs/odenet-adjoint runs/resnet`` compares them directly.

Both kinds of run plot: the epoch-based image studies (``epoch``, ``train_acc``,
``test_acc``) give ``accuracy.png``, and the step-based studies (spiral, latent ODE, CNF,
Robertson: ``step``, and losses, NLLs or RMSEs) give ``loss.png``; every run gives
``nfe.png`` (NFE-F and NFE-B). A run lacking a column is drawn without it. Headless
(matplotlib's Agg backend).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .metrics import read_metrics

__all__ = ["plot_runs", "x_column", "loss_columns"]

# words that make a column a loss-like figure of merit (lower is better)
LOSS_WORDS = ("loss", "nll", "rmse")


def x_column(rows: list[dict[str, float]]) -> str:
    """``epoch`` for an epoch-based run, ``step`` for a step-based one.

    Raises:
        ValueError: neither column is there (not an odeflow ``metrics.csv``).
    """
    for name in ("epoch", "step"):
        if rows and name in rows[0]:
            return name
    raise ValueError("metrics.csv has no epoch or step column (not an odeflow run?)")


def loss_columns(rows: list[dict[str, float]]) -> list[str]:
    """The run's loss-like columns (``train_loss``, ``test_nll``, ``test_rmse``, ...)."""
    return [c for c in (rows[0] if rows else {}) if any(w in c for w in LOSS_WORDS)]


def plot_runs(
    run_dirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    labels: Sequence[str] | None = None,
) -> list[Path]:
    """Write ``accuracy.png`` (epoch-based runs), ``loss.png`` (step-based runs) and
    ``nfe.png`` for one or more runs into ``out_dir``.

    Args:
        run_dirs: run folders (each with a ``metrics.csv``).
        out_dir: where the figures go (created if needed).
        labels: legend names; by default the folder names.

    Returns:
        The paths of the figures written.

    Raises:
        FileNotFoundError: a run folder has no ``metrics.csv``.
        ValueError: a ``metrics.csv`` without rows, or without an epoch or step column.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [read_metrics(d) for d in run_dirs]
    for d, rows in zip(run_dirs, runs, strict=True):
        if not rows:
            raise ValueError(f"{Path(d) / 'metrics.csv'} has no rows yet: nothing to plot")
    names = list(labels) if labels else [Path(d).resolve().name for d in run_dirs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    paths = []
    if any("test_acc" in rows[0] for rows in runs):
        paths.append(_overlay(runs, names, colours, out / "accuracy.png", "accuracy",
                              (("test_acc", "-o", "test", 1.0),
                               ("train_acc", "--", "train", 0.6))))
    losses = [c for rows in runs if "test_acc" not in rows[0] for c in loss_columns(rows)]
    if losses:
        series = [(c, "-o" if c.startswith("test") else "--", c, 1.0)
                  for c in dict.fromkeys(losses)]
        paths.append(_overlay(runs, names, colours, out / "loss.png", "loss", series,
                              logy=True))
    paths.append(_overlay(runs, names, colours, out / "nfe.png",
                          "function evaluations per batch",
                          (("nfe_f", "-o", "NFE-F", 1.0), ("nfe_b", "--s", "NFE-B", 1.0),
                           ("nfe_test", ":", "NFE test", 1.0))))
    return paths


def _overlay(runs, names, colours, path: Path, ylabel: str, series, logy: bool = False) -> Path:
    """One figure: for every run, each (column, style, label, alpha) of ``series`` that
    the run has, against its epoch or step."""
    import matplotlib.pyplot as plt  # the caller has chosen the headless backend

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = set()
    for i, (rows, name) in enumerate(zip(runs, names, strict=True)):
        x = x_column(rows)
        xs.add(x)
        c = colours[i % len(colours)]
        for column, style, label, alpha in series:
            if column not in rows[0]:
                continue
            ax.plot([r[x] for r in rows], [r[column] for r in rows], style, color=c, ms=3,
                    alpha=alpha, label=f"{name} {label}")
    if logy and all(line.get_ydata().min() > 0 for line in ax.get_lines()):
        ax.set_yscale("log")
    ax.set_xlabel(" / ".join(sorted(xs)))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
