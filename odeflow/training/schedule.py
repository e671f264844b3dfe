"""Learning-rate schedules as pure functions of the epoch (seed A's milestones) or of the
metrics history (reduce on plateau), so a resumed run recomputes its rate exactly."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["lr_at", "plateau_lr"]


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


def plateau_lr(
    scores: Sequence[float],
    base_lr: float,
    *,
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    min_lr: float = 0.0,
    mode: str = "max",
) -> float:
    """The rate after the epochs whose scores are ``scores``, reducing on a plateau.

    The rule of :class:`torch.optim.lr_scheduler.ReduceLROnPlateau` (relative threshold,
    no cooldown), replayed from the history: an epoch whose score beats the best so far
    by more than the relative ``threshold`` resets the count of bad epochs; once more than
    ``patience`` epochs in a row are bad, the rate is multiplied by ``factor`` (not below
    ``min_lr``) and the count starts again. Being a function of the history, it needs no
    state in the checkpoint.

    Args:
        scores: one score per finished epoch (e.g. validation accuracy).
        base_lr: the rate before any reduction.
        factor: multiplier at each reduction.
        patience: bad epochs tolerated before a reduction.
        threshold: relative improvement that counts as better.
        min_lr: lower bound of the rate.
        mode: ``"max"`` (accuracy) or ``"min"`` (loss).

    Example:
        >>> plateau_lr([0.5, 0.6, 0.6, 0.6], 0.1, patience=1)
        0.010000000000000002
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    lr, best, bad = base_lr, None, 0
    for score in scores:
        if mode == "max":
            better = best is None or score > best * (1 + threshold)
        else:
            better = best is None or score < best * (1 - threshold)
        if better:
            best, bad = score, 0
        else:
            bad += 1
        if bad > patience:
            new = max(lr * factor, min_lr)
            if lr - new > 1e-8:
                lr = new
            bad = 0
    return lr
