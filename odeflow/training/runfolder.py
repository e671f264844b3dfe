"""The run folder's rules, checked before any work starts: where a run may be written,
what ``resume`` may change, and which checkpoint a resumed run continues from.

- A new run needs a folder it can write to that does not already hold a run
  (``last.pt``, ``best.pt``, or a ``metrics.csv`` with rows: finished work):
  :func:`prepare_run_dir`. A half-made run (``config.json`` and an empty ``metrics.csv``,
  stopped before its first checkpoint) holds nothing to lose, and a dry run (``--dry-run``
  in its ``config.json``) is a throwaway: a new run may take either folder.
- Where a run goes: ``--resume``, else ``--save``, else a dry run's temporary folder,
  else the study's default folder or, when that exists, the next free name
  (``runs/spiral-2``): :func:`choose_run_dir`.
- A resumed run keeps its model: flags that would change it (declared per experiment)
  must be absent or equal to the saved ones: :func:`check_resume_flags`.
- A resumed run continues from the newest checkpoint that loads. A truncated or corrupt
  ``last.pt`` is named, set aside (never deleted or overwritten) together with the
  ``metrics.csv`` it would replace, and the run continues from ``best.pt`` when that one
  is intact: :func:`find_resume_checkpoint`, :func:`set_aside`.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checkpoint import load_checkpoint
from .errors import (
    CheckpointError,
    NoCheckpointError,
    ResumeMismatchError,
    RunExistsError,
    RunFolderError,
)

__all__ = [
    "RUN_FILES",
    "CHECKPOINTS",
    "ResumePoint",
    "run_files",
    "is_dry_run",
    "is_half_made",
    "next_free_dir",
    "remove_unfinished",
    "choose_run_dir",
    "refuse_existing_run",
    "prepare_run_dir",
    "read_run_config",
    "check_resume_flags",
    "find_resume_checkpoint",
    "load_model_state",
    "set_aside",
]

# Files whose presence means a folder holds a run (metrics.csv: when it has a row).
RUN_FILES = ("last.pt", "best.pt", "metrics.csv")
# Checkpoints a run can resume from, in order of preference at equal epochs.
CHECKPOINTS = ("last.pt", "best.pt")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _has_rows(path: Path) -> bool:
    """Whether the CSV ``path`` has a row below its header (unreadable counts as rows:
    when in doubt, a file is kept)."""
    try:
        with path.open(newline="") as f:
            reader = csv.reader(f)
            next(reader, None)
            return any(row for row in reader)
    except (OSError, UnicodeDecodeError, csv.Error):
        return True


def run_files(run_dir: str | os.PathLike) -> list[str]:
    """The files that make ``run_dir`` hold a run: its checkpoints, and ``metrics.csv``
    when it has a row (finished work, even without a checkpoint)."""
    run_dir = Path(run_dir)
    held = [name for name in CHECKPOINTS if (run_dir / name).exists()]
    if (run_dir / "metrics.csv").is_file() and _has_rows(run_dir / "metrics.csv"):
        held.append("metrics.csv")
    return held


def is_dry_run(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir``'s ``config.json`` records a ``--dry-run`` (a throwaway run)."""
    try:
        config = json.loads((Path(run_dir) / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(config, dict) and config.get("dry_run") is True


def is_half_made(run_dir: str | os.PathLike) -> bool:
    """A run folder with its ``config.json`` but nothing finished yet (no checkpoint, no
    metrics row): the run stopped, or failed, before its first checkpoint."""
    run_dir = Path(run_dir)
    return (run_dir / "config.json").is_file() and not run_files(run_dir)


def remove_unfinished(run_dir: str | os.PathLike) -> None:
    """Remove a folder that a new run created and left without finished work (its
    ``config.json`` and header-only ``metrics.csv``), so a failed start leaves no trace;
    anything else in it is kept, and so is the folder then."""
    run_dir = Path(run_dir)
    if run_files(run_dir):
        return
    for name in ("config.json", "metrics.csv"):
        (run_dir / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        run_dir.rmdir()  # only when empty


def next_free_dir(base: str | os.PathLike) -> Path:
    """``base``, or ``base-2``, ``base-3``, ... whichever does not exist yet."""
    base = Path(base)
    if not base.exists():
        return base
    i = 2
    while Path(f"{base}-{i}").exists():
        i += 1
    return Path(f"{base}-{i}")


def choose_run_dir(
    *, resume: str, save: str, default: str | os.PathLike, dry_run: bool
) -> tuple[Path, str | None]:
    """The folder of a run, and a line to tell the user when it is not the one they
    might expect (``None`` otherwise).

    ``--resume RUN``, else ``--save``, else (a dry run) a new temporary folder, so that a
    dry run never occupies the folder of the real run that follows; else ``default``,
    or the next free name after it (``runs/spiral-2``) when it exists.
    """
    if resume:
        return Path(resume), None
    if save:
        return Path(save), None
    default = Path(default)
    if dry_run:
        folder = Path(tempfile.mkdtemp(prefix=f"odeflow-dry-run-{default.name}-"))
        return folder, f"dry run: writing to the temporary folder {folder} (--save to choose)"
    folder = next_free_dir(default)
    if folder == default:
        return folder, None
    return folder, (f"{default} already exists: this run goes to {folder} "
                    f"(--resume {default} continues the run there; --save names a folder)")


def refuse_existing_run(run_dir: str | os.PathLike) -> None:
    """Raise :class:`RunExistsError` when ``run_dir`` holds a run (:func:`run_files`) that
    is not a dry run."""
    run_dir = Path(run_dir)
    held = run_files(run_dir)
    if held and not is_dry_run(run_dir):
        raise RunExistsError(
            f"{run_dir} already holds a run ({', '.join(held)}); resume it with "
            f"--resume {run_dir} or choose another --save folder"
        )


def prepare_run_dir(
    run_dir: str | os.PathLike, *, resume: bool, log: Callable[[str], None] | None = None
) -> Path:
    """Check, before any data or model is built, that ``run_dir`` can take this run.

    Creates the folder (a new run) and writes and removes a probe file in it. A new run
    in the folder of a dry run removes the dry run's checkpoints and metrics (and says
    so through ``log``).

    Raises:
        RunExistsError: a new run in a folder that already holds one.
        RunFolderError: resuming a folder that does not exist, or the folder cannot be
            created or written (e.g. a path under a file, no permission, read-only disk).
    """
    run_dir = Path(run_dir)
    if resume:
        if not run_dir.is_dir():
            raise RunFolderError(f"--resume {run_dir}: no such run folder")
    else:
        refuse_existing_run(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=run_dir, prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)
        if not resume and run_files(run_dir) and is_dry_run(run_dir):
            for name in RUN_FILES:
                (run_dir / name).unlink(missing_ok=True)
            if log is not None:
                log(f"{run_dir} held a dry run: replaced by this run")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise RunFolderError(f"cannot write the run folder {run_dir}: {reason}") from exc
    return run_dir


def read_run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The saved ``config.json`` of a run folder.

    Raises:
        RunFolderError: no folder, no ``config.json``, or one that is not a JSON object.
    """
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise RunFolderError(f"--resume {run_dir}: no config.json there (not a run folder?)")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFolderError(f"--resume {run_dir}: {path} is unreadable ({exc})") from exc
    if not isinstance(config, dict):
        raise RunFolderError(f"--resume {run_dir}: {path} does not hold a JSON object")
    return config


def _same(a: Any, b: Any) -> bool:
    norm = lambda v: list(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
    return norm(a) == norm(b)


def check_resume_flags(
    run_dir: str | os.PathLike,
    saved: Mapping[str, Any],
    given: Mapping[str, Any],
    fixed: Iterable[str],
) -> None:
    """Refuse a resume whose flags would change the saved model.

    Args:
        run_dir: the run being resumed (for the message).
        saved: the run's saved configuration.
        given: the settings the user asked for (flags typed, or an experiment's own
            defaults), by field name.
        fixed: the field names that define the model (e.g. ``network``, ``width``).

    Raises:
        ResumeMismatchError: naming the first such flag, its saved and its given value.
    """
    for name in fixed:
        if name in given and name in saved and not _same(given[name], saved[name]):
            flag = _flag(name)
            raise ResumeMismatchError(
                f"--resume {run_dir}: {flag} {given[name]!r} differs from the run's saved "
                f"{flag} {saved[name]!r}, and {flag} changes the model; drop {flag} to "
                f"resume, or start a new run with --save"
            )


@dataclass
class ResumePoint:
    """The checkpoint a resumed run continues from, and what was found broken.

    Attributes:
        path: the checkpoint chosen (the newest intact one).
        checkpoint: its contents.
        unreadable: ``(path, reason)`` of each checkpoint that would not load.
    """

    path: Path
    checkpoint: dict[str, Any]
    unreadable: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def fallback(self) -> bool:
        """True when the run does not continue from ``last.pt``."""
        return self.path.name != "last.pt"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def find_resume_checkpoint(run_dir: str | os.PathLike, map_location: Any = "cpu") -> ResumePoint:
    """The newest checkpoint of ``run_dir`` that loads (``last.pt``, else ``best.pt``).

    Nothing in the folder is changed.

    Raises:
        NoCheckpointError: the folder holds neither checkpoint.
        CheckpointError: every checkpoint there is truncated or corrupt; the message
            names them and says how to recover.
    """
    run_dir = Path(run_dir)
    intact: list[tuple[int, int, Path, dict[str, Any]]] = []
    unreadable: list[tuple[Path, str]] = []
    for rank, name in enumerate(CHECKPOINTS):
        path = run_dir / name
        if not path.exists():
            continue
        try:
            ckpt = load_checkpoint(path, map_location=map_location)
            epoch = int(ckpt["epoch"])
        except Exception as exc:  # truncated zip, empty file, pickle or format error, ...
            unreadable.append((path, _reason(exc)))
            continue
        intact.append((epoch, -rank, path, ckpt))
    if intact:
        _, _, path, ckpt = max(intact, key=lambda item: item[:2])
        return ResumePoint(path, ckpt, unreadable)
    if not unreadable:
        raise NoCheckpointError(
            f"--resume {run_dir}: no checkpoint there (no {' or '.join(CHECKPOINTS)}) to "
            f"continue from; start a new run with --save"
        )
    broken = "; ".join(f"{p} is truncated or corrupt ({why})" for p, why in unreadable)
    raise CheckpointError(
        f"--resume {run_dir}: {broken}; no intact checkpoint is left, so nothing was "
        f"changed. To recover, restore {run_dir / 'last.pt'} from a copy, or start the run "
        f"again in a new folder with its flags (see {run_dir / 'config.json'}) and --save"
    )


def load_model_state(model: Any, optimizer: Any, point: ResumePoint) -> None:
    """Load ``point``'s weights into ``model`` and its state into ``optimizer``.

    Raises:
        CheckpointError: the checkpoint does not fit (another study's run, or a model
            built with other flags); nothing is changed on disk.
    """
    try:
        model.load_state_dict(point.checkpoint["model"])
        optimizer.load_state_dict(point.checkpoint["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"{point.path} does not fit this model ({_reason(exc)}): the run was made by "
            f"another study or with other model flags; start a new run with --save"
        ) from exc


def set_aside(run_dir: str | os.PathLike, point: ResumePoint) -> Path | None:
    """Move the unreadable checkpoints of ``point`` into ``run_dir/set-aside-N``, and copy
    ``metrics.csv`` there when the run falls back to an older checkpoint (resuming rewrites
    it). Returns the folder, or None when there was nothing to keep."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.csv"
    keep_metrics = point.fallback and metrics.is_file()
    if not point.unreadable and not keep_metrics:
        return None
    n = 1
    while (run_dir / f"set-aside-{n}").exists():
        n += 1
    folder = run_dir / f"set-aside-{n}"
    folder.mkdir()
    for path, _ in point.unreadable:
        os.replace(path, folder / path.name)
    if keep_metrics:
        shutil.copy2(metrics, folder / metrics.name)
    return folder
