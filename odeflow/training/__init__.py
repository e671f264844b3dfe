"""Training for the experiments (above the library line): the loop, metrics, atomic
checkpoints with exact resume, the run folder's rules, user errors, DDP under torchrun,
and plots."""

from .bars import bars_wanted, progress_bar
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
    RunLockedError,
    UserError,
)
from .lock import run_lock
from .loop import evaluate, fit, train_one_epoch
from .metrics import METRIC_FIELDS, RunningMean, append_metrics, read_metrics, write_metrics
from .runfolder import (
    ResumePoint,
    check_resume_flags,
    choose_run_dir,
    find_resume_checkpoint,
    is_dry_run,
    is_half_made,
    load_model_state,
    next_free_dir,
    prepare_run_dir,
    read_run_config,
    refuse_existing_run,
    remove_unfinished,
    run_files,
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
    "RunLockedError",
    "RunningMean",
    "USER_ERRORS",
    "UserError",
    "all_reduce_sum",
    "append_metrics",
    "atomic_save",
    "barrier",
    "bars_wanted",
    "capture_rng",
    "check_resume_flags",
    "choose_run_dir",
    "cleanup_distributed",
    "evaluate",
    "find_resume_checkpoint",
    "is_dry_run",
    "is_half_made",
    "load_model_state",
    "next_free_dir",
    "fit",
    "load_checkpoint",
    "lr_at",
    "plateau_lr",
    "prepare_run_dir",
    "progress_bar",
    "read_metrics",
    "read_run_config",
    "refuse_existing_run",
    "remove_unfinished",
    "restore_rng",
    "run_files",
    "run_lock",
    "set_aside",
    "setup_distributed",
    "train_one_epoch",
    "unwrap",
    "write_metrics",
]
