"""Mistakes a user can fix, as exception types the ``odeflow`` command reports in one line.

Everything here derives from :class:`UserError`. ``odeflow.cli.main`` catches
:data:`USER_ERRORS` (these, plus the data readers' errors, which live below this layer
and cannot derive from :class:`UserError`), prints the message and exits with status 2
instead of a traceback. A new experiment gets the same treatment by raising a
:class:`UserError` (or a subclass) for anything the person at the keyboard can correct.
"""

from __future__ import annotations

from ..data import CIFARError, CIFARNotFoundError, DataNotFoundError, IDXError

__all__ = [
    "UserError",
    "RunFolderError",
    "RunExistsError",
    "CheckpointError",
    "NoCheckpointError",
    "ResumeMismatchError",
    "RunLockedError",
    "ConfigError",
    "USER_ERRORS",
]


class UserError(Exception):
    """A mistake in what the user asked for; the message says what and how to fix it."""


class ConfigError(UserError, ValueError):
    """Flags that contradict each other or cannot work together."""


class RunFolderError(UserError):
    """The run folder cannot be used: unwritable, not a run folder, or holding a run."""


class RunExistsError(RunFolderError, FileExistsError):
    """The run folder already holds a run and ``resume`` was not asked for."""


class RunLockedError(RunFolderError):
    """Another live process is writing to the run folder."""


class CheckpointError(RunFolderError):
    """No intact checkpoint to resume from (the ones there are truncated or corrupt)."""


class NoCheckpointError(CheckpointError, FileNotFoundError):
    """``resume`` in a folder that holds no checkpoint at all."""


class ResumeMismatchError(UserError, ValueError):
    """A resumed run was given a flag that would change its model."""


# Caught by the `odeflow` command: one line on stderr, exit status 2.
USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError,
    DataNotFoundError,
    IDXError,
    CIFARNotFoundError,
    CIFARError,
)
