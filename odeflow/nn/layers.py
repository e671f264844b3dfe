"""Small building blocks shared by the classifiers: normalisation, ConcatConv2d, ResBlock."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConcatConv2d", "ResBlock", "group_norm", "conv3x3", "conv1x1"]


def group_norm(dim: int) -> nn.GroupNorm:
    """GroupNorm with ``min(32, dim)`` groups, the normalisation used throughout seed A.

    Args:
        dim: number of channels.

    Returns:
        ``nn.GroupNorm(min(32, dim), dim)``.
    """
    return nn.GroupNorm(min(32, dim), dim)


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3×3 convolution with padding 1 and no bias (the ResBlock convolution)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1×1 convolution without bias (the strided ResBlock shortcut)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class ConcatConv2d(nn.Module):
    """A convolution that sees time: ``t`` is appended as one constant input channel.

    Args:
        dim_in: input channels (the time channel is added on top).
        dim_out: output channels.
        ksize: kernel size.
        stride: stride.
        padding: zero padding.
        bias: whether the convolution has a bias.
        transpose: use ``ConvTranspose2d`` instead of ``Conv2d``.

    Shapes:
        ``forward(t, x)``: ``t`` a 0-dim (or 1-element) tensor, ``x`` of shape
        ``(N, dim_in, H, W)``; returns ``(N, dim_out, H', W')``.

    Example:
        >>> conv = ConcatConv2d(64, 64, 3, padding=1)
        >>> conv(torch.tensor(0.5), torch.zeros(2, 64, 7, 7)).shape
        torch.Size([2, 64, 7, 7])
    """

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        ksize: int = 3,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
        transpose: bool = False,
    ) -> None:
        super().__init__()
        module = nn.ConvTranspose2d if transpose else nn.Conv2d
        self.layer = module(
            dim_in + 1, dim_out, kernel_size=ksize, stride=stride, padding=padding, bias=bias
        )

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        tt = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(())
        tt = tt.expand(x.shape[0], 1, x.shape[2], x.shape[3])
        return self.layer(torch.cat([tt, x], dim=1))


class ResBlock(nn.Module):
    """Pre-activation residual block: GN → ReLU → (shortcut) → conv3×3 → GN → ReLU → conv3×3.

    Args:
        inplanes: input channels.
        planes: output channels.
        stride: stride of the first convolution.
        downsample: module applied to the pre-activated input for the shortcut when the
            shape changes (seed A uses a strided 1×1 convolution), or ``None``.

    Shapes:
        ``(N, inplanes, H, W)`` → ``(N, planes, H/stride, W/stride)``.
    """

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.norm1 = group_norm(inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.norm2 = group_norm(planes)
        self.conv2 = conv3x3(planes, planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        out = self.relu(self.norm1(x))
        if self.downsample is not None:
            shortcut = self.downsample(out)
        out = self.conv1(out)
        out = self.relu(self.norm2(out))
        out = self.conv2(out)
        return out + shortcut
