"""One writer per run folder: ``run_dir/.lock`` holds the pid of the process writing there.

A second run on the same folder (a new run, or ``--resume``) is refused while that
process lives. A lock left behind by a process that died (killed, machine rebooted) is
stale and taken over, so a crash never needs a file deleted by hand. The lock is a
file created with ``O_EXCL``, so two runs starting at the same moment cannot both get it.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from .errors import RunLockedError

__all__ = ["LOCK_NAME", "run_lock", "lock_holder"]

LOCK_NAME = ".lock"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: an existence check, nothing is sent
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user
    except OSError:
        return False
    return True


def lock_holder(run_dir: str | os.PathLike) -> int | None:
    """The pid of the live process holding ``run_dir``'s lock, or None (no lock, or a stale
    one). A lock taken on another machine (a shared disk) cannot be checked: it counts
    as held."""
    path = Path(run_dir) / LOCK_NAME
    try:
        text = path.read_text().split()
    except OSError:  # no lock (or no folder)
        return None
    try:
        pid, host = int(text[0]), text[1] if len(text) > 1 else socket.gethostname()
    except (ValueError, IndexError):
        return None  # unreadable (a write cut short): stale
    if host != socket.gethostname():
        return pid  # cannot check another machine's process: assume it runs
    return pid if _alive(pid) else None


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike, *, enabled: bool = True) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the duration of the ``with`` block.

    Args:
        run_dir: an existing run folder.
        enabled: False on the ranks of a distributed job that do not write (a no-op).

    Raises:
        RunLockedError: a live process holds the lock.
    """
    if not enabled:
        yield
        return
    path = Path(run_dir) / LOCK_NAME
    for _ in range(2):  # a second try after removing a stale lock
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = lock_holder(run_dir)
            if holder is not None:
                raise RunLockedError(
                    f"{run_dir} is in use by another run (process {holder}); wait for it to "
                    f"end, or choose another --save folder"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {socket.gethostname()}\n")
        break
    else:
        raise RunLockedError(f"{run_dir}: could not take the run folder's lock {path}")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
