"""Two-dimensional toy densities for continuous normalizing flows.

The five densities of the FFJORD paper's figure 2 family (Grathwohl et al., ICLR 2019),
each defined here by its sampling recipe and drawn from a ``torch.Generator``, so a
seed fixes every sample:

- ``circles``: two concentric rings of radii 3 and 1.5, equally likely, with isotropic
  Gaussian noise of standard deviation 0.24 (scikit-learn's ``make_circles`` with
  ``factor=0.5, noise=0.08``, scaled by 3). Its log-density is known in closed form
  (:func:`circles_log_prob`), so its entropy (about 0.79 nats per point) is the floor of
  any model's test NLL.
- ``moons``: two interleaved half circles (noise 0.1), scaled by 2 and shifted by
  (-1, -0.2).
- ``8gaussians``: eight Gaussians of standard deviation 0.5/√2 centred on a circle of
  radius 4/√2.
- ``pinwheel``: five curved arms (radial std 0.3, tangential std 0.1, rate 0.25), × 2.
- ``checkerboard``: uniform on the dark squares of a 4×4 board on [-4, 4]².
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["TOY_DENSITIES", "sample_toy", "circles_log_prob", "circles_entropy"]

Generator = torch.Generator | None

CIRCLE_RADII = (3.0, 1.5)
CIRCLE_NOISE = 0.24


def _circles(n: int, g: Generator) -> torch.Tensor:
    radius = torch.tensor(CIRCLE_RADII)[torch.randint(0, 2, (n,), generator=g)]
    phi = 2 * math.pi * torch.rand(n, generator=g)
    ring = radius[:, None] * torch.stack([phi.cos(), phi.sin()], dim=1)
    return ring + CIRCLE_NOISE * torch.randn(n, 2, generator=g)


def _moons(n: int, g: Generator) -> torch.Tensor:
    upper = torch.rand(n, generator=g) < 0.5
    theta = math.pi * torch.rand(n, generator=g)
    x = torch.where(upper, theta.cos(), 1 - theta.cos())
    y = torch.where(upper, theta.sin(), 0.5 - theta.sin())
    pts = torch.stack([x, y], dim=1) + 0.1 * torch.randn(n, 2, generator=g)
    return 2 * pts + torch.tensor([-1.0, -0.2])


def _eight_gaussians(n: int, g: Generator) -> torch.Tensor:
    angle = torch.randint(0, 8, (n,), generator=g) * (math.pi / 4)
    centres = 4.0 * torch.stack([angle.cos(), angle.sin()], dim=1)
    return (centres + 0.5 * torch.randn(n, 2, generator=g)) / math.sqrt(2)


def _pinwheel(n: int, g: Generator) -> torch.Tensor:
    arms, radial, tangential, rate = 5, 0.3, 0.1, 0.25
    arm = torch.randint(0, arms, (n,), generator=g)
    r = 1 + radial * torch.randn(n, generator=g)
    s = tangential * torch.randn(n, generator=g)
    angle = 2 * math.pi * arm / arms + rate * r.exp()
    c, si = angle.cos(), angle.sin()
    return 2 * torch.stack([c * r - si * s, si * r + c * s], dim=1)


def _checkerboard(n: int, g: Generator) -> torch.Tensor:
    x1 = 4 * torch.rand(n, generator=g) - 2
    x2 = torch.rand(n, generator=g) - 2 * torch.randint(0, 2, (n,), generator=g).float()
    x2 = x2 + torch.floor(x1) % 2
    return 2 * torch.stack([x1, x2], dim=1)


TOY_DENSITIES: dict[str, Callable[[int, Generator], torch.Tensor]] = {
    "circles": _circles,
    "moons": _moons,
    "8gaussians": _eight_gaussians,
    "pinwheel": _pinwheel,
    "checkerboard": _checkerboard,
}


def sample_toy(name: str, n: int, generator: Generator = None) -> torch.Tensor:
    """``n`` points (float32, shape ``(n, 2)``) of the toy density ``name``.

    Raises:
        ValueError: ``name`` is not one of :data:`TOY_DENSITIES`.
    """
    if name not in TOY_DENSITIES:
        raise ValueError(f"unknown toy density {name!r}; choose from {', '.join(TOY_DENSITIES)}")
    return TOY_DENSITIES[name](n, generator)


def circles_log_prob(x: torch.Tensor) -> torch.Tensor:
    """The exact log-density of ``circles`` at ``x`` (shape ``(..., 2)``).

    A ring of radius ``R`` blurred by ``N(0, σ²I)`` has density
    ``exp(-(r² + R²)/(2σ²)) I₀(rR/σ²) / (2πσ²)`` at distance ``r`` from the centre; the
    data is the equal mixture of two such rings.
    """
    x = x.double()
    r = x.norm(dim=-1)
    s2 = CIRCLE_NOISE**2
    logs = []
    for radius in CIRCLE_RADII:
        z = r * radius / s2
        # log I0(z) = log(i0e(z)) + z, stable for large z
        logs.append(-(r**2 + radius**2) / (2 * s2) + torch.special.i0e(z).log() + z
                    - math.log(2 * math.pi * s2))
    return torch.logsumexp(torch.stack(logs), dim=0) - math.log(2)


def circles_entropy(n: int = 200_000, seed: int = 0) -> float:
    """Monte Carlo estimate of the entropy of ``circles`` in nats (≈ 0.79)."""
    x = _circles(n, torch.Generator().manual_seed(seed))
    return float(-circles_log_prob(x).mean())
