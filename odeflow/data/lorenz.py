"""Noisy, optionally irregular time series of the stochastic Lorenz attractor.

The toy problem of Li, Wong, Chen & Duvenaud (2020, §7.2): the Lorenz system with
multiplicative diagonal noise,

    dx = a₁ (y − x) dt + b₁ x dW₁
    dy = (a₂ x − y − x z) dt + b₂ y dW₂
    dz = (x y − a₃ z) dt + b₃ z dW₃,

with ``a = (10, 28, 8/3)`` and ``b = (0.1, 0.28, 0.3)``, started from ``N(0, I)``. It is
simulated here with :mod:`odeflow.sde` itself (Euler–Maruyama on a fine step, a seeded
Brownian interval), so no data are downloaded. The paths are normalised (each coordinate
to zero mean and unit standard deviation over all series and times, so the problem's
scale does not depend on the flags), then Gaussian observation noise is added. Each
series is observed at ``n_obs`` of the ``n_points`` grid times (a mask; all of them when
``n_obs == n_points``), chosen at random per series, always including the first time so
that every posterior starts from an observation.

References:
    X. Li, T.-K. L. Wong, R. T. Q. Chen, D. Duvenaud, "Scalable gradients for stochastic
    differential equations", AISTATS 2020.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import sde as odesde

__all__ = ["StochasticLorenz", "LorenzSeries", "make_lorenz"]


class StochasticLorenz(odesde.SDEIto):
    """The stochastic Lorenz system above (Itô, diagonal noise); ``y`` is ``(batch, 3)``."""

    def __init__(self, a: tuple[float, float, float] = (10.0, 28.0, 8.0 / 3.0),
                 b: tuple[float, float, float] = (0.1, 0.28, 0.3)) -> None:
        super().__init__(noise_type="diagonal")
        self.a, self.b = a, b

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The drift, ``(batch, 3)``."""
        x1, x2, x3 = y.unbind(1)
        a1, a2, a3 = self.a
        return torch.stack((a1 * (x2 - x1), a2 * x1 - x2 - x1 * x3, x1 * x2 - a3 * x3), dim=1)

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The diagonal diffusion, ``(batch, 3)``."""
        return y * torch.tensor(self.b, dtype=y.dtype, device=y.device)


@dataclass
class LorenzSeries:
    """A batch of series on a shared time grid.

    Attributes:
        t: ``(n_points,)`` grid times, from 0.
        clean: ``(n, n_points, 3)`` normalised paths (no observation noise).
        noisy: ``(n, n_points, 3)`` ``clean`` plus observation noise (read only where
            ``mask`` is 1).
        mask: ``(n, n_points)`` 1 at each series' observed times, else 0.
    """

    t: torch.Tensor
    clean: torch.Tensor
    noisy: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return self.clean.shape[0]

    def subset(self, index: torch.Tensor) -> LorenzSeries:
        """The series at ``index`` (same grid)."""
        return LorenzSeries(self.t, self.clean[index], self.noisy[index], self.mask[index])

    def to(self, device: torch.device | str) -> LorenzSeries:
        """The same series on ``device``."""
        return LorenzSeries(self.t.to(device), self.clean.to(device), self.noisy.to(device),
                            self.mask.to(device))


def make_lorenz(
    n: int,
    *,
    n_points: int = 50,
    t_total: float = 1.0,
    n_obs: int = 50,
    noise_std: float = 0.05,
    sim_dt: float = 1e-3,
    generator: torch.Generator | None = None,
) -> LorenzSeries:
    """``n`` series of the stochastic Lorenz system (see the module's docstring).

    Args:
        n: number of series.
        n_points: grid times on ``[0, t_total]``.
        t_total: time span.
        n_obs: observed grid times per series (``n_points``: a regular series).
        noise_std: observation noise, in units of the normalised coordinates.
        sim_dt: step of the Euler–Maruyama simulation (much finer than the grid).
        generator: the source of every random draw (initial states, Brownian motion,
            noise, masks): the same generator state gives the same series.

    Raises:
        ValueError: ``n < 1``, ``n_obs`` outside ``[1, n_points]``, ``n_points < 2``, or a
            non-positive ``t_total`` or ``sim_dt``.
    """
    if n < 1 or n_points < 2 or not 1 <= n_obs <= n_points:
        raise ValueError(f"need n >= 1 (got {n}), n_points >= 2 (got {n_points}) and "
                         f"1 <= n_obs <= n_points (got n_obs {n_obs})")
    if not (t_total > 0 and sim_dt > 0):
        raise ValueError(f"need t_total > 0 and sim_dt > 0, got {t_total} and {sim_dt}")
    g = generator
    t = torch.linspace(0.0, t_total, n_points, dtype=torch.float64)
    y0 = torch.randn(n, 3, generator=g, dtype=torch.float64)
    entropy = int(torch.randint(0, 2**62, (), generator=g))
    bm = odesde.BrownianInterval(t0=0.0, t1=t_total, size=(n, 3), dtype=torch.float64,
                                 entropy=entropy, dt=sim_dt)
    with torch.no_grad():
        paths = odesde.sdeint(StochasticLorenz(), y0, t, bm=bm, method="euler", dt=sim_dt)
    paths = paths.transpose(0, 1)  # (n, n_points, 3)
    clean = (paths - paths.mean(dim=(0, 1))) / paths.std(dim=(0, 1))
    noisy = clean + noise_std * torch.randn(clean.shape, generator=g, dtype=torch.float64)
    # the first time is always observed; the other n_obs - 1 are a random subset per series
    order = torch.rand(n, n_points - 1, generator=g).argsort(dim=1)[:, : n_obs - 1] + 1
    mask = torch.zeros(n, n_points)
    mask[:, 0] = 1.0
    mask.scatter_(1, order, 1.0)
    return LorenzSeries(t.float(), clean.float(), noisy.float(), mask)
