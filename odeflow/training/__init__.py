"""Training for the experiments (above the library line): the loop, metrics, atomic
checkpoints with exact resume, the run folder's rules, user errors, DDP under torchrun,
and plots."""

from .checkpoint import atomic_save, capture_rng, load_checkpoint, restore_rng, unwrap
from .distributed import DistEnv, all_reduce_sum, barrier, cleanup_distributed, setup_distributed
from .errors import (
    USER_ERRORS,
    CheckpointError,
    ConfigError,
    NoCheckpointError,
    ResumeMismatchError,
    RunExistsError,
    RunFolderError,
    UserError,
)
from .loop import evaluate, fit, train_one_epoch
from .metrics import METRIC_FIELDS, RunningMean, append_metrics, read_metrics, write_metrics
from .runfolder import (
    ResumePoint,
    check_resume_flags,
    find_resume_checkpoint,
    prepare_run_dir,
    read_run_config,
    refuse_existing_run,
    set_aside,
)
from .schedule import lr_at, plateau_lr

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DistEnv",
    "METRIC_FIELDS",
    "NoCheckpointError",
    "ResumeMismatchError",
    "ResumePoint",
    "RunExistsError",
    "RunFolderError",
    "RunningMean",
    "USER_ERRORS",
    "UserError",
    "all_reduce_sum",
    "append_metrics",
    "atomic_save",
    "barrier",
    "capture_rng",
    "check_resume_flags",
    "cleanup_distributed",
    "evaluate",
    "find_resume_checkpoint",
    "fit",
    "load_checkpoint",
    "lr_at",
    "plateau_lr",
    "prepare_run_dir",
    "read_metrics",
    "read_run_config",
    "refuse_existing_run",
    "restore_rng",
    "set_aside",
    "setup_distributed",
    "train_one_epoch",
    "unwrap",
    "write_metrics",
]
