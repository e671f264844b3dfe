"""Continuous normalizing flows (Chen et al. 2018 §4; FFJORD, Grathwohl et al. 2019;
RNODE, Finlay et al. 2020).

A CNF moves data ``x = z(0)`` along ``dz/dt = f(t, z)`` to ``z(T)``, where the density is
the standard normal. The log-density obeys the instantaneous change of variables
``d log p(z(t))/dt = -tr(∂f/∂z)``, so

    log p(x) = log N(z(T); 0, I) + ∫₀ᵀ tr(∂f/∂z(t)) dt,

and the integral is solved together with the state. The trace is exact (one
vector–Jacobian product per dimension) or Hutchinson's estimate ``εᵀ (∂f/∂z) ε`` with one
``ε`` (Gaussian or Rademacher) drawn per solve, as in FFJORD. RNODE's regularisers add
``∫ ‖f‖² dt`` (kinetic energy) and ``∫ ‖∂f/∂z‖²_F dt`` (Jacobian Frobenius norm, exact, or
estimated by ``‖εᵀ ∂f/∂z‖²``) to the state, so they cost no extra evaluations.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import odeflow

__all__ = ["CNFField", "CNFDynamics", "CNF", "standard_normal_logp"]

TRACES = ("exact", "hutchinson")
NOISES = ("gaussian", "rademacher")


def standard_normal_logp(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)`` summed over the last dimension."""
    return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * torch.log(torch.tensor(2 * torch.pi)))


class CNFField(nn.Module):
    """``f(t, z)``: an MLP of ``[z, t]`` with ``t`` appended to every hidden layer's input."""

    def __init__(self, dim: int = 2, hidden: int = 64, layers: int = 3) -> None:
        super().__init__()
        sizes = [dim, *([hidden] * layers), dim]
        self.linears = nn.ModuleList(nn.Linear(a + 1, b) for a, b in zip(sizes, sizes[1:]))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        tt = t.to(z.dtype).expand(*z.shape[:-1], 1)
        h = z
        for i, linear in enumerate(self.linears):
            h = linear(torch.cat([h, tt], dim=-1))
            if i < len(self.linears) - 1:
                h = torch.tanh(h)
        return h


class CNFDynamics(nn.Module):
    """The augmented field of ``(z, ∫tr J, ∫‖f‖², ∫‖J‖²_F)`` for one solve.

    Set :attr:`noise` (shape of ``z``) before a Hutchinson solve; the same ``ε`` serves
    every evaluation of that solve.
    """

    def __init__(self, field: nn.Module, trace: str = "exact") -> None:
        super().__init__()
        if trace not in TRACES:
            raise ValueError(f"trace must be one of {TRACES}, got {trace!r}")
        self.field = field
        self.trace = trace
        self.noise: torch.Tensor | None = None

    def forward(self, t: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        z = state[0]
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            f = self.field(t, z)
            if self.trace == "exact":
                rows = [
                    torch.autograd.grad(f[..., i].sum(), z, create_graph=True)[0]
                    for i in range(z.shape[-1])
                ]  # row i of the Jacobian, per sample
                trace = sum(row[..., i] for i, row in enumerate(rows))
                frobenius = sum(row.pow(2).sum(-1) for row in rows)
            else:
                if self.noise is None:
                    raise RuntimeError("set CNFDynamics.noise before a Hutchinson solve")
                e_jac = torch.autograd.grad(f, z, self.noise, create_graph=True)[0]
                trace = (e_jac * self.noise).sum(-1)
                frobenius = e_jac.pow(2).sum(-1)
        kinetic = f.pow(2).sum(-1)
        if not create_graph:
            f, trace, kinetic, frobenius = (v.detach() for v in (f, trace, kinetic, frobenius))
        return f, trace, kinetic, frobenius


class CNF(nn.Module):
    """A continuous normalizing flow on ``[0, T]`` with a standard normal at ``T``.

    Args:
        field: ``f(t, z)``, e.g. :class:`CNFField`.
        trace: ``"exact"`` or ``"hutchinson"``.
        noise: Hutchinson's ``ε``: ``"gaussian"`` or ``"rademacher"``.
        T: the flow's end time.
        method, rtol, atol, gradient, options: passed to :func:`odeflow.solve`.

    Attributes:
        last_stats: the ``SolveStats`` of the latest :meth:`log_prob` solve (``nfe``, and
            ``nfe_backward`` after a backward pass with ``adjoint`` / ``checkpoint``).

    Example:
        >>> cnf = CNF(CNFField(2))
        >>> logp, reg = cnf.log_prob(torch.randn(128, 2))
        >>> (-logp.mean() + 0.1 * reg["kinetic"]).backward()
    """

    def __init__(
        self,
        field: nn.Module,
        trace: str = "exact",
        noise: str = "gaussian",
        T: float = 1.0,
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        gradient: str = "direct",
        options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if noise not in NOISES:
            raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
        self.dynamics = CNFDynamics(field, trace)
        self.noise = noise
        self.T = T
        self.solver = dict(method=method, rtol=rtol, atol=atol, options=options)
        self.gradient = gradient
        self.last_stats: Any = None

    @property
    def field(self) -> nn.Module:
        return self.dynamics.field

    def draw_noise(self, shape: torch.Size, generator: torch.Generator | None) -> torch.Tensor:
        """Hutchinson's ``ε`` of ``shape``: standard normal or ±1 with equal probability."""
        if self.noise == "gaussian":
            return torch.randn(shape, generator=generator)
        return torch.randint(0, 2, shape, generator=generator).float() * 2 - 1

    def log_prob(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``log p(x)`` per point, and the regularisers ``kinetic`` and ``jacobian``
        (``∫₀ᵀ ‖f‖² dt`` and ``∫₀ᵀ ‖∂f/∂z‖²_F dt``, averaged over the batch)."""
        if self.dynamics.trace == "hutchinson":
            self.dynamics.noise = self.draw_noise(x.shape, generator).to(x)
        zeros = x.new_zeros(x.shape[:-1])
        t = torch.tensor([0.0, self.T], dtype=x.dtype, device=x.device)
        kwargs: dict[str, Any] = {}
        if self.gradient == "adjoint":
            kwargs["adjoint_params"] = tuple(self.dynamics.parameters())
        sol = odeflow.solve(self.dynamics, (x, zeros, zeros, zeros), t, gradient=self.gradient,
                            **self.solver, **kwargs)
        self.last_stats = sol.stats
        z, trace, kinetic, frobenius = (v[-1] for v in sol.ys)
        logp = standard_normal_logp(z) + trace
        return logp, {"kinetic": kinetic.mean(), "jacobian": frobenius.mean()}

    @torch.no_grad()
    def sample(self, z: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        """Push base samples ``z`` (at ``T``) back to data space: the states at ``times``
        (default ``[T, 0]``; decreasing), shape ``(len(times), *z.shape)``."""
        if times is None:
            times = torch.tensor([self.T, 0.0], dtype=z.dtype)
        field = self.dynamics.field
        return odeflow.solve(lambda t, y: field(t, y), z, times.to(z), **self.solver).ys
