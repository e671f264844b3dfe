"""Config dataclasses as command lines: every field is a flag, its help is the field's comment.

Fields are declared with :func:`opt`, whose ``help`` is the one-line comment of the field;
:func:`build_parser` turns the dataclass into an ``argparse`` parser (``--foo-bar``, with
``--foo_bar`` accepted as the seed script's spelling) and :func:`parse_config` applies the
flags the user actually typed on top of a base config (the defaults, or the saved config
of a run being resumed). :func:`parse_run_config` adds ``--resume RUN``: the base becomes
the run's saved ``config.json``, and a flag that would change the saved model (a field
declared with ``opt(..., model=True)``) is refused before anything is loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence
from typing import Any, TypeVar

__all__ = [
    "opt",
    "str2bool",
    "build_parser",
    "parse_config",
    "parse_run_config",
    "model_fields",
    "config_from_dict",
]

C = TypeVar("C")


def opt(default: Any, help: str, *, model: bool = False, **argparse_kwargs: Any) -> Any:
    """A dataclass field whose ``help`` becomes the flag's help (extra kwargs go to argparse).

    ``model=True`` marks a field that defines the model (architecture, data shape): a
    resumed run refuses a value different from the saved one.
    """
    meta = {"help": help, "argparse": argparse_kwargs, "model": model}
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
    seed: int = opt(0, "random seed")
    # torch CPU threads (0 = torch's default)
    threads: int = opt(0, "torch CPU threads (0 = default)")
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


def _given(cls: type, argv: Sequence[str] | None, base: Any, prog: str | None) -> dict[str, Any]:
    """The fields whose flags appear in ``argv``, with their parsed values."""
    parser = build_parser(cls, argparse.ArgumentParser(prog=prog), defaults=base)
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

    Raises:
        RunFolderError: ``RUN`` has no readable ``config.json``.
        ResumeMismatchError: a model-defining flag differs from the saved value; the
            message names the flag, the saved and the given value.
    """
    from ..training.runfolder import check_resume_flags, read_run_config

    given = _given(cls, argv, base, prog)
    cfg = dataclasses.replace(base if base is not None else cls(), **given)
    run = getattr(cfg, "resume", "")
    if not run:
        return cfg
    saved = read_run_config(run)
    asked: dict[str, Any] = {}
    if base is not None:
        default = cls()
        for f in dataclasses.fields(cls):
            if getattr(base, f.name) != getattr(default, f.name):
                asked[f.name] = getattr(base, f.name)
    asked.update(given)
    check_resume_flags(run, saved, asked, model_fields(cls))
    return dataclasses.replace(config_from_dict(cls, saved), **given)
