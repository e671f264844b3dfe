"""The run folder's rules, checked before any work starts: where a run may be written,
what ``resume`` may change, and which checkpoint a resumed run continues from.

- A new run needs a folder it can write to that does not already hold a run
  (``last.pt``, ``best.pt`` or ``metrics.csv``): :func:`prepare_run_dir`.
- A resumed run keeps its model: flags that would change it (declared per experiment)
  must be absent or equal to the saved ones: :func:`check_resume_flags`.
- A resumed run continues from the newest checkpoint that loads. A truncated or corrupt
  ``last.pt`` is named, set aside (never deleted or overwritten) together with the
  ``metrics.csv`` it would replace, and the run continues from ``best.pt`` when that one
  is intact: :func:`find_resume_checkpoint`, :func:`set_aside`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
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
    "refuse_existing_run",
    "prepare_run_dir",
    "read_run_config",
    "check_resume_flags",
    "find_resume_checkpoint",
    "set_aside",
]

# Files whose presence means a folder holds a run.
RUN_FILES = ("last.pt", "best.pt", "metrics.csv")
# Checkpoints a run can resume from, in order of preference at equal epochs.
CHECKPOINTS = ("last.pt", "best.pt")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def refuse_existing_run(run_dir: str | os.PathLike) -> None:
    """Raise :class:`RunExistsError` when ``run_dir`` holds a run (any of :data:`RUN_FILES`)."""
    run_dir = Path(run_dir)
    held = [name for name in RUN_FILES if (run_dir / name).exists()]
    if held:
        raise RunExistsError(
            f"{run_dir} already holds a run ({', '.join(held)}); resume it with "
            f"--resume {run_dir} or choose another --save folder"
        )


def prepare_run_dir(run_dir: str | os.PathLike, *, resume: bool) -> Path:
    """Check, before any data or model is built, that ``run_dir`` can take this run.

    Creates the folder (a new run) and writes and removes a probe file in it.

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
            f"--resume {run_dir}: no checkpoint there (no {' or '.join(CHECKPOINTS)}): the run "
            f"ended before its first epoch did; start it again with --save {run_dir}"
        )
    broken = "; ".join(f"{p} is truncated or corrupt ({why})" for p, why in unreadable)
    raise CheckpointError(
        f"--resume {run_dir}: {broken}; no intact checkpoint is left, so nothing was "
        f"changed. To recover, restore {run_dir / 'last.pt'} from a copy, or start the run "
        f"again in a new folder with its flags (see {run_dir / 'config.json'}) and --save"
    )


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
