"""The driver of the epoch-based image studies (MNIST, CIFAR-10): one run end to end.

A study supplies its config and a ``build(cfg, env)`` returning the model, optimizer,
loaders and schedule; :func:`run_epochs` checks the run folder before anything is
built, joins a ``torchrun`` process group when launched by one, calls
:func:`odeflow.training.fit` and returns a summary that :func:`report` prints.
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
    cleanup_distributed,
    fit,
    prepare_run_dir,
    setup_distributed,
)

__all__ = ["select_device", "resolve_gradient", "run_epochs", "report"]


def resolve_gradient(cfg: Any) -> str:
    """The gradient mode from ``--gradient`` and the seed's ``--adjoint``."""
    if cfg.gradient is None:
        return "adjoint" if cfg.adjoint else "direct"
    if cfg.adjoint and cfg.gradient != "adjoint":
        raise ConfigError(f"--adjoint True contradicts --gradient {cfg.gradient}")
    return cfg.gradient


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
    run_dir: Path,
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
        run_dir: the run folder (``--resume`` or ``--save``).
        describe: the first line logged, from ``(cfg, parts, env)``.
        log: where rank 0 prints.

    Returns:
        A summary: ``run_dir``, ``parameters``, ``history``, ``test_acc`` (last epoch),
        ``best_acc``, mean ``nfe_f`` / ``nfe_b`` over epochs, ``seconds``, ``rank``; plus
        ``model`` (unwrapped) for callers that want the weights.
    """
    env = setup_distributed()
    say = log if env.is_main else (lambda _msg: None)
    try:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        prepare_run_dir(run_dir, resume=bool(cfg.resume))  # before any data or model
        parts = build(cfg, env)
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
            resume=bool(cfg.resume),
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
    finally:
        cleanup_distributed(env)


def report(summary: dict[str, Any]) -> None:
    """Print the one-line result of a run (rank 0 only)."""
    if summary["rank"] == 0:
        print(
            f"done: test accuracy {summary['test_acc']:.4f} (best {summary['best_acc']:.4f}), "
            f"NFE-F {summary['nfe_f']:.1f}, NFE-B {summary['nfe_b']:.1f}, "
            f"{summary['parameters']:,} parameters, {summary['seconds']:.1f} s, "
            f"run folder {summary['run_dir']}"
        )
