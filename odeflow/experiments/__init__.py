"""The studies odeflow reproduces (above the library line): one module per study, each a
config dataclass whose fields are the command-line flags, ``build()`` and ``run()``."""

from .config import build_parser, opt, parse_config, str2bool
from .mnist import MNISTConfig, build, resolve_gradient, run

# `odeflow train <name>`: the MNIST study on each of its datasets.
EXPERIMENTS = {
    "mnist": MNISTConfig(dataset="mnist"),
    "fashion-mnist": MNISTConfig(dataset="fashion-mnist"),
    "digits": MNISTConfig(dataset="digits"),
}

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
]
