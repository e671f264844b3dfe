"""Dense output helpers shared by the loops: linear and cubic Hermite interpolation."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["hermite", "linear"]


def hermite(y0: Tensor, y1: Tensor, f0: Tensor, f1: Tensor, dt: float, theta: float) -> Tensor:
    """Cubic Hermite interpolant on a step from its end values and derivatives.

    Third order: the error is O(dt^4) on each step. Built with ops that save nothing for
    backward, so it is cheap under autograd too.
    """
    t2 = theta * theta
    t3 = t2 * theta
    h01 = -2 * t3 + 3 * t2
    h10 = t3 - 2 * t2 + theta
    h11 = t3 - t2
    out = torch.add(y0, y1 - y0, alpha=h01)
    out.add_(f0, alpha=dt * h10)
    out.add_(f1, alpha=dt * h11)
    return out


def linear(y0: Tensor, y1: Tensor, theta: float) -> Tensor:
    """Linear interpolation ``y0 + theta (y1 - y0)``."""
    return torch.lerp(y0, y1, theta)
