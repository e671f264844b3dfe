"""The Brownian-motion interface, counter-based seeds and the Lévy area approximations.

References:
    A. Davie, "KMT theory applied to approximations of SDE", Stochastic Analysis and
    Applications 2014 (the Gaussian Lévy area approximation with variance h²/12).
    J. Foster, "Numerical approximations for stochastic differential equations", PhD
    thesis, Oxford 2020, and github.com/james-m-foster/levy-area-simulation (the
    correction whose conditional variance depends on the space-time Lévy area).
"""

from __future__ import annotations

import abc
import math

import torch
from torch import Tensor

from ..settings import LEVY_AREA_APPROXIMATIONS

__all__ = ["BaseBrownian", "mix_seed", "levy_area"]

_MASK = (1 << 64) - 1


def _splitmix(x: int) -> int:
    """One round of the SplitMix64 finaliser (Steele, Lea & Flood 2014) on a 64-bit int."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def mix_seed(entropy: int, *keys: int) -> int:
    """A 63-bit seed that depends only on ``entropy`` and ``keys`` (a counter-based seed).

    Every random draw of a Brownian motion is seeded by the identity of what it draws
    (a node of the tree, a query interval), so a value never depends on which other
    values were computed before it.
    """
    x = _splitmix(entropy & _MASK)
    for k in keys:
        x = _splitmix(x ^ (k & _MASK))
    return x >> 1


class BaseBrownian(metaclass=abc.ABCMeta):
    """What ``sdeint`` needs from a Brownian motion.

    Implementers provide:

    1. ``__call__(ta, tb=None, return_U=False, return_A=False)``: the increment
       ``W(tb) - W(ta)`` of shape ``shape``; with ``return_U`` also
       ``U = ∫_ta^tb (W(s) - W(ta)) ds``; with ``return_A`` also the Lévy area
       (shape ``(*shape, shape[-1])``), returned in the order ``W, U, A``.
    2. The properties ``shape``, ``dtype``, ``device`` and ``levy_area_approximation``.
    """

    __slots__ = ()

    @abc.abstractmethod
    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        raise NotImplementedError

    @abc.abstractmethod
    def __repr__(self) -> str:
        raise NotImplementedError

    @property
    @abc.abstractmethod
    def dtype(self) -> torch.dtype:
        raise NotImplementedError

    @property
    @abc.abstractmethod
    def device(self) -> torch.device:
        raise NotImplementedError

    @property
    @abc.abstractmethod
    def shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    @abc.abstractmethod
    def levy_area_approximation(self) -> str:
        raise NotImplementedError

    def size(self) -> tuple[int, ...]:
        return self.shape


def levy_area(W: Tensor, H: Tensor, h: float, kind: str, noise: Tensor) -> Tensor | None:
    """An approximation of the Lévy area ``A_ij = ½ ∫ (W_i dW_j - W_j dW_i)`` over a step.

    Both approximations are ``H_i W_j - W_i H_j + λ_ij`` with ``λ`` antisymmetric and
    Gaussian given ``(W, H)``: Davie uses ``Var λ_ij = h²/12``; Foster uses
    ``Var λ_ij = h²/20 + (h/5)(H_i² + H_j²)``. Both match the exact variance ``h²/4``.

    Args:
        W, H: increment and space-time Lévy area, shape ``(*batch, m)``.
        h: the length of the step.
        kind: a member of ``LEVY_AREA_APPROXIMATIONS``.
        noise: standard normals of shape ``(*batch, m, m)`` (only the strict upper
            triangle is used).

    Returns:
        ``None`` for ``none``/``space-time``; zeros of ``W``'s shape when ``W`` has
        fewer than two dimensions (a batch of scalar motions has no Lévy area);
        otherwise a tensor of shape ``(*batch, m, m)``.
    """
    if kind in (LEVY_AREA_APPROXIMATIONS.none, LEVY_AREA_APPROXIMATIONS.space_time):
        return None
    if W.dim() < 2:
        return torch.zeros_like(W)
    area = H.unsqueeze(-1) * W.unsqueeze(-2) - W.unsqueeze(-1) * H.unsqueeze(-2)
    upper = torch.triu(noise, diagonal=1)
    skew = upper - upper.transpose(-1, -2)
    if kind == LEVY_AREA_APPROXIMATIONS.foster:
        H2 = H * H
        std = (h * h / 20 + (h / 5) * (H2.unsqueeze(-1) + H2.unsqueeze(-2))).sqrt()
    else:
        std = math.sqrt(h * h / 12)
    return area + std * skew
