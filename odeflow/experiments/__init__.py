"""The studies odeflow reproduces (above the library line): one module per study, each a
config dataclass whose fields are the command-line flags, ``build()``, ``run()`` and
``main(argv, base, prog)``.

:data:`STUDIES` names each ``odeflow train NAME`` by its module, config class and the
fields that differ from that class's defaults; it is plain data, so listing the studies
(``odeflow --help``) imports none of them, nor torch. :data:`EXPERIMENTS` maps each name
to the config instance of its defaults (built on first use, importing every study).
:func:`train` runs an entry by calling ``main(argv, base=<the entry>, prog="odeflow train
NAME")`` of its module. To add a study ``foo``: write ``odeflow/experiments/foo.py`` with
a config dataclass ``FooConfig`` and ``main(argv=None, base=None, prog=None)``, then add
``"foo": ("foo", "FooConfig", {})`` below (several names may share a module, as the
MNIST datasets do).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from .config import build_parser, opt, parse_config, str2bool

# `odeflow train <name>` -> (module in this package, config class, fields set for it)
STUDIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "mnist": ("mnist", "MNISTConfig", {"dataset": "mnist"}),
    "fashion-mnist": ("mnist", "MNISTConfig", {"dataset": "fashion-mnist"}),
    "digits": ("mnist", "MNISTConfig", {"dataset": "digits"}),
    "spiral": ("spiral", "SpiralConfig", {}),
    "latent-ode": ("latent_ode", "LatentODEConfig", {}),
    "latent-sde": ("latent_sde", "LatentSDEConfig", {}),
    "cnf": ("cnf", "CNFConfig", {}),
    "cifar10": ("cifar10", "CIFAR10Config", {}),
    "robertson": ("robertson", "RobertsonConfig", {}),
}

# names imported from a study module on first use (they import torch)
_LAZY = {
    "MNISTConfig": "mnist", "build": "mnist", "run": "mnist", "resolve_gradient": "epochs",
    "SpiralConfig": "spiral", "LatentODEConfig": "latent_ode", "LatentSDEConfig": "latent_sde",
    "CNFConfig": "cnf",
    "CIFAR10Config": "cifar10", "RobertsonConfig": "robertson",
}


def defaults(name: str) -> Any:
    """The config instance of ``odeflow train NAME``'s defaults (imports its module).

    Raises:
        KeyError: ``name`` is not in :data:`STUDIES`.
    """
    module, cls, fields = STUDIES[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)(**fields)


def train(name: str, argv: Sequence[str] | None = None) -> Any:
    """Run ``odeflow train NAME [argv]``: the ``main`` of the module defining the entry.

    Raises:
        KeyError: ``name`` is not in :data:`STUDIES`.
    """
    base = defaults(name)
    module = importlib.import_module(type(base).__module__)
    return module.main(list(argv or ()), base=base, prog=f"odeflow train {name}")


def __getattr__(attr: str) -> Any:
    # PEP 562: the heavy names load when first asked for, not when the package is imported
    if attr == "EXPERIMENTS":
        value: Any = {name: defaults(name) for name in STUDIES}
    elif attr in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[attr]}"), attr)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
    globals()[attr] = value
    return value


__all__ = [
    "EXPERIMENTS",
    "STUDIES",
    "MNISTConfig",
    "build",
    "build_parser",
    "defaults",
    "opt",
    "parse_config",
    "resolve_gradient",
    "run",
    "str2bool",
    "train",
]
