"""ODEFunc (seed A's dynamics) and ODEBlock (a layer that integrates it with odeflow.solve)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

import odeflow

from .layers import ConcatConv2d, group_norm

__all__ = ["ODEFunc", "ODEBlock", "ode_blocks", "nfe_counts"]

GRADIENTS = ("direct", "adjoint", "checkpoint")


class ODEFunc(nn.Module):
    """The dynamics ``f(t, h)`` of seed A's ODE-Net.

    GN → ReLU → ConcatConv2d(dim→dim, 3×3, pad 1) → GN → ReLU → ConcatConv2d → GN, with
    ``GN = GroupNorm(min(32, dim), dim)``. It keeps no counters: the number of evaluations
    is read from the solver's statistics (see :class:`ODEBlock`).

    Args:
        dim: channels of the state.

    Shapes:
        ``forward(t, x)``: ``t`` 0-dim, ``x`` ``(N, dim, H, W)`` → same shape as ``x``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = group_norm(dim)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = ConcatConv2d(dim, dim, 3, 1, 1)
        self.norm2 = group_norm(dim)
        self.conv2 = ConcatConv2d(dim, dim, 3, 1, 1)
        self.norm3 = group_norm(dim)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(x))
        out = self.conv1(t, out)
        out = self.relu(self.norm2(out))
        out = self.conv2(t, out)
        return self.norm3(out)


class ODEBlock(nn.Module):
    """A layer ``h(1) = h(0) + ∫₀¹ f(t, h) dt`` solved by :func:`odeflow.solve`.

    Args:
        func: the dynamics, an ``nn.Module`` called as ``func(t, y)``.
        t: integration times; the block returns the state at ``t[-1]``.
        method: solver name (``"dopri5"``, ``"rk4"``, ... see ``odeflow.METHODS``).
        rtol: relative tolerance (ignored by fixed-grid methods).
        atol: absolute tolerance (ignored by fixed-grid methods).
        gradient: ``"direct"`` (backprop through the solver), ``"adjoint"`` (O(1) memory,
            a backward augmented solve) or ``"checkpoint"`` (exact, light memory).
        options: solver options, e.g. ``{"step_size": 0.1}`` for a fixed grid.

    Attributes:
        last_stats: the ``SolveStats`` of the latest forward call (``None`` before it).
        nfe_forward: evaluations of ``func`` in the latest forward solve.
        nfe_backward: evaluations in the backward pass of the latest solve; 0 until the
            backward pass has run (and always 0 for ``"direct"``, whose backward is autograd).

    Example:
        >>> block = ODEBlock(ODEFunc(64), rtol=1e-3, atol=1e-3)
        >>> y = block(torch.randn(2, 64, 6, 6)); y.sum().backward()
        >>> block.nfe_forward, block.nfe_backward
    """

    def __init__(
        self,
        func: nn.Module,
        t: Sequence[float] | torch.Tensor = (0.0, 1.0),
        method: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-3,
        gradient: str = "direct",
        options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if gradient not in GRADIENTS:
            raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
        self.func = func
        self.register_buffer("t", torch.as_tensor(t, dtype=torch.float32), persistent=False)
        self.method = method
        self.rtol = rtol
        self.atol = atol
        self.gradient = gradient
        self.options = dict(options) if options else None
        self.last_stats: Any = None

    def _solve(self, x: torch.Tensor) -> Any:
        kwargs: dict[str, Any] = {}
        if self.gradient == "adjoint":
            kwargs["adjoint_params"] = tuple(self.func.parameters())
        solution = odeflow.solve(
            self.func,
            x,
            self.t.to(x.dtype),
            rtol=self.rtol,
            atol=self.atol,
            method=self.method,
            options=self.options,
            gradient=self.gradient,
            **kwargs,
        )
        self.last_stats = solution.stats
        return solution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Integrate from ``t[0]`` to ``t[-1]`` and return the final state (shape of ``x``)."""
        return self._solve(x).ys[-1]

    def trajectory(self, x: torch.Tensor) -> torch.Tensor:
        """Return the states at every time in ``t``: shape ``(len(t), *x.shape)``."""
        return self._solve(x).ys

    @property
    def nfe_forward(self) -> int:
        return int(self.last_stats.nfe) if self.last_stats is not None else 0

    @property
    def nfe_backward(self) -> int:
        if self.last_stats is None:
            return 0
        return int(getattr(self.last_stats, "nfe_backward", 0) or 0)

    def extra_repr(self) -> str:
        return (
            f"method={self.method!r}, rtol={self.rtol}, atol={self.atol}, "
            f"gradient={self.gradient!r}, options={self.options}"
        )


def ode_blocks(model: nn.Module) -> Iterable[ODEBlock]:
    """Yield every :class:`ODEBlock` inside ``model`` (DDP wrappers included)."""
    return (m for m in model.modules() if isinstance(m, ODEBlock))


def nfe_counts(model: nn.Module) -> tuple[int, int]:
    """Sum of ``(nfe_forward, nfe_backward)`` over the ODE blocks of ``model``.

    Read after ``loss.backward()`` to get both numbers of the latest training step.
    Models without ODE blocks give ``(0, 0)``.
    """
    forward = backward = 0
    for block in ode_blocks(model):
        forward += block.nfe_forward
        backward += block.nfe_backward
    return forward, backward
