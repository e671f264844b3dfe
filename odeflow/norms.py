"""Error norms on the solver's flat state: RMS, mixed over components, per sample.

A norm maps the scaled error ``err / (atol + rtol * max(|y|, |y_new|))`` to a scalar
tensor; a step is accepted when that scalar is at most one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["rms_norm", "mixed_rms_norm", "lane_rms", "lane_norm"]

Norm = Callable[[Tensor], Tensor]


def rms_norm(x: Tensor) -> Tensor:
    """Root mean square of all entries (Hairer's norm; torchdiffeq's default)."""
    return torch.linalg.vector_norm(x) / math.sqrt(max(x.numel(), 1))


def mixed_rms_norm(sizes: Sequence[int], rms: Norm = rms_norm) -> Norm:
    """Max over consecutive segments of a flat vector of each segment's RMS (with
    ``rms=lane_rms``, of each row of ``(B, n)``: one value per sample).

    This is the default for tuple states (as torchdiffeq's mixed norm): each component
    must meet the tolerance on its own, so a large component cannot hide a small one.
    """

    def norm(x: Tensor) -> Tensor:
        return torch.stack([rms(p) for p in torch.split(x, sizes, dim=-1) if p.shape[-1] > 0],
                           -1).amax(-1)

    return norm


def lane_rms(x: Tensor) -> Tensor:
    """RMS of each row of ``(B, n)``: the per-sample error norm."""
    return torch.linalg.vector_norm(x, dim=-1) / math.sqrt(max(x.shape[-1], 1))


def lane_norm(user_norm: Callable | None, layout: Any) -> Norm:
    """The per-sample error norm ``(B, n) -> (B,)``: RMS per row (for a tuple state the
    largest of the components' RMS, as the joint mixed norm), or the user's
    ``options["norm"]``, which gets the batch's scaled error in ``y0``'s structure and must
    return one value per sample."""
    batch = layout.batch
    if user_norm is None:
        return mixed_rms_norm(layout.sizes, lane_rms) if layout.is_tuple else lane_rms

    def norm(x: Tensor) -> Tensor:
        out = user_norm(layout.real_view(x))
        if not isinstance(out, Tensor) or out.shape != (batch,):
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"with options['per_sample'], options['norm'] gets the scaled error "
                             f"of the batch (y0's structure) and must return one value per "
                             f"sample, shape ({batch},); got {got}")
        return out

    return norm
