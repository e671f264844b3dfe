"""The image classifiers of seed A and the paper's Table 1: ODE-Net, ResNet, RK-Net, MLP."""

from __future__ import annotations

import torch
from torch import nn

from .layers import ResBlock, conv1x1, group_norm
from .odeblock import ODEBlock, ODEFunc

__all__ = [
    "Classifier",
    "NETWORKS",
    "odenet",
    "resnet",
    "rknet",
    "mlp",
    "odeonly",
    "build_classifier",
    "count_parameters",
]

NETWORKS = ("odenet", "resnet", "rknet", "mlp", "odeonly")


class Classifier(nn.Module):
    """``downsampling → features → head``, the shape of every seed A network.

    Args:
        downsampling: image → feature map.
        features: the feature layers (an :class:`ODEBlock` or a stack of ResBlocks).
        head: feature map → logits.
    """

    def __init__(self, downsampling: nn.Module, features: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.downsampling = downsampling
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.downsampling(x)))


def _downsampling(method: str, in_channels: int, dim: int) -> nn.Module:
    if method == "conv":
        return nn.Sequential(
            nn.Conv2d(in_channels, dim, 3, 1),
            group_norm(dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim, dim, 4, 2, 1),
            group_norm(dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim, dim, 4, 2, 1),
        )
    if method == "res":
        return nn.Sequential(
            nn.Conv2d(in_channels, dim, 3, 1),
            ResBlock(dim, dim, stride=2, downsample=conv1x1(dim, dim, 2)),
            ResBlock(dim, dim, stride=2, downsample=conv1x1(dim, dim, 2)),
        )
    raise ValueError(f"downsampling must be 'conv' or 'res', got {method!r}")


def _head(dim: int, num_classes: int) -> nn.Module:
    return nn.Sequential(
        group_norm(dim),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
        nn.Linear(dim, num_classes),
    )


def odenet(
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    dim: int = 64,
    downsampling: str = "conv",
    method: str = "dopri5",
    tol: float = 1e-3,
    gradient: str = "direct",
    options: dict | None = None,
) -> Classifier:
    """Seed A's ODE-Net: downsampling → ODEBlock(ODEFunc(dim)) on t ∈ [0, 1] → head.

    With the defaults it has 208,266 parameters (232,970 with ``downsampling="res"``).

    Args:
        in_channels: image channels.
        num_classes: number of classes.
        dim: feature channels.
        downsampling: ``"conv"`` or ``"res"``.
        method: ODE solver.
        tol: ``rtol = atol = tol``.
        gradient: ``"direct"``, ``"adjoint"`` or ``"checkpoint"``.
        options: solver options.
    """
    block = ODEBlock(
        ODEFunc(dim), method=method, rtol=tol, atol=tol, gradient=gradient, options=options
    )
    return Classifier(_downsampling(downsampling, in_channels, dim), block, _head(dim, num_classes))


def rknet(
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    dim: int = 64,
    downsampling: str = "conv",
    method: str = "rk4",
    step_size: float = 0.1,
) -> Classifier:
    """RK-Net: the ODE-Net's function integrated on a fixed grid, gradients by backprop.

    Same parameters as :func:`odenet` (208,266 by default); the paper's Table 1 lists
    0.22 M. The default grid is classic RK4 with step 0.1 (seed B), i.e. 40 evaluations.
    """
    return odenet(
        in_channels=in_channels,
        num_classes=num_classes,
        dim=dim,
        downsampling=downsampling,
        method=method,
        gradient="direct",
        options={"step_size": step_size},
    )


def resnet(
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    dim: int = 64,
    downsampling: str = "conv",
    blocks: int = 6,
) -> Classifier:
    """Seed A's ResNet: the same downsampling and head, six ResBlock(dim, dim) between.

    576,778 parameters with the defaults.
    """
    features = nn.Sequential(*[ResBlock(dim, dim) for _ in range(blocks)])
    return Classifier(
        _downsampling(downsampling, in_channels, dim), features, _head(dim, num_classes)
    )


def mlp(
    *, in_channels: int = 1, image_size: int = 28, num_classes: int = 10, hidden: int = 300
) -> nn.Sequential:
    """The paper's 1-layer MLP baseline (one hidden layer of 300 units): 238,510 parameters
    on 28×28 images, the 0.24 M of Table 1."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * image_size * image_size, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )


def odeonly(
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    dim: int = 64,
    method: str = "rk4_classic",
    step_size: float | None = 0.1,
    gradient: str = "direct",
    dropout: float = 0.5,
    tol: float = 1e-3,
) -> nn.Sequential:
    """Seed B's "ODE-only" net (after Carrara et al. 2019): one strided convolution, then
    the ODE block does all the feature work.

    Conv2d(in, dim, 4, stride 2, pad 1) → ODEBlock(ODEFunc(dim)) → GN → AdaptiveAvgPool(1)
    → Dropout(0.5) → Flatten → Linear(dim, classes); the block integrates [0, 1] with the
    classic RK4 (weights 1/6, 2/6, 2/6, 1/6) at step 0.1. 77,258 parameters for MNIST;
    with ``in_channels=3, dim=128`` it is the CIFAR-10 study's net (306,058 parameters).

    ``step_size=None`` lets an adaptive ``method`` (e.g. ``"dopri5"``) choose its steps
    with ``rtol = atol = tol``.
    """
    options = None if step_size is None else {"step_size": step_size}
    block = ODEBlock(
        ODEFunc(dim), method=method, rtol=tol, atol=tol, gradient=gradient, options=options
    )
    return nn.Sequential(
        nn.Conv2d(in_channels, dim, 4, 2, 1),
        block,
        group_norm(dim),
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Dropout(dropout),
        nn.Flatten(),
        nn.Linear(dim, num_classes),
    )


def build_classifier(
    network: str,
    *,
    in_channels: int = 1,
    image_size: int = 28,
    num_classes: int = 10,
    dim: int = 64,
    downsampling: str = "conv",
    method: str = "dopri5",
    tol: float = 1e-3,
    gradient: str = "direct",
    rk_step_size: float = 0.1,
) -> nn.Module:
    """Build one of :data:`NETWORKS` by name (the ``--network`` flag)."""
    if network == "odenet":
        return odenet(
            in_channels=in_channels,
            num_classes=num_classes,
            dim=dim,
            downsampling=downsampling,
            method=method,
            tol=tol,
            gradient=gradient,
        )
    if network == "rknet":
        return rknet(
            in_channels=in_channels,
            num_classes=num_classes,
            dim=dim,
            downsampling=downsampling,
            step_size=rk_step_size,
        )
    if network == "resnet":
        return resnet(
            in_channels=in_channels, num_classes=num_classes, dim=dim, downsampling=downsampling
        )
    if network == "odeonly":
        return odeonly(
            in_channels=in_channels,
            num_classes=num_classes,
            dim=dim,
            step_size=rk_step_size,
            gradient=gradient,
        )
    if network == "mlp":
        return mlp(in_channels=in_channels, image_size=image_size, num_classes=num_classes)
    raise ValueError(f"network must be one of {NETWORKS}, got {network!r}")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
