"""Config dataclasses as command lines: every field is a flag, its help is the field's comment.

Fields are declared with :func:`opt`, whose ``help`` is the one-line comment of the field;
:func:`build_parser` turns the dataclass into an ``argparse`` parser (``--foo-bar``, with
``--foo_bar`` accepted as the seed script's spelling) and :func:`parse_config` applies the
flags the user actually typed on top of a base config (the defaults, or the saved config
of a run being resumed). :func:`parse_run_config` adds ``--resume RUN``: the base becomes
the run's saved ``config.json``, and a flag that would change the saved model (a field
declared with ``opt(..., model=True)``) is refused before anything is loaded.

Every flag is checked before anything is written (:func:`check_config`): a field declared
with ``opt(..., check=...)`` must pass its :class:`Check` (:func:`at_least`,
:data:`POSITIVE`, :data:`SOLVER`, ...), and a config class may add rules between flags in a
``validate()`` method. A failure is a ``ConfigError`` naming the flag and what was
expected, which ``odeflow`` prints as one line (exit status 2).

This module imports neither torch nor the studies: ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = [
    "opt",
    "Check",
    "at_least",
    "between",
    "POSITIVE",
    "NON_NEGATIVE",
    "SOLVER",
    "check_config",
    "str2bool",
    "build_parser",
    "parse_config",
    "parse_run_config",
    "model_fields",
    "config_from_dict",
]

C = TypeVar("C")


@dataclasses.dataclass(frozen=True)
class Check:
    """What a flag's value must be: ``test(value)`` is true for good values, and
    ``expected`` says what they are (shown after "expected"; a callable is evaluated only
    when a message is needed, e.g. a list imported from the core)."""

    test: Callable[[Any], bool]
    expected: str | Callable[[], str]

    def describe(self) -> str:
        """The words of :attr:`expected`."""
        return self.expected() if callable(self.expected) else self.expected


def at_least(low: int | float) -> Check:
    """A number ``>= low`` (e.g. ``at_least(1)`` for a count of steps)."""
    return Check(lambda v: v >= low, f"a number >= {low}")


def between(low: float, high: float, *, low_open: bool = False) -> Check:
    """A number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    if low_open:
        return Check(lambda v: low < v <= high, f"a number in ({low}, {high}]")
    return Check(lambda v: low <= v <= high, f"a number in [{low}, {high}]")


POSITIVE = Check(lambda v: v > 0, "a number > 0")
NON_NEGATIVE = Check(lambda v: v >= 0, "a number >= 0")


def _solver_names() -> tuple[str, ...]:
    from ..solvers import METHODS  # the core's public list; imported only when checking

    return tuple(METHODS)


# the name of a solver the core accepts
SOLVER = Check(lambda v: v in _solver_names(),
               lambda: "a solver name, one of " + ", ".join(_solver_names()))


def opt(
    default: Any, help: str, *, model: bool = False, check: Check | None = None,
    **argparse_kwargs: Any,
) -> Any:
    """A dataclass field whose ``help`` becomes the flag's help (extra kwargs go to argparse).

    ``model=True`` marks a field that defines the model (architecture, data shape): a
    resumed run refuses a value different from the saved one. ``check`` is what a value
    must satisfy (each element, for a tuple), tested by :func:`check_config`.
    """
    meta = {"help": help, "argparse": argparse_kwargs, "model": model, "check": check}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class RunFlags:
    """Flags every study shares (a study re-declares a field to change its default or help):
    the gradient mode, the seed and threads, the run folder, the CI dry run and the outputs."""

    # seed flag of the MNIST study: True means gradient="adjoint"
    adjoint: bool = opt(False, "use the adjoint method (same as --gradient adjoint)")
    # how gradients flow through the solver; None -> from --adjoint
    gradient: str | None = opt(
        None, "direct | adjoint | checkpoint (default: from --adjoint)",
        choices=("direct", "adjoint", "checkpoint"),
    )  # fmt: skip
    # seed of the weights, the data order and every random draw
    seed: int = opt(0, "random seed", check=NON_NEGATIVE)
    # torch CPU threads (0 = torch's default)
    threads: int = opt(0, "torch CPU threads (0 = default)", check=NON_NEGATIVE)
    # run folder; empty -> the study's default under runs/
    save: str = opt("", "run folder (config.json, metrics.csv, checkpoints, plots)")
    # continue a run from its newest intact checkpoint with its saved config
    resume: str = opt("", "resume the run in this folder", metavar="RUN")
    # CI smoke test: a tiny run
    dry_run: bool = opt(False, "a tiny run of two batches or steps (for tests)")
    # tqdm bar
    progress: bool = opt(True, "show a progress bar")
    # figures at the end
    plots: bool = opt(True, "write the figures into the run folder")


def str2bool(value: str | bool) -> bool:
    """Parse ``True/False``, ``yes/no``, ``1/0``, ``on/off`` (case-insensitive)."""
    if isinstance(value, bool):
        return value
    v = value.strip().lower()
    if v in ("true", "t", "yes", "y", "1", "on"):
        return True
    if v in ("false", "f", "no", "n", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True/False), got {value!r}")


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(scalar type, is_sequence) of a field annotation such as ``int``, ``tuple[int, ...]``,
    ``str | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    if origin in (tuple, list):
        return typing.get_args(tp)[0], True
    return tp, False


def build_parser(
    cls: type,
    parser: argparse.ArgumentParser | None = None,
    *,
    suppress_defaults: bool = True,
    defaults: Any = None,
) -> argparse.ArgumentParser:
    """An argparse parser with one flag per field of the dataclass ``cls``.

    With ``suppress_defaults`` the parsed namespace holds only the flags given on the
    command line (defaults are shown in the help text instead). ``defaults`` (an
    instance of ``cls``) supplies the defaults shown; by default ``cls()``.
    """
    parser = parser or argparse.ArgumentParser(
        formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    hints = typing.get_type_hints(cls)
    defaults = defaults if defaults is not None else cls()
    for f in dataclasses.fields(cls):
        tp, is_seq = _base_type(hints[f.name])
        names = ["--" + f.name.replace("_", "-")]
        if "_" in f.name:
            names.append("--" + f.name)
        kwargs: dict[str, Any] = dict(f.metadata.get("argparse", {}))
        kwargs["help"] = f.metadata.get("help", "")
        kwargs["dest"] = f.name
        if tp is bool:
            kwargs.update(type=str2bool, nargs="?", const=True, metavar="BOOL")
        elif is_seq:
            kwargs.update(type=tp, nargs="*")
        else:
            kwargs["type"] = tp
        default = getattr(defaults, f.name)
        if suppress_defaults:
            kwargs["default"] = argparse.SUPPRESS
            kwargs["help"] += f" (default: {default!r})" if default not in ("", None) else ""
        else:
            kwargs["default"] = default
        parser.add_argument(*names, **kwargs)
    return parser


def config_from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """Build ``cls`` from a dict (e.g. a saved ``config.json``), ignoring unknown keys and
    turning lists back into tuples where the field is a tuple."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            v = values[f.name]
            if typing.get_origin(hints[f.name]) is tuple and isinstance(v, list):
                v = tuple(v)
            kwargs[f.name] = v
    return cls(**kwargs)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_config(cfg: Any) -> None:
    """Check every flag of ``cfg`` against its field's :class:`Check`, then the config's own
    ``validate()`` (rules between flags), before anything is built or written.

    Raises:
        ConfigError: naming the first bad flag, its value and what was expected.
    """
    from ..training.errors import ConfigError

    for f in dataclasses.fields(cfg):
        check: Check | None = f.metadata.get("check")
        value = getattr(cfg, f.name)
        if check is None or value is None:
            continue
        for v in value if isinstance(value, (tuple, list)) else (value,):
            try:
                good = check.test(v)
            except TypeError:  # e.g. a string where a number belongs (a hand-edited config)
                good = False
            if not good:
                raise ConfigError(f"{_flag(f.name)} {v!r}: expected {check.describe()}")
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()


class _OneLineParser(argparse.ArgumentParser):
    """A parser whose errors are one line (a study's usage line lists ~30 flags)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _given(cls: type, argv: Sequence[str] | None, base: Any, prog: str | None) -> dict[str, Any]:
    """The fields whose flags appear in ``argv``, with their parsed values."""
    parser = build_parser(cls, _OneLineParser(prog=prog), defaults=base)
    ns = parser.parse_args(argv)
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in vars(ns).items()}


def parse_config(
    cls: type[C], argv: Sequence[str] | None, base: C | None = None, prog: str | None = None
) -> C:
    """Parse ``argv`` into a ``cls`` instance, overriding only the flags given."""
    given = _given(cls, argv, base, prog)
    return dataclasses.replace(base if base is not None else cls(), **given)


def model_fields(cls: type) -> list[str]:
    """Names of the fields declared with ``opt(..., model=True)``."""
    return [f.name for f in dataclasses.fields(cls) if f.metadata.get("model")]


def parse_run_config(
    cls: type[C], argv: Sequence[str] | None, base: C | None = None, prog: str | None = None
) -> C:
    """:func:`parse_config`, plus ``--resume RUN`` for configs with a ``resume`` field.

    With ``--resume RUN`` the base is ``RUN/config.json`` and only the flags typed change
    it (e.g. a larger ``--nepochs``). A typed flag, or a setting of ``base`` that differs
    from the dataclass default (an experiment's own dataset, say), that changes a
    :func:`model_fields` field is refused before any state is loaded.

    Every flag of the result is checked (:func:`check_config`).

    Raises:
        RunFolderError: ``RUN`` has no readable ``config.json``.
        ResumeMismatchError: a model-defining flag differs from the saved value (the
            message names the flag, the saved and the given value), or ``RUN`` is another
            study's run.
        ConfigError: a flag out of range, or ``--save`` beside ``--resume``.
    """
    from ..training.errors import ConfigError, ResumeMismatchError
    from ..training.runfolder import check_resume_flags, read_run_config

    given = _given(cls, argv, base, prog)
    cfg = dataclasses.replace(base if base is not None else cls(), **given)
    run = getattr(cfg, "resume", "")
    if not run:
        check_config(cfg)
        return cfg
    if given.get("save") and given["save"] != run:
        raise ConfigError(f"--save {given['save']} and --resume {run}: a resumed run stays "
                          f"in its folder; give one of them")
    saved = read_run_config(run)
    # another study's run lacks this study's flags (its model would not load)
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in saved]
    if missing:
        study = saved.get("experiment", "another study")
        raise ResumeMismatchError(
            f"--resume {run}: that run was made by {study}, not {prog or cls.__name__} "
            f"(its config.json has no {', '.join(_flag(m) for m in missing[:3])}); resume it "
            f"with its own command, or start a new run with --save")
    asked: dict[str, Any] = {}
    if base is not None:
        default = cls()
        for f in dataclasses.fields(cls):
            if getattr(base, f.name) != getattr(default, f.name):
                asked[f.name] = getattr(base, f.name)
    asked.update(given)
    check_resume_flags(run, saved, asked, model_fields(cls))
    cfg = dataclasses.replace(config_from_dict(cls, saved), **given)
    check_config(cfg)
    return cfg
