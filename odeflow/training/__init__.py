"""Training for the experiments (above the library line): the loop, metrics, atomic
checkpoints with exact resume, DDP under torchrun, and plots."""

from .checkpoint import atomic_save, capture_rng, load_checkpoint, restore_rng, unwrap
from .distributed import DistEnv, all_reduce_sum, barrier, cleanup_distributed, setup_distributed
from .loop import RunExistsError, evaluate, fit, train_one_epoch
from .metrics import METRIC_FIELDS, RunningMean, append_metrics, read_metrics, write_metrics
from .schedule import lr_at

__all__ = [
    "DistEnv",
    "METRIC_FIELDS",
    "RunExistsError",
    "RunningMean",
    "all_reduce_sum",
    "append_metrics",
    "atomic_save",
    "barrier",
    "capture_rng",
    "cleanup_distributed",
    "evaluate",
    "fit",
    "load_checkpoint",
    "lr_at",
    "read_metrics",
    "restore_rng",
    "setup_distributed",
    "train_one_epoch",
    "unwrap",
    "write_metrics",
]
