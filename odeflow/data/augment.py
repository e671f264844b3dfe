"""Seed A's augmentation in plain torch: random crop of the original size after padding."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["random_crop"]


def random_crop(
    x: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Zero-pad a batch by ``padding`` and crop each image back to its size at a random offset.

    Equivalent to torchvision's ``RandomCrop(size, padding)`` applied per sample.

    Args:
        x: images ``(N, C, H, W)``.
        padding: zero border added before cropping.
        generator: source of the offsets (pass a seeded one for reproducible epochs).

    Returns:
        A tensor shaped like ``x``.
    """
    if padding <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    rows = (oy[:, None] + torch.arange(h)).to(x.device)  # (N, H)
    cols = (ox[:, None] + torch.arange(w)).to(x.device)  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]
