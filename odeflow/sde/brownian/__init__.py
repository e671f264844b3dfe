"""Brownian motions for SDE solvers (torchsde-compatible)."""

from .base import BaseBrownian
from .derived import BrownianPath, BrownianTree, ReverseBrownian, brownian_interval_like
from .interval import BrownianInterval

__all__ = ["BaseBrownian", "BrownianInterval", "BrownianPath", "BrownianTree", "ReverseBrownian",
           "brownian_interval_like"]
