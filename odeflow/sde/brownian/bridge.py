"""Gaussian conditioning rows for the Brownian interval's tree: splits and grid blocks.

A node's state is ``[W, H]`` (increment and space-time Lévy area ``H = U/h - W/2``, with
``U = ∫ (W(s) - W(a)) ds``) or ``[W]``. Drawing children given their parent is Gaussian
conditioning, so it is a fixed matrix applied to ``[parent state, standard normals]``:

* :func:`split_rows`: two children of lengths ``p`` and ``q`` (the Brownian bridge, and
  for ``H`` the joint law of the bridge's two half-integrals given their sum);
* :func:`block_rows`: all ``n`` cells of a block at once (conditioning ``n`` independent
  cells on the block's totals, the "conditioning by kriging" identity
  ``X | CX = c  ~  Z + ΣCᵀ(CΣCᵀ)⁻¹(c - CZ)`` with ``Z`` an unconditioned draw).

Both are exact in law; they are computed in float64 once per shape and cached.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

__all__ = ["split_rows", "block_rows"]


def _split_matrix(p: float, q: float, with_H: bool) -> list[list[float]]:
    """Rows giving both children's states from ``[parent state, X]`` (``X`` standard normals).

    State ``[W, H]`` (with ``H``) or ``[W]`` (without); the rows give ``[W_L, H_L, W_R, H_R]``
    (or ``[W_L, W_R]``) from ``[W, H, X1, X2]`` (or ``[W, X1]``). With ``h = p + q``, ``b``
    the bridge ``W(a+s) - W(a) - (s/h) W`` and ``B = b(p)``, ``P = ∫_0^p b / h``,
    ``Q = ∫_p^h b / h`` (so ``H = P + Q``): the covariances of ``(B, P, Q)`` follow from
    ``Cov(b(s), b(u)) = min(s, u) - su/h``; ``(B, P)`` given ``H`` is Gaussian, drawn by
    its Cholesky factor. Then ``W_L = (p/h) W + B``, ``H_L = (h/p) P - B/2``,
    ``W_R = W - W_L`` and ``H_R = (h/q)(H - P) - B/2``.
    """
    h = p + q
    if not with_H:
        s = math.sqrt(p * q / h)
        return [[p / h, s], [q / h, -s]]
    vbb = p * q / h
    cbp, cbq = p * p * q / (2 * h * h), p * q * q / (2 * h * h)
    vpp = (p ** 3 / 3 - p ** 4 / (4 * h)) / (h * h)
    vqq = (q ** 3 / 3 - q ** 4 / (4 * h)) / (h * h)
    cpq = p * p * q * q / (4 * h ** 3)
    vhh = vpp + vqq + 2 * cpq
    cbh, cph = cbp + cbq, vpp + cpq
    l11 = math.sqrt(max(vbb - cbh * cbh / vhh, 0.0))
    l21 = (cbp - cbh * cph / vhh) / l11 if l11 > 0 else 0.0
    l22 = math.sqrt(max(vpp - cph * cph / vhh - l21 * l21, 0.0))
    # Columns: W, H, X1, X2.
    B = [0.0, cbh / vhh, l11, 0.0]
    P = [0.0, cph / vhh, l21, l22]
    Wc = [1.0, 0.0, 0.0, 0.0]
    Hc = [0.0, 1.0, 0.0, 0.0]

    def lin(*terms):
        return [sum(c * v[i] for c, v in terms) for i in range(4)]

    wl = lin((p / h, Wc), (1.0, B))
    return [wl, lin((h / p, P), (-0.5, B)), lin((1.0, Wc), (-1.0, wl)),
            lin((h / q, Hc), (-h / q, P), (-0.5, B))]


@functools.lru_cache(maxsize=512)
def split_rows(p: float, q: float, with_H: bool, dtype: torch.dtype,
               device: torch.device) -> Tensor:
    return torch.tensor(_split_matrix(p, q, with_H), dtype=dtype, device=device)


def _block_matrix(hs: tuple[float, ...], with_H: bool) -> Tensor:
    """Rows giving ``n`` cells' states ``[W_1, H_1, ..., W_n, H_n]`` (or ``[W_1..W_n]``)
    from ``[block state, ξ]``, ``ξ`` the ``2n`` (or ``n``) standard normals.

    Cells are independent Brownian pieces (``W_i ~ N(0, h_i)``, ``H_i ~ N(0, h_i/12)``)
    conditioned on the block's ``W = Σ W_i`` and
    ``H = Σ_i W_i (h_i/2 + Σ_{j>i} h_j)/h + Σ_i h_i H_i / h - W/2``.
    """
    n, h = len(hs), sum(hs)
    k = 2 if with_H else 1
    var = torch.tensor([v for hi in hs for v in ((hi, hi / 12) if with_H else (hi,))],
                       dtype=torch.float64)
    C = torch.zeros(k, k * n, dtype=torch.float64)
    after = 0.0
    for i in reversed(range(n)):
        C[0, k * i] = 1.0
        if with_H:
            C[1, k * i] = (0.5 * hs[i] + after) / h - 0.5
            C[1, k * i + 1] = hs[i] / h
        after += hs[i]
    S = torch.diag(var)
    K = S @ C.T @ torch.linalg.inv(C @ S @ C.T)          # (kn, k)
    A = (torch.eye(k * n, dtype=torch.float64) - K @ C) @ torch.diag(var.sqrt())
    return torch.cat([K, A], dim=1)                      # (kn, k + kn)


@functools.lru_cache(maxsize=64)
def block_rows(hs: tuple[float, ...], with_H: bool, dtype: torch.dtype,
               device: torch.device) -> Tensor:
    return _block_matrix(hs, with_H).to(dtype=dtype, device=device)
