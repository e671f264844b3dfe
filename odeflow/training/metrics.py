"""Per-epoch metrics: running averages and the run folder's ``metrics.csv``."""

from __future__ import annotations

import csv
import os
from pathlib import Path

__all__ = [
    "METRIC_FIELDS",
    "OPTIONAL_FIELDS",
    "RunningMean",
    "append_metrics",
    "write_metrics",
    "read_metrics",
]

# One row per epoch. Times are wall-clock seconds; NFE are evaluations per training batch.
METRIC_FIELDS = (
    "epoch",
    "lr",
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "nfe_f",
    "nfe_b",
    "time_per_batch",
    "epoch_time",
)
# Written after those when a run has them: accuracy on a validation split held out of the
# training set (the CIFAR-10 study's plateau schedule watches it).
OPTIONAL_FIELDS = ("val_loss", "val_acc")


def _fields(row: dict[str, float]) -> tuple[str, ...]:
    return METRIC_FIELDS + tuple(f for f in OPTIONAL_FIELDS if f in row)


class RunningMean:
    """Mean of the values added so far (weighted by ``n``)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0.0

    def add(self, value: float, n: float = 1.0) -> None:
        self.total += float(value) * n
        self.count += n

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


def append_metrics(path: str | os.PathLike, row: dict[str, float]) -> None:
    """Append one epoch's row to ``metrics.csv`` (header written when the file is new)."""
    path = Path(path)
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_fields(row), extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)
        f.flush()
        os.fsync(f.fileno())


def write_metrics(path: str | os.PathLike, history: list[dict[str, float]]) -> None:
    """Rewrite ``metrics.csv`` atomically from a history (used when resuming, so rows of an
    epoch that was interrupted after its row but before its checkpoint disappear)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        fields = _fields(history[0]) if history else METRIC_FIELDS
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, path)


def read_metrics(path: str | os.PathLike) -> list[dict[str, float]]:
    """Read ``metrics.csv`` (or the one inside a run folder) into a list of float dicts."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.csv at {path}")
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
