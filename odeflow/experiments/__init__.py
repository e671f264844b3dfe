"""The studies odeflow reproduces (above the library line): one module per study, each a
config dataclass whose fields are the command-line flags, ``build()``, ``run()`` and
``main(argv, base, prog)``.

The registry :data:`EXPERIMENTS` maps the name of ``odeflow train NAME`` to a config
instance: the defaults of that command. :func:`train` runs an entry by calling
``main(argv, base=<the entry>, prog="odeflow train NAME")`` of the module that defines the
entry's class. To add a study ``foo``: write ``odeflow/experiments/foo.py`` with a config
dataclass ``FooConfig`` and ``main(argv=None, base=None, prog=None)``, then add
``"foo": FooConfig()`` below (several names may share a module, as the MNIST datasets do).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from .cifar10 import CIFAR10Config
from .cnf import CNFConfig
from .config import build_parser, opt, parse_config, str2bool
from .latent_ode import LatentODEConfig
from .mnist import MNISTConfig, build, resolve_gradient, run
from .robertson import RobertsonConfig
from .spiral import SpiralConfig

# `odeflow train <name>` -> the defaults of that command (a config of the study's module).
EXPERIMENTS: dict[str, Any] = {
    "mnist": MNISTConfig(dataset="mnist"),
    "fashion-mnist": MNISTConfig(dataset="fashion-mnist"),
    "digits": MNISTConfig(dataset="digits"),
    "spiral": SpiralConfig(),
    "latent-ode": LatentODEConfig(),
    "cnf": CNFConfig(),
    "cifar10": CIFAR10Config(),
    "robertson": RobertsonConfig(),
}


def train(name: str, argv: Sequence[str] | None = None) -> Any:
    """Run ``odeflow train NAME [argv]``: the ``main`` of the module defining the entry.

    Raises:
        KeyError: ``name`` is not in :data:`EXPERIMENTS`.
    """
    base = EXPERIMENTS[name]
    module = importlib.import_module(type(base).__module__)
    return module.main(list(argv or ()), base=base, prog=f"odeflow train {name}")


__all__ = [
    "EXPERIMENTS",
    "MNISTConfig",
    "build",
    "build_parser",
    "opt",
    "parse_config",
    "resolve_gradient",
    "run",
    "str2bool",
    "train",
]
