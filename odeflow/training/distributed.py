"""Multi-process training under ``torchrun``: read the environment, start and stop the
process group, and sum numbers over ranks. Only rank 0 logs and writes files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistEnv", "setup_distributed", "cleanup_distributed", "all_reduce_sum", "barrier",
           "broadcast_object"]


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in a (possibly single-process) job.

    Attributes:
        rank: global rank (``RANK``), 0 when not distributed.
        world_size: number of processes (``WORLD_SIZE``), 1 when not distributed.
        local_rank: rank on this machine (``LOCAL_RANK``), picks the GPU.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(backend: str | None = None) -> DistEnv:
    """Join the process group that ``torchrun`` describes in ``RANK``/``WORLD_SIZE``.

    Without those variables (a plain ``python`` launch) nothing is initialised and a
    single-process :class:`DistEnv` is returned.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; by default NCCL when CUDA is available, else gloo.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistEnv()
    env = DistEnv(
        rank=int(os.environ["RANK"]),
        world_size=world_size,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend=backend)
    return env


def cleanup_distributed(env: DistEnv) -> None:
    """Leave the process group if this process joined one."""
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: Sequence[float], env: DistEnv) -> list[float]:
    """Sum ``values`` elementwise over all ranks (identity when not distributed)."""
    if not env.enabled:
        return [float(v) for v in values]
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().tolist()


def barrier(env: DistEnv) -> None:
    """Wait for every rank (no-op when not distributed)."""
    if env.enabled:
        dist.barrier()


def broadcast_object(obj: Any, env: DistEnv) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself when not distributed); e.g. the run
    folder, which rank 0 alone chooses so that every rank agrees on it."""
    if not env.enabled:
        return obj
    box = [obj if env.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
