"""The latent SDE of Li, Wong, Chen & Duvenaud (2020): a variational posterior SDE, a
prior SDE sharing its diffusion, and the evidence lower bound (ELBO) whose path term is
the KL divergence between the two, given by ``odeflow.sde.sdeint(..., logqp=True)``.

- An encoder (a GRU read from the last grid time to the first) turns the observations
  into a context ``c(t)`` at every grid time, summarising what is observed from ``t``
  on; ``c(0)`` also gives ``q(z₀ | x)``.
- Posterior: ``dz = h_φ(t, z, c(t)) dt + g(z) ∘ dW``; prior: ``dz = f_θ(z) dt + g(z) dW``,
  with the same diagonal diffusion ``g``, each coordinate a function of its own
  coordinate only (the diagonal-noise contract) and kept in (0, 1) by a sigmoid.
- A linear decoder maps the latent path to observations; the likelihood is Gaussian at
  each series' observed grid times (a mask), so irregular series share one solve.

ELBO per series: ``log p(x | z) − KL(q(z₀) ‖ p(z₀)) − ∫ ½ |u|² dt`` with
``g u = h_φ − f_θ`` (Girsanov), the last term one Monte-Carlo sample of the path KL.

Naming: ``odeflow.sde`` (like torchsde) calls the drift it integrates ``f`` and the prior
drift of the ``logqp`` term ``h``; :class:`PosteriorSDE` adapts the model to those
names, so the model's own methods are named by their role.

References:
    X. Li, T.-K. L. Wong, R. T. Q. Chen, D. Duvenaud, "Scalable gradients for stochastic
    differential equations", AISTATS 2020, §5 and §7.2.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import torch
from torch import nn

from .. import sde as odesde

__all__ = ["SDE_METHODS", "LatentSDE", "PosteriorSDE", "PriorSDE", "DiagonalDiffusion"]

# the solvers a latent SDE may use, with the calculus each integrates; the model is
# declared in that calculus (the KL term is the same in both: the two SDEs share g, so
# their drifts differ by the same amount in Itô and Stratonovich form)
SDE_METHODS: dict[str, str] = {
    "euler": "ito", "milstein": "ito", "srk": "ito",
    "midpoint": "stratonovich", "heun": "stratonovich", "reversible_heun": "stratonovich",
}


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.Softplus(), nn.Linear(hidden, hidden),
                         nn.Softplus(), nn.Linear(hidden, n_out))


class DiagonalDiffusion(nn.Module):
    """``g(z)ᵢ = σ(w₂ᵢ · softplus(w₁ᵢ zᵢ + b₁ᵢ) + b₂ᵢ)``: one small network per coordinate,
    evaluated for all coordinates at once (batched weights instead of a module list)."""

    def __init__(self, latent: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(latent, hidden).uniform_(-1.0, 1.0))  # fan-in 1
        self.b1 = nn.Parameter(torch.zeros(latent, hidden))
        self.w2 = nn.Parameter(torch.empty(latent, hidden).uniform_(-1.0, 1.0) / math.sqrt(hidden))
        self.b2 = nn.Parameter(torch.zeros(latent))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z``: ``(batch, latent)`` → ``(batch, latent)``, in (0, 1)."""
        hidden = nn.functional.softplus(z[..., None] * self.w1 + self.b1)  # (B, L, H)
        return torch.sigmoid((hidden * self.w2).sum(-1) + self.b2)


class LatentSDE(nn.Module):
    """Encoder, posterior and prior drifts, shared diffusion and decoder.

    Args:
        obs_dim: observation size.
        latent: latent size.
        context: size of the encoder's context ``c(t)``.
        hidden: width of the drift and diffusion networks.
        rnn_hidden: GRU units of the encoder.
        method: SDE solver, a key of :data:`SDE_METHODS`.
        dt: its fixed step.
        gradient: ``"direct"`` (backpropagation through the solver) or ``"adjoint"``
            (:func:`odeflow.sde.sdeint_adjoint`: with ``reversible_heun`` its exact
            reversible adjoint, otherwise the stochastic adjoint of Li et al., whose
            gradients converge to backpropagation's as ``dt → 0``).

    Attributes:
        last_stats: the latest solve's :class:`~odeflow.sde.steps.SDEStats`.
        last_posterior: the :class:`PosteriorSDE` of the latest posterior solve (its
            ``evaluations`` go on counting during an adjoint's backward pass).

    Raises:
        ValueError: an unknown ``method`` or ``gradient``.
    """

    def __init__(self, obs_dim: int = 3, latent: int = 4, context: int = 16, hidden: int = 32,
                 rnn_hidden: int = 32, method: str = "euler", dt: float = 0.02,
                 gradient: str = "direct") -> None:
        super().__init__()
        if method not in SDE_METHODS:
            raise ValueError(f"method {method!r}: expected one of {', '.join(SDE_METHODS)}")
        if gradient not in ("direct", "adjoint"):
            raise ValueError(f"gradient {gradient!r}: expected 'direct' or 'adjoint'")
        self.gru = nn.GRU(obs_dim + 1, rnn_hidden)
        self.to_context = nn.Linear(rnn_hidden, context)
        self.qz0 = nn.Linear(context, 2 * latent)
        self.posterior_net = _mlp(latent + context, hidden, latent)
        self.prior_net = _mlp(latent, hidden, latent)
        self.diffusion = DiagonalDiffusion(latent, hidden)
        self.decoder = nn.Linear(latent, obs_dim)
        self.pz0_mean = nn.Parameter(torch.zeros(latent))
        self.pz0_logstd = nn.Parameter(torch.zeros(latent))
        self.latent, self.method, self.dt, self.gradient = latent, method, dt, gradient
        self.sde_type = SDE_METHODS[method]
        self.last_stats: Any = None
        self.last_posterior: PosteriorSDE | None = None

    # -- the pieces -------------------------------------------------------------------

    def encode(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The context ``(T, N, context)`` of ``x`` ``(N, T, D)`` observed where ``mask``
        ``(N, T)`` is 1: the GRU reads backwards in time, so ``c(tᵢ)`` sees ``x`` from
        ``tᵢ`` on. Unobserved values are zeroed and the mask is an input, so they carry no
        information."""
        inp = torch.cat((x * mask[..., None], mask[..., None]), dim=-1).transpose(0, 1)
        out, _ = self.gru(inp.flip(0))
        return self.to_context(out).flip(0)

    def prior_drift(self, z: torch.Tensor) -> torch.Tensor:
        """``f_θ(z)``, ``(batch, latent)``."""
        return self.prior_net(z)

    def posterior_drift(self, z: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """``h_φ(z, c)``, ``(batch, latent)``."""
        return self.posterior_net(torch.cat((z, ctx), dim=1))

    def _brownian(self, t: torch.Tensor, batch: int, like: torch.Tensor,
                  generator: torch.Generator | None, logqp: bool) -> odesde.BrownianInterval:
        """A Brownian motion seeded from ``generator`` (so a run replays exactly); with
        ``logqp`` it has one more channel, for the KL coordinate that ``sdeint`` appends
        to the state (diagonal noise: one channel per state coordinate)."""
        entropy = int(torch.randint(0, 2**62, (), generator=generator))
        levy = "space-time" if self.method == "srk" else "none"
        return odesde.BrownianInterval(t0=float(t[0]), t1=float(t[-1]),
                                       size=(batch, self.latent + int(logqp)), dtype=like.dtype,
                                       device=like.device, entropy=entropy, dt=self.dt,
                                       levy_area_approximation=levy)

    # -- posterior and prior ------------------------------------------------------------

    def posterior(self, t: torch.Tensor, x: torch.Tensor, mask: torch.Tensor,
                  generator: torch.Generator | None = None, samples: int = 1):
        """Sample posterior paths.

        Args:
            t: ``(T,)`` grid; x: ``(N, T, D)``; mask: ``(N, T)``.
            generator: source of ``z₀``'s noise and of the Brownian motion.
            samples: paths per series (the series repeated, sample-major).

        Returns:
            ``(zs, log_ratio, mean, logstd)``: paths ``(T, samples·N, latent)``, the path
            KL increments ``(T − 1, samples·N)``, and ``q(z₀)``'s parameters ``(N, latent)``.
        """
        ctx = self.encode(x, mask)
        mean, logstd = self.qz0(ctx[0]).chunk(2, dim=1)
        if samples > 1:
            ctx = ctx.repeat(1, samples, 1)
        m, s = mean.repeat(samples, 1), logstd.repeat(samples, 1)
        eps = torch.randn(m.shape, generator=generator).to(m)
        z0 = m + s.exp() * eps
        sde = self.last_posterior = PosteriorSDE(self, t, ctx)
        bm = self._brownian(t, z0.shape[0], z0, generator, logqp=True)
        if self.gradient == "adjoint":
            # the adjoint returns gradients only to the tensors it is told about: the
            # context (it enters the drift outside its arguments; the encoder's weights get
            # theirs through it) and the weights of the SDE's own networks, not the
            # encoder's, which are reached only through the context
            nets = (self.posterior_net, self.prior_net, self.diffusion)
            params = (ctx, *(p for net in nets for p in net.parameters() if p.requires_grad))
            zs, log_ratio = odesde.sdeint_adjoint(sde, z0, t, bm=bm, method=self.method,
                                                  dt=self.dt, logqp=True, adjoint_params=params)
        else:
            zs, log_ratio = odesde.sdeint(sde, z0, t, bm=bm, method=self.method, dt=self.dt,
                                          logqp=True)
        self.last_stats = odesde.last_stats()
        return zs, log_ratio, mean, logstd

    def elbo(self, t: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, obs_std: float,
             generator: torch.Generator | None = None, kl_weight: float = 1.0,
             samples: int = 1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss and the ELBO's pieces.

        Args:
            t: ``(T,)`` grid; x: ``(N, T, D)`` observations; mask: ``(N, T)``, 1 where
                observed (the Gaussian likelihood, of standard deviation ``obs_std``,
                counts only those).
            generator: source of every random draw.
            kl_weight: weight of both KL terms in the loss (KL warm-up).
            samples: posterior paths per series.

        Returns:
            ``(loss, parts)``: the loss is the negative ELBO with the KL weighted by
            ``kl_weight``, averaged over series and samples; ``parts`` holds ``log_lik``,
            ``kl0``, ``kl_path`` and ``elbo`` (unweighted), each ``(samples·N,)``
            (sample-major), and ``pred``, the decoded paths ``(samples·N, T, D)``.
        """
        zs, log_ratio, mean, logstd = self.posterior(t, x, mask, generator, samples)
        pred = self.decoder(zs).transpose(0, 1)  # (S·N, T, D)
        log_lik = gaussian_log_lik(pred, x.repeat(samples, 1, 1), mask.repeat(samples, 1),
                                   obs_std)
        kl0 = normal_kl(mean, logstd, self.pz0_mean, self.pz0_logstd).sum(1).repeat(samples)
        kl_path = log_ratio.sum(0)
        elbo = log_lik - kl0 - kl_path
        loss = -(log_lik - kl_weight * (kl0 + kl_path)).mean()
        return loss, {"log_lik": log_lik, "kl0": kl0, "kl_path": kl_path, "elbo": elbo,
                      "pred": pred}

    @torch.no_grad()
    def sample_prior(self, t: torch.Tensor, n: int,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` paths of the prior SDE decoded to observations: ``(n, T, D)``."""
        eps = torch.randn((n, self.latent), generator=generator).to(self.pz0_mean)
        z0 = self.pz0_mean + self.pz0_logstd.exp() * eps
        bm = self._brownian(t, n, z0, generator, logqp=False)
        zs = odesde.sdeint(PriorSDE(self), z0, t, bm=bm, method=self.method, dt=self.dt)
        self.last_stats = odesde.last_stats()
        return self.decoder(zs).transpose(0, 1)


class PosteriorSDE:
    """The posterior SDE in ``odeflow.sde``'s names: ``f`` its drift, ``h`` the prior
    drift (for ``logqp``), ``g`` the shared diffusion.

    The drift at time ``t`` reads the context of the first grid time after ``t``: the
    observations still to come (as in Li et al.'s code). ``evaluations`` counts the calls
    of ``f`` and ``g``, the forward solve's and those of an adjoint's backward pass alike
    (``odeflow.sde.last_stats()`` holds the forward's only).
    """

    noise_type = "diagonal"

    def __init__(self, model: LatentSDE, t: torch.Tensor, ctx: torch.Tensor) -> None:
        self.model, self.ctx, self.sde_type = model, ctx, model.sde_type
        self.times = [float(v) for v in t]
        # solver times land on grid times up to rounding: compare with a margin
        self._tol = 1e-6 * (self.times[-1] - self.times[0])
        self.evaluations = 0

    def _context(self, t: torch.Tensor) -> torch.Tensor:
        i = bisect.bisect_right(self.times, float(t) + self._tol)
        return self.ctx[min(i, len(self.times) - 1)]

    def f(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.evaluations += 1
        return self.model.posterior_drift(z, self._context(t))

    def h(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.model.prior_drift(z)

    def g(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.evaluations += 1
        return self.model.diffusion(z)


class PriorSDE:
    """The prior SDE in ``odeflow.sde``'s names (``f`` its drift, ``g`` the diffusion)."""

    noise_type = "diagonal"

    def __init__(self, model: LatentSDE) -> None:
        self.model, self.sde_type = model, model.sde_type

    def f(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.model.prior_drift(z)

    def g(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.model.diffusion(z)


def gaussian_log_lik(pred: torch.Tensor, x: torch.Tensor, mask: torch.Tensor,
                     std: float) -> torch.Tensor:
    """``Σ log N(x | pred, std²)`` over the observed times (``mask`` 1) and coordinates:
    ``(N,)`` from ``(N, T, D)`` tensors and a ``(N, T)`` mask."""
    per_point = -0.5 * ((pred - x) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)
    return (per_point.sum(-1) * mask).sum(1)


def normal_kl(mean_q: torch.Tensor, logstd_q: torch.Tensor, mean_p: torch.Tensor,
              logstd_p: torch.Tensor) -> torch.Tensor:
    """``KL(N(mean_q, e^{2 logstd_q}) ‖ N(mean_p, e^{2 logstd_p}))``, elementwise (≥ 0)."""
    var_ratio = (2 * (logstd_q - logstd_p)).exp()
    return 0.5 * (var_ratio + ((mean_q - mean_p) / logstd_p.exp()) ** 2 - 1) \
        - (logstd_q - logstd_p)
