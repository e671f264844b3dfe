"""Checkpoints that survive a crash and load with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain containers only: the (unwrapped) model's
``state_dict``, the optimizer's, the number of finished epochs, the best test accuracy,
the metrics history, the run's config as a dict, and the RNG states as tensors. It is
written to a temporary file in the same folder, flushed to disk, then renamed over the
old one, so a kill at any moment leaves either the old or the new checkpoint.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "atomic_save",
    "capture_rng",
    "restore_rng",
    "make_checkpoint",
    "load_checkpoint",
    "unwrap",
]

FORMAT = 1


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` (or similar) wrapper."""
    return model.module if hasattr(model, "module") else model


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically (temporary file + fsync + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def capture_rng() -> dict[str, Any]:
    """Torch (CPU and CUDA) and Python RNG states, as tensors and tuples of ints."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng` captured."""
    torch.set_rng_state(state["torch"])
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_checkpoint(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    best_acc: float,
    history: list[dict[str, float]],
    config: dict[str, Any],
) -> dict[str, Any]:
    """Assemble the checkpoint dict (model saved from the unwrapped module)."""
    return {
        "format": FORMAT,
        "epoch": epoch,
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "best_acc": best_acc,
        "history": [dict(row) for row in history],
        "config": dict(config),
        "rng": capture_rng(),
    }


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        ValueError: the file is not an odeflow checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not an odeflow checkpoint (format {FORMAT})")
    return ckpt
