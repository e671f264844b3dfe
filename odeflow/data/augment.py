"""Augmentation in plain torch, per sample and driven by a seeded generator: seed A's random
crop after padding, and for colour images a horizontal flip, a slight colour jitter and
per-channel normalisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["random_crop", "random_hflip", "color_jitter", "normalize"]


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


def random_hflip(
    x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``.

    Args:
        x: images ``(N, C, H, W)``.
        p: flip probability.
        generator: source of the coin flips.
    """
    flip = torch.rand(x.shape[0], generator=generator) < p
    flip = flip.to(x.device)[:, None, None, None]
    return torch.where(flip, x.flip(-1), x)


def color_jitter(
    x: torch.Tensor,
    brightness: float = 0.1,
    contrast: float = 0.1,
    saturation: float = 0.1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Scale brightness, contrast and saturation of each RGB image by its own random
    factors drawn uniformly from ``[1 - s, 1 + s]`` (in that order), then clip to [0, 1].

    Args:
        x: RGB images ``(N, 3, H, W)`` with values in [0, 1].
        brightness: spread of the brightness factor (0 = off).
        contrast: spread of the contrast factor: scales the distance to the image's mean grey.
        saturation: spread of the saturation factor: scales the distance to each pixel's grey.
        generator: source of the factors.
    """

    def factors(spread: float) -> torch.Tensor:
        u = torch.rand(x.shape[0], generator=generator) * 2 - 1
        return (1 + spread * u).to(x.device, x.dtype)[:, None, None, None]

    weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
    b, c, s = factors(brightness), factors(contrast), factors(saturation)
    x = x * b
    grey = (x * weights[:, None, None]).sum(1, keepdim=True)  # (N, 1, H, W)
    x = (x - grey.mean((2, 3), keepdim=True)) * c + grey.mean((2, 3), keepdim=True)
    grey = (x * weights[:, None, None]).sum(1, keepdim=True)
    x = (x - grey) * s + grey
    return x.clamp_(0.0, 1.0)


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """``(x - mean) / std`` per channel of ``(N, C, H, W)`` images."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device)[:, None, None]
    s = torch.tensor(std, dtype=x.dtype, device=x.device)[:, None, None]
    return (x - m) / s
