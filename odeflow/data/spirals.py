"""Irregularly sampled, noisy 2-D spirals: the time series of Chen et al. (2018) §5.1.

Each series follows an Archimedean spiral ``r = a + b θ`` (``a = 0.5``, ``b = 0.1``, so
radii between 0.5 and about 2.4 on ``θ ∈ [0, 6π]``), traversed outward at one radian per
time unit, half of them counter-clockwise and half clockwise (mirrored), each from its
own random starting angle. All series share one grid of ``n_total`` times on
``[0, t_total]``; the first ``n_obs_window`` grid times are the observation window, in
which each series is observed at its own ``n_obs`` random times (a mask), with Gaussian
noise of standard deviation ``noise_std``. The rest of the grid is for extrapolation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["SpiralSeries", "make_spirals"]

A, B, THETA_MAX = 0.5, 0.1, 6 * math.pi


@dataclass
class SpiralSeries:
    """A batch of spirals on a shared time grid.

    Attributes:
        t: ``(n_total,)`` grid times, from 0.
        clean: ``(n, n_total, 2)`` noise-free positions.
        noisy: ``(n, n_total, 2)`` observed values (``clean`` plus noise; read only where
            ``mask`` is 1).
        mask: ``(n, n_window)`` 1 at each series' observed times in the window, else 0.
        clockwise: ``(n,)`` bool.
    """

    t: torch.Tensor
    clean: torch.Tensor
    noisy: torch.Tensor
    mask: torch.Tensor
    clockwise: torch.Tensor

    @property
    def n_window(self) -> int:
        return self.mask.shape[1]

    def __len__(self) -> int:
        return self.clean.shape[0]

    def subset(self, index: torch.Tensor) -> SpiralSeries:
        """The series at ``index`` (same grid)."""
        return SpiralSeries(self.t, self.clean[index], self.noisy[index], self.mask[index],
                            self.clockwise[index])


def make_spirals(
    n: int,
    *,
    n_total: int = 100,
    t_total: float = 10.0,
    n_window: int = 50,
    n_obs: int = 30,
    noise_std: float = 0.1,
    generator: torch.Generator | None = None,
) -> SpiralSeries:
    """``n`` spirals (see the module's docstring) drawn from ``generator``.

    Raises:
        ValueError: ``n_obs > n_window``, ``n_window > n_total``, or a grid that does not
            fit on the spiral (``t_total ≥ 6π``).
    """
    if not 0 < n_obs <= n_window <= n_total:
        raise ValueError(f"need 0 < n_obs ({n_obs}) <= n_window ({n_window}) <= n_total "
                         f"({n_total})")
    if t_total >= THETA_MAX:
        raise ValueError(f"t_total must be below 6π ({THETA_MAX:.3f}), got {t_total}")
    g = generator
    t = torch.linspace(0.0, t_total, n_total)
    start = (THETA_MAX - t_total) * torch.rand(n, 1, generator=g)
    theta = start + t  # (n, n_total): outward at one radian per time unit
    r = A + B * theta
    clockwise = torch.rand(n, generator=g) < 0.5
    sign = torch.where(clockwise, -1.0, 1.0)[:, None]
    clean = torch.stack([r * theta.cos(), sign * r * theta.sin()], dim=-1)
    noisy = clean + noise_std * torch.randn(clean.shape, generator=g)
    # each series: n_obs distinct observed times in the window, always including t = 0
    scores = torch.rand(n, n_window, generator=g)
    scores[:, 0] = -1.0
    chosen = scores.argsort(dim=1)[:, :n_obs]
    mask = torch.zeros(n, n_window).scatter_(1, chosen, 1.0)
    return SpiralSeries(t, clean, noisy, mask, clockwise)
