"""Iteration-based studies (spiral, latent ODE, CNF): one shared driver and config base.

The MNIST study counts epochs over a dataset; these studies count optimisation steps on
batches drawn afresh, and evaluate every ``eval_every`` steps. :class:`StepConfig` holds the
flags they share; a study subclasses it, adds its own fields and provides a
:class:`StepTask`; :func:`run_steps` writes the run folder:

- ``config.json``: every flag;
- ``metrics.csv``: one row per evaluation, the study's columns (:attr:`StepTask.fields`);
- ``last.pt`` / ``best.pt``: checkpoints (``weights_only`` loadable, atomic) after each
  evaluation, ``best.pt`` where :attr:`StepTask.best_key` was lowest;
- the study's plots, from :attr:`StepTask.plot`.

:func:`start_run` opens the run: every flag checked, the folder chosen (``--resume``,
``--save``, a temporary folder for a dry run, else ``runs/NAME`` or the next free name)
and locked while the run writes to it; a run that fails before its first checkpoint
leaves no folder behind that it created.

Exact resume: every random draw of step ``k`` comes from :func:`step_generator`
(seeded by ``seed`` and ``k`` alone), and checkpoints are written at evaluation
boundaries, so ``--resume RUN`` replays the remaining steps bit for bit (same machine and
thread count).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from ..training import (
    atomic_save,
    choose_run_dir,
    find_resume_checkpoint,
    is_half_made,
    load_model_state,
    prepare_run_dir,
    progress_bar,
    refuse_existing_run,
    remove_unfinished,
    restore_rng,
    run_lock,
    set_aside,
)
from ..training.checkpoint import make_checkpoint
from .config import NON_NEGATIVE, POSITIVE, RunFlags, at_least, check_config, opt, parse_run_config
from .epochs import resolve_gradient

__all__ = [
    "StepConfig",
    "StepTask",
    "RunStart",
    "run_steps",
    "step_generator",
    "parse_run_args",
    "write_rows",
    "plot_columns",
    "run_main",
    "save_figure",
    "start_run",
    "train_study",
]

C = TypeVar("C", bound="StepConfig")


@dataclass
class StepConfig(RunFlags):
    """Flags shared by the iteration-based studies (a study overrides the defaults)."""

    # torch CPU threads (one: these models are too small to gain from two)
    threads: int = opt(1, "torch CPU threads (0 = default)", check=NON_NEGATIVE)
    # CI smoke test: a tiny problem, two steps, one evaluation each
    dry_run: bool = opt(False, "tiny data, two steps (for tests)")

    # optimisation steps in total (a resumed run continues up to this number)
    niters: int = opt(1000, "number of optimisation steps", check=at_least(1))
    # end this session early (the schedule still spans --niters); --resume continues
    stop_after: int = opt(0, "stop after this many steps in all (0 = --niters); resume later",
                          check=NON_NEGATIVE)
    # evaluate (one metrics.csv row, one checkpoint) every this many steps
    eval_every: int = opt(50, "steps between evaluations", check=at_least(1))
    # peak learning rate (Adam), cosine-decayed to lr * lr_final
    lr: float = opt(1e-2, "peak learning rate (Adam)", check=POSITIVE)
    # final rate as a fraction of lr (cosine schedule); 1 = constant
    lr_final: float = opt(0.01, "final learning rate as a fraction of --lr (cosine decay)",
                          check=NON_NEGATIVE)


@dataclass
class StepTask:
    """What :func:`run_steps` needs from a study.

    Attributes:
        model: the trained module (its ``state_dict`` is checkpointed).
        optimizer: its optimizer (checkpointed; the rate is set by ``lr_fn`` every step).
        lr_fn: learning rate at 0-based step ``k``.
        train_step: one optimisation step ``k`` (zero_grad, loss, backward, step), drawing
            randomness only from :func:`step_generator`; returns numbers to average over
            the steps between evaluations (e.g. ``train_loss``, ``nfe_f``, ``nfe_b``).
        evaluate: held-out metrics (no gradient needed), merged into the row.
        fields: the ``metrics.csv`` columns, in order (``step``, ``lr``, ``time`` added).
        best_key: the column whose lowest value selects ``best.pt``.
        plot: ``plot(run_dir, history) -> [paths]`` at the end of a run, or ``None``.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    lr_fn: Callable[[int], float]
    train_step: Callable[[int], dict[str, float]]
    evaluate: Callable[[], dict[str, float]]
    fields: tuple[str, ...]
    best_key: str
    plot: Callable[[Path, list[dict[str, float]]], list[Path]] | None = None


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator of step ``step``: depends only on ``(seed, step)``."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step) + 1)


def cosine_lr(k: int, lr: float, lr_final: float, niters: int) -> float:
    """Cosine decay from ``lr`` at step 0 to ``lr * lr_final`` at step ``niters``."""
    import math

    frac = min(k / max(niters, 1), 1.0)
    return lr * (lr_final + (1 - lr_final) * 0.5 * (1 + math.cos(math.pi * frac)))


def write_rows(path: str | os.PathLike, fields: Sequence[str], rows: list[dict]) -> None:
    """Write ``rows`` to the CSV ``path`` atomically (header ``fields``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def run_steps(
    task: StepTask,
    *,
    run_dir: str | os.PathLike,
    niters: int,
    eval_every: int,
    config: dict[str, Any],
    stop_after: int = 0,
    resume: bool = False,
    progress: bool = True,
    plots: bool = True,
    log: Callable[[str], None] = print,
) -> list[dict[str, float]]:
    """Train ``task`` for ``niters`` steps in all, evaluating every ``eval_every`` steps
    (and at the last step); with ``stop_after`` stop (evaluated and checkpointed) after
    that many steps in all, so that a later ``resume`` continues the same schedule.

    Returns:
        The history: one dict per evaluation, with the keys of ``task.fields``.

    Raises:
        RunExistsError: ``run_dir`` holds a run and ``resume`` is false.
        NoCheckpointError: ``resume`` without a checkpoint (a ``FileNotFoundError``).
        CheckpointError: ``resume`` where no checkpoint loads; nothing is changed.
    """
    run_dir = Path(run_dir)
    last, best, metrics = run_dir / "last.pt", run_dir / "best.pt", run_dir / "metrics.csv"
    fields = ("step", "lr", *task.fields, "time")
    history: list[dict[str, float]] = []
    best_value, start, elapsed0 = float("inf"), 0, 0.0
    if resume:
        # the newest checkpoint that loads; unreadable ones are named and set aside
        point = find_resume_checkpoint(run_dir)
        ckpt = point.checkpoint
        load_model_state(task.model, task.optimizer, point)
        history, best_value, start = list(ckpt["history"]), float(ckpt["best_acc"]), ckpt["epoch"]
        elapsed0 = history[-1]["time"] if history else 0.0
        restore_rng(ckpt["rng"])
        for path, why in point.unreadable:
            log(f"warning: {path} is truncated or corrupt ({why})")
        kept = set_aside(run_dir, point)
        if kept is not None:
            log(f"warning: kept {', '.join(sorted(p.name for p in kept.iterdir()))} in {kept}")
        log(f"resumed {run_dir} from {point.path.name} after step {start}")
    else:
        refuse_existing_run(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run_dir / "config.json", config)
    write_rows(metrics, fields, history)

    bar = None
    if start < niters and start < (stop_after or niters):
        bar = progress_bar(progress, total=niters, initial=start, desc="train")
    sums: dict[str, float] = {}
    count = 0
    t0 = time.perf_counter() - elapsed0
    end = min(niters, stop_after) if stop_after > 0 else niters
    for k in range(start, end):
        lr = task.lr_fn(k)
        for group in task.optimizer.param_groups:
            group["lr"] = lr
        task.model.train()
        out = task.train_step(k)
        for key, value in out.items():
            sums[key] = sums.get(key, 0.0) + float(value)
        count += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix({key: f"{v:.4g}" for key, v in out.items()})
        if (k + 1) % eval_every and k + 1 != end:
            continue
        task.model.eval()
        row: dict[str, float] = {"step": k + 1, "lr": lr}
        row.update({key: v / count for key, v in sums.items()})
        row.update(task.evaluate())
        row["time"] = time.perf_counter() - t0
        sums, count = {}, 0
        history.append(row)
        write_rows(metrics, fields, history)
        value = row[task.best_key]
        improved = value < best_value
        best_value = min(best_value, value)
        ckpt = make_checkpoint(model=task.model, optimizer=task.optimizer, epoch=k + 1,
                               best_acc=best_value, history=history, config=config)
        atomic_save(ckpt, last)
        if improved:
            atomic_save(ckpt, best)
        msg = " | ".join(f"{f} {row[f]:.4g}" for f in task.fields if f in row)
        (bar.write if bar is not None else log)(f"step {k + 1:>5}/{niters} | {msg}")
    if bar is not None:
        bar.close()
    if plots and history and task.plot is not None:
        for path in task.plot(run_dir, history):
            log(f"wrote {path}")
    return history


def parse_run_args(
    cls: type[C], argv: Sequence[str] | None, base: C | None = None, prog: str | None = None
) -> C:
    """Flags → config (:func:`~odeflow.experiments.config.parse_run_config`: with
    ``--resume RUN`` the base is ``RUN/config.json``), and the gradient mode checked."""
    cfg = parse_run_config(cls, argv, base=base, prog=prog)
    resolve_gradient(cfg)
    return cfg


def run_main(
    cls: type[C],
    run: Callable[[C], dict[str, Any]],
    argv: Sequence[str] | None,
    base: C | None,
    prog: str | None,
    headline: Sequence[str],
) -> dict[str, Any]:
    """``odeflow train NAME [flags]`` for a step-based study: parse, run, print the last
    row's ``headline`` columns and the run folder."""
    cfg = parse_run_args(cls, argv, base=base, prog=prog)
    summary = run(cfg)
    row = summary["history"][-1] if summary["history"] else {}
    figures = ", ".join(f"{key} {row[key]:.4f}" for key in headline if key in row)
    print(f"done: {figures}, {summary['seconds']:.1f} s, run folder {summary['run_dir']}")
    return summary


@dataclass
class RunStart:
    """An opened run (:func:`start_run`).

    Attributes:
        run_dir: the run folder.
        config: the dict saved as ``config.json`` and in the checkpoints.
        resume: continue from a checkpoint (False for a new run, and for a half-made run
            given to ``--resume``, which starts again from its saved flags).
    """

    run_dir: Path
    config: dict[str, Any]
    resume: bool


@contextlib.contextmanager
def start_run(cfg: StepConfig, name: str, log: Callable[[str], None] = print,
              **extra: Any) -> Iterator[RunStart]:
    """Open a run of ``cfg`` for the ``with`` block: check every flag, set threads and the
    seed, choose the run folder (``runs/NAME`` by default), check it (a new run may not
    overwrite one) and lock it while the block runs.

    Raises:
        ConfigError: a flag out of range.
        RunFolderError: the folder holds a run, cannot be written, or another process
            is writing to it.
    """
    check_config(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    run_dir, note = choose_run_dir(resume=cfg.resume, save=cfg.save, default=f"runs/{name}",
                                   dry_run=cfg.dry_run)
    if note:
        log(note)
    resume = bool(cfg.resume)
    if resume and is_half_made(run_dir):
        log(f"{run_dir} has no checkpoint yet: starting it again from step 0 with its flags")
        resume = False
    created = not run_dir.exists()
    prepare_run_dir(run_dir, resume=resume, log=log)  # before any data or model
    config = dataclasses.asdict(cfg)
    # --stop-after ends one session: a resumed run goes on unless it is given again
    config.update(save=str(run_dir), resume="", stop_after=0, experiment=name,
                  gradient_resolved=resolve_gradient(cfg), **extra)
    try:
        with run_lock(run_dir):
            yield RunStart(run_dir, config, resume)
    except BaseException:
        if created:
            remove_unfinished(run_dir)  # a failed start leaves no folder behind
        raise


def train_study(
    cfg: StepConfig, task: StepTask, start: RunStart, log: Callable[[str], None] = print
) -> tuple[list[dict[str, float]], float]:
    """:func:`run_steps` with the shared flags of ``cfg`` in the run ``start`` opened;
    returns the history and the seconds it took."""
    t0 = time.perf_counter()
    history = run_steps(task, run_dir=start.run_dir, niters=cfg.niters,
                        eval_every=cfg.eval_every, config=start.config, resume=start.resume,
                        stop_after=cfg.stop_after, progress=cfg.progress, plots=cfg.plots,
                        log=log)
    return history, time.perf_counter() - t0


def save_figure(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Lay out, write and close a matplotlib figure; returns ``path``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_columns(
    history: list[dict[str, float]], columns: Sequence[str], path: Path, ylabel: str,
    logy: bool = False,
) -> Path:
    """One figure of ``columns`` of ``history`` against the step (e.g. the loss curve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [r["step"] for r in history]
    for column in columns:
        ax.plot(steps, [r[column] for r in history], "-o", ms=2, label=column)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=120)

