"""The driver of the epoch-based image studies (MNIST, CIFAR-10): one run end to end.

A study supplies its config and a ``build(cfg, env)`` returning the model, optimizer,
loaders and schedule; :func:`run_epochs` checks every flag and the run folder before
anything is built (the folder chosen as the step-based studies choose theirs, and locked
while the run writes to it), joins a ``torchrun`` process group when launched by one,
calls :func:`odeflow.training.fit` and returns a summary that :func:`report` prints.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..training import (
    ConfigError,
    DistEnv,
    barrier,
    choose_run_dir,
    cleanup_distributed,
    fit,
    is_half_made,
    prepare_run_dir,
    remove_unfinished,
    run_lock,
    setup_distributed,
)
from ..training.distributed import broadcast_object
from .config import check_config

__all__ = ["select_device", "check_device", "resolve_gradient", "run_epochs", "report"]


def resolve_gradient(cfg: Any) -> str:
    """The gradient mode from ``--gradient`` and the seed's ``--adjoint``."""
    if cfg.gradient is None:
        return "adjoint" if cfg.adjoint else "direct"
    if cfg.adjoint and cfg.gradient != "adjoint":
        raise ConfigError(f"--adjoint True contradicts --gradient {cfg.gradient}")
    return cfg.gradient


def check_device(cfg: Any) -> None:
    """``--device`` (and ``--gpu``) name a device this machine has.

    Raises:
        ConfigError: an unknown device, CUDA asked for where there is none, or a GPU index
            beyond the GPUs present.
    """
    if cfg.device == "auto":
        if torch.cuda.is_available() and cfg.gpu >= torch.cuda.device_count():
            raise ConfigError(f"--gpu {cfg.gpu}: expected a GPU index below "
                              f"{torch.cuda.device_count()} (the GPUs here)")
        return
    try:
        device = torch.device(cfg.device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {cfg.device!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else (
                "no GPU is visible")
            raise ConfigError(f"--device {cfg.device}: CUDA is not available ({why}); use "
                              f"--device cpu, or auto to take a GPU when there is one")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {cfg.device}: expected a GPU index below "
                              f"{torch.cuda.device_count()} (the GPUs here)")
    elif device.type != "cpu":
        raise ConfigError(f"--device {cfg.device!r}: expected auto, cpu, cuda or cuda:N")


def select_device(cfg: Any, env: DistEnv) -> torch.device:
    """``--device`` (``auto``: ``cuda:<--gpu>``, or this rank's GPU under torchrun, when
    CUDA is available; else the CPU)."""
    if cfg.device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", env.local_rank if env.enabled else cfg.gpu)
        return torch.device("cpu")
    device = torch.device(cfg.device)
    if device.type == "cuda" and env.enabled:
        device = torch.device("cuda", env.local_rank)
    return device


def run_epochs(
    cfg: Any,
    build: Callable[[Any, DistEnv], dict[str, Any]],
    default_dir: Path,
    describe: Callable[[Any, dict[str, Any], DistEnv], str],
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train ``cfg`` end to end (joining a torchrun process group when launched by one).

    Args:
        cfg: the study's config (fields ``resume``, ``threads``, ``dry_run``, ``nepochs``,
            ``progress``, ``plots`` are used here).
        build: ``build(cfg, env)`` -> dict with ``model``, ``optimizer``, ``train_loader``,
            ``test_loader``, ``device``, ``parameters``, ``lr_fn`` or ``lr_schedule``, and
            optionally ``val_loader``.
        default_dir: the study's folder when neither ``--resume`` nor ``--save`` names one
            (the next free name when it exists; a temporary folder for a dry run).
        describe: the first line logged, from ``(cfg, parts, env)``; ``parts["run_dir"]``
            is the run folder.
        log: where rank 0 prints.

    Returns:
        A summary: ``run_dir``, ``parameters``, ``history``, ``test_acc`` (last epoch),
        ``best_acc``, mean ``nfe_f`` / ``nfe_b`` over epochs, ``seconds``, ``rank``; plus
        ``model`` (unwrapped) for callers that want the weights.
    """
    check_config(cfg)
    env = setup_distributed()
    say = log if env.is_main else (lambda _msg: None)
    try:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        # rank 0 chooses (a free name, a temporary folder) so that every rank agrees
        run_dir, note = broadcast_object(
            choose_run_dir(resume=cfg.resume, save=cfg.save, default=default_dir,
                           dry_run=cfg.dry_run) if env.is_main else None, env)
        if note:
            say(note)
        resume = bool(cfg.resume)
        if resume and is_half_made(run_dir):
            say(f"{run_dir} has no checkpoint yet: starting it again from epoch 0 with its flags")
            resume = False
        created = not run_dir.exists()
        barrier(env)  # every rank has looked before any rank creates the folder
        prepare_run_dir(run_dir, resume=resume, log=say)  # before any data or model
        try:
            with run_lock(run_dir, enabled=env.is_main):
                return _train(cfg, build, run_dir, resume, describe, env, say)
        except BaseException:
            if env.is_main and created:
                remove_unfinished(run_dir)  # a failed start leaves no folder behind
            raise
    finally:
        cleanup_distributed(env)


def _train(cfg: Any, build: Callable[[Any, DistEnv], dict[str, Any]], run_dir: Path,
           resume: bool, describe: Callable[[Any, dict[str, Any], DistEnv], str],
           env: DistEnv, say: Callable[[str], None]) -> dict[str, Any]:
    """The body of :func:`run_epochs` once the folder is chosen and locked."""
    parts = build(cfg, env)
    parts["run_dir"] = run_dir
    config = dataclasses.asdict(cfg)
    config.update(
        save=str(run_dir),
        resume="",
        gradient_resolved=resolve_gradient(cfg),
        parameters=parts["parameters"],
        world_size=env.world_size,
    )
    say(describe(cfg, parts, env))
    start = time.perf_counter()
    history = fit(
        parts["model"],
        parts["optimizer"],
        parts["train_loader"],
        parts["test_loader"],
        run_dir=run_dir,
        nepochs=1 if cfg.dry_run else cfg.nepochs,
        lr_fn=parts.get("lr_fn"),
        lr_schedule=parts.get("lr_schedule"),
        val_loader=parts.get("val_loader"),
        config=config,
        device=parts["device"],
        env=env,
        resume=resume,
        progress=cfg.progress,
        plots=cfg.plots,
        log=say,
    )
    seconds = time.perf_counter() - start
    model = parts["model"]
    model = model.module if hasattr(model, "module") else model
    return {
        "run_dir": str(run_dir),
        "parameters": parts["parameters"],
        "history": history,
        "test_acc": history[-1]["test_acc"] if history else float("nan"),
        "best_acc": max((r["test_acc"] for r in history), default=float("nan")),
        "nfe_f": sum(r["nfe_f"] for r in history) / max(len(history), 1),
        "nfe_b": sum(r["nfe_b"] for r in history) / max(len(history), 1),
        "seconds": seconds,
        "model": model,
        "rank": env.rank,
    }


def report(summary: dict[str, Any]) -> None:
    """Print the one-line result of a run (rank 0 only)."""
    if summary["rank"] == 0:
        print(
            f"done: test accuracy {summary['test_acc']:.4f} (best {summary['best_acc']:.4f}), "
            f"NFE-F {summary['nfe_f']:.1f}, NFE-B {summary['nfe_b']:.1f}, "
            f"{summary['parameters']:,} parameters, {summary['seconds']:.1f} s, "
            f"run folder {summary['run_dir']}"
        )
