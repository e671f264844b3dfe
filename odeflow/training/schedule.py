"""Seed A's learning-rate schedule: ``lr × batch/128``, ×``decay`` at each milestone epoch."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["lr_at"]


def lr_at(
    epoch: int,
    base_lr: float = 0.1,
    batch_size: int = 128,
    milestones: Sequence[int] = (60, 100, 140),
    decay: float = 0.1,
) -> float:
    """Learning rate of (0-based) ``epoch``.

    Args:
        epoch: number of finished epochs.
        base_lr: the ``--lr`` flag, meant for batches of 128.
        batch_size: global batch size; the rate scales linearly with it.
        milestones: epochs at which the rate is multiplied by ``decay`` (seed: 60, 100, 140).
        decay: the factor.

    Example:
        >>> lr_at(0), lr_at(60), lr_at(100, batch_size=256)
        (0.1, 0.010000000000000002, 0.0020000000000000005)
    """
    lr = base_lr * batch_size / 128
    for m in milestones:
        if epoch >= m:
            lr *= decay
    return lr
