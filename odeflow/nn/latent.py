"""The latent ODE of Chen et al. (2018) §5: a recognition RNN read backwards over the
observations gives ``q(z₀ | x)``; ``z₀`` evolves by a learned ODE; a decoder maps the latent
path to observations. Trained by the evidence lower bound (ELBO).

Series share one time grid and each is observed where its mask is 1, so one batched solve
serves all of them and the RNN skips unobserved times (its state is carried over them).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

import odeflow

__all__ = ["RecognitionRNN", "LatentODEFunc", "LatentODE"]


class RecognitionRNN(nn.Module):
    """A GRU read from the last grid time to the first, updated only at observed times.

    Its input at an observed time is the observation and the time elapsed since the
    previous update (in reverse); its final state gives the mean and log-variance of
    ``q(z₀ | x)``.
    """

    def __init__(self, obs_dim: int = 2, hidden: int = 25, latent: int = 4) -> None:
        super().__init__()
        self.cell = nn.GRUCell(obs_dim + 1, hidden)
        self.out = nn.Linear(hidden, 2 * latent)
        self.hidden = hidden

    def forward(self, t: torch.Tensor, x: torch.Tensor, mask: torch.Tensor):
        """``t``: ``(T,)``; ``x``: ``(N, T, D)``; ``mask``: ``(N, T)``. Returns ``(mean,
        logvar)`` of shape ``(N, latent)``."""
        n, steps = mask.shape
        h = x.new_zeros(n, self.hidden)
        last = t[-1].expand(n).clone()
        for i in range(steps - 1, -1, -1):
            m = mask[:, i : i + 1]
            gap = (last - t[i])[:, None]
            h_new = self.cell(torch.cat([x[:, i], gap], dim=1), h)
            h = m * h_new + (1 - m) * h
            last = torch.where(m[:, 0] > 0, t[i], last)
        mean, logvar = self.out(h).chunk(2, dim=1)
        return mean, logvar


class LatentODEFunc(nn.Module):
    """``dz/dt = f(z)``: an MLP with ELU activations."""

    def __init__(self, latent: int = 4, hidden: int = 20) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent, hidden), nn.ELU(), nn.Linear(hidden, hidden),
                                 nn.ELU(), nn.Linear(hidden, latent))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class LatentODE(nn.Module):
    """Encoder, latent dynamics and decoder.

    Args:
        obs_dim: observation size; latent: latent size; rnn_hidden, ode_hidden,
            dec_hidden: widths of the three networks.
        method, rtol, atol, gradient: of the latent solve (:func:`odeflow.solve`).

    Attributes:
        last_stats: the latest latent solve's ``SolveStats``.
    """

    def __init__(
        self,
        obs_dim: int = 2,
        latent: int = 4,
        rnn_hidden: int = 25,
        ode_hidden: int = 20,
        dec_hidden: int = 20,
        method: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-4,
        gradient: str = "direct",
    ) -> None:
        super().__init__()
        self.encoder = RecognitionRNN(obs_dim, rnn_hidden, latent)
        self.func = LatentODEFunc(latent, ode_hidden)
        self.decoder = nn.Sequential(nn.Linear(latent, dec_hidden), nn.ReLU(),
                                     nn.Linear(dec_hidden, obs_dim))
        self.solver = dict(method=method, rtol=rtol, atol=atol, gradient=gradient)
        self.last_stats: Any = None

    def decode(self, z0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Solve from ``z0`` (``(N, latent)``) at ``t`` and decode: ``(N, len(t), obs_dim)``."""
        sol = odeflow.solve(self.func, z0, t, **self.solver)
        self.last_stats = sol.stats
        return self.decoder(sol.ys).transpose(0, 1)

    def elbo(
        self, t: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, obs_std: float,
        generator: torch.Generator | None = None, kl_weight: float = 1.0,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The negative ELBO per series (to minimise), with one sample of ``z₀``.

        ``x``, ``mask`` cover the grid ``t``; the likelihood is Gaussian with standard
        deviation ``obs_std`` at the observed times only.
        """
        mean, logvar = self.encoder(t, x, mask)
        eps = torch.randn(mean.shape, generator=generator).to(mean)
        z0 = mean + (0.5 * logvar).exp() * eps
        pred = self.decode(z0, t)
        sq = ((pred - x) ** 2).sum(-1)  # (N, T)
        log_lik = -(mask * (0.5 * sq / obs_std**2
                            + x.shape[-1] * (math.log(obs_std) + 0.5 * math.log(2 * math.pi))))
        log_lik = log_lik.sum(1)
        kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(1)
        loss = -(log_lik - kl_weight * kl).mean()
        return loss, {"log_lik": float(log_lik.mean().detach()), "kl": float(kl.mean().detach())}
