"""The training loop: epochs of SGD, evaluation, metrics, checkpoints and exact resume.

Plain PyTorch: ``fit`` drives ``train_one_epoch`` and ``evaluate`` and writes the run
folder (``config.json``, ``metrics.csv``, ``last.pt``, ``best.pt``, plots). Under
``torchrun`` every rank trains its shard of each batch through DDP; sums are all-reduced
so rank 0, the only one that writes, records global numbers.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.odeblock import nfe_counts
from .bars import progress_bar
from .checkpoint import atomic_save, make_checkpoint, restore_rng, unwrap
from .distributed import DistEnv, all_reduce_sum, barrier
from .errors import RunExistsError
from .metrics import append_metrics, write_metrics
from .runfolder import find_resume_checkpoint, load_model_state, refuse_existing_run, set_aside

SINGLE_PROCESS = DistEnv()

__all__ = ["train_one_epoch", "evaluate", "fit", "RunExistsError"]


def _progress(iterable: Iterable, total: int, desc: str, enabled: bool):
    bar = progress_bar(enabled, total=total, desc=desc, iterable=iterable)
    return iterable if bar is None else bar


def train_one_epoch(
    model: nn.Module,
    loader: Any,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    env: DistEnv = SINGLE_PROCESS,
    *,
    progress: bool = False,
    desc: str = "train",
) -> dict[str, float]:
    """One pass of SGD over ``loader``.

    Returns:
        Global (all-rank) ``train_loss``, ``train_acc``, mean forward/backward NFE per batch
        (``nfe_f``, ``nfe_b``; 0 for models without ODE blocks) and ``time_per_batch``.
    """
    model.train()
    loss_sum = correct = count = nfe_f = nfe_b = batches = 0.0
    start = time.perf_counter()
    bar = _progress(loader, len(loader), desc, progress and env.is_main)
    for x, y in bar:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        forward_nfe, _ = nfe_counts(model)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        optimizer.step()
        _, backward_nfe = nfe_counts(model)
        n = y.shape[0]
        loss_sum += float(loss.detach()) * n
        correct += float((logits.detach().argmax(1) == y).sum())
        count += n
        nfe_f += forward_nfe
        nfe_b += backward_nfe
        batches += 1
        if bar is not loader:
            bar.set_postfix(loss=f"{loss_sum / count:.3f}", nfe_f=forward_nfe, nfe_b=backward_nfe)
    elapsed = time.perf_counter() - start
    loss_sum, correct, count, nfe_f, nfe_b, batches = all_reduce_sum(
        [loss_sum, correct, count, nfe_f, nfe_b, batches], env
    )
    return {
        "train_loss": loss_sum / max(count, 1),
        "train_acc": correct / max(count, 1),
        "nfe_f": nfe_f / max(batches, 1),
        "nfe_b": nfe_b / max(batches, 1),
        "time_per_batch": elapsed / max(batches / env.world_size, 1),
    }


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Any, device: torch.device, env: DistEnv = SINGLE_PROCESS
) -> dict[str, float]:
    """Loss and accuracy over ``loader`` (each rank its shard, summed over ranks)."""
    model.eval()
    net = unwrap(model)  # no DDP forward outside training: no gradient sync needed
    loss_sum = correct = count = 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = net(x)
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += float((logits.argmax(1) == y).sum())
        count += y.shape[0]
    loss_sum, correct, count = all_reduce_sum([loss_sum, correct, count], env)
    return {"test_loss": loss_sum / max(count, 1), "test_acc": correct / max(count, 1)}


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loader: Any,
    test_loader: Any,
    *,
    run_dir: str | os.PathLike,
    nepochs: int,
    lr_fn: Callable[[int], float] | None = None,
    config: dict[str, Any],
    device: torch.device,
    env: DistEnv = SINGLE_PROCESS,
    resume: bool = False,
    progress: bool = True,
    plots: bool = True,
    log: Callable[[str], None] = print,
    lr_schedule: Callable[[int, list[dict[str, float]]], float] | None = None,
    val_loader: Any = None,
) -> list[dict[str, float]]:
    """Train for ``nepochs`` epochs (in total, counting those of a resumed run).

    Each epoch: set the rate from ``lr_fn(epoch)``, replay the loaders' order for that
    epoch, train, evaluate, then (rank 0) append the row to ``metrics.csv`` and write
    ``last.pt`` (and ``best.pt`` when the test accuracy improves), both atomically.

    Args:
        model: the model, DDP-wrapped when distributed.
        optimizer: its optimizer.
        train_loader: batches with ``set_epoch(epoch)``, e.g. :class:`~odeflow.data.BatchLoader`.
        test_loader: evaluation batches.
        run_dir: the run folder.
        nepochs: total number of epochs.
        lr_fn: learning rate of a 0-based epoch (or give ``lr_schedule``).
        config: the run's configuration (written to ``config.json`` and checkpoints).
        device: where batches go.
        env: the distributed environment.
        resume: continue from the newest intact checkpoint (``last.pt``, else ``best.pt``):
            weights, optimizer, epoch, history and RNG states are restored, and
            ``metrics.csv`` is rewritten from the checkpoint. Unreadable checkpoints (and,
            when falling back to ``best.pt``, the old ``metrics.csv``) are kept in
            ``run_dir/set-aside-N``.
        progress: show a tqdm bar over batches (rank 0).
        plots: write ``accuracy.png`` and ``nfe.png`` at the end (rank 0).
        log: where rank 0 prints one line per epoch.
        lr_schedule: instead of ``lr_fn``, the rate of a 0-based epoch from the history
            of the epochs before it (e.g. a plateau rule; resumes exactly, being a
            function of the saved history).
        val_loader: batches of a validation split; adds ``val_loss`` and ``val_acc``
            to each row, and ``best.pt`` then follows ``val_acc`` instead of ``test_acc``.

    Returns:
        The metrics history, one dict per epoch.

    Raises:
        RunExistsError: ``run_dir`` holds a run (``last.pt``, ``best.pt`` or
            ``metrics.csv``) and ``resume`` is false.
        NoCheckpointError: ``resume`` in a folder without checkpoints (a
            ``FileNotFoundError``).
        CheckpointError: ``resume`` where no checkpoint loads; nothing is changed.
    """
    if (lr_fn is None) == (lr_schedule is None):
        raise ValueError("fit needs exactly one of lr_fn and lr_schedule")
    run_dir = Path(run_dir)
    last, best, metrics = run_dir / "last.pt", run_dir / "best.pt", run_dir / "metrics.csv"
    history: list[dict[str, float]] = []
    best_acc, start = -1.0, 0
    if resume:
        point = find_resume_checkpoint(run_dir, map_location=device)
        ckpt = point.checkpoint
        load_model_state(unwrap(model), optimizer, point)
        history, best_acc, start = list(ckpt["history"]), float(ckpt["best_acc"]), ckpt["epoch"]
        restore_rng(ckpt["rng"])
        barrier(env)  # every rank has read its checkpoint before rank 0 moves any file
        if env.is_main:
            for path, why in point.unreadable:
                log(f"warning: {path} is truncated or corrupt ({why})")
            kept = set_aside(run_dir, point)
            if kept is not None:
                names = ", ".join(sorted(p.name for p in kept.iterdir()))
                log(f"warning: kept {names} as they were in {kept}")
            write_metrics(metrics, history)
            log(f"resumed {run_dir} from {point.path.name} after epoch {start}")
    else:
        refuse_existing_run(run_dir)
        if env.is_main:
            # a half-made run's header-only metrics.csv (or a dry run's): rows are appended
            (run_dir / "metrics.csv").unlink(missing_ok=True)
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(run_dir / "config.json", config)
    barrier(env)

    for epoch in range(start, nepochs):
        lr = lr_schedule(epoch, history) if lr_schedule is not None else lr_fn(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        train_loader.set_epoch(epoch)
        t0 = time.perf_counter()
        row: dict[str, float] = {"epoch": epoch + 1, "lr": lr}
        row.update(
            train_one_epoch(
                model,
                train_loader,
                optimizer,
                device,
                env,
                progress=progress,
                desc=f"epoch {epoch + 1}/{nepochs}",
            )
        )
        if val_loader is not None:
            val = evaluate(model, val_loader, device, env)
            row.update(val_loss=val["test_loss"], val_acc=val["test_acc"])
        row.update(evaluate(model, test_loader, device, env))
        row["epoch_time"] = time.perf_counter() - t0
        history.append(row)
        if env.is_main:
            append_metrics(metrics, row)
            score = row.get("val_acc", row["test_acc"])
            improved = score > best_acc
            best_acc = max(best_acc, score)
            ckpt = make_checkpoint(
                model=model,
                optimizer=optimizer,
                epoch=epoch + 1,
                best_acc=best_acc,
                history=history,
                config=config,
            )
            atomic_save(ckpt, last)
            if improved:
                atomic_save(ckpt, best)
            log(
                f"epoch {epoch + 1:>3}/{nepochs} | lr {lr:.4g} | "
                f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f} | "
                + (f"val acc {row['val_acc']:.4f} | " if "val_acc" in row else "")
                + f"test loss {row['test_loss']:.4f} acc {row['test_acc']:.4f} | "
                f"NFE-F {row['nfe_f']:.1f} NFE-B {row['nfe_b']:.1f} | "
                f"{row['time_per_batch'] * 1000:.1f} ms/batch"
            )
        else:
            best_acc = max(best_acc, row.get("val_acc", row["test_acc"]))
        barrier(env)

    if env.is_main and plots and history:
        from .plots import plot_runs

        plot_runs([run_dir], run_dir)
    return history
