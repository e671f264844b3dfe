"""One entry point for the image datasets of the MNIST study: ``load_dataset(name, ...)``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .digits import load_digits
from .mnist import IDX_DATASETS, load_idx_dataset

__all__ = ["ImageData", "DATASETS", "load_dataset"]

DATASETS = ("mnist", "fashion-mnist", "digits")


@dataclass
class ImageData:
    """Train and test tensors of one dataset.

    Attributes:
        train_x, test_x: images, ``uint8 (N, 28, 28)`` (IDX) or ``float32 (N, 1, H, W)``.
        train_y, test_y: ``int64`` labels.
        in_channels: image channels.
        image_size: side length in pixels.
        num_classes: number of classes.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    in_channels: int
    image_size: int
    num_classes: int


def _subset(x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` samples (0 = all); IDX and digits splits are already well mixed."""
    return (x[:n], y[:n]) if 0 < n < len(y) else (x, y)


def load_dataset(
    name: str,
    root: str = "data",
    *,
    download: bool = False,
    max_train_samples: int = 0,
    max_test_samples: int = 0,
    digits_size: int = 28,
    digits_pad: int = 4,
    seed: int = 0,
) -> ImageData:
    """Load ``"mnist"``, ``"fashion-mnist"`` (IDX files under ``root``) or ``"digits"``.

    Args:
        name: dataset name, one of :data:`DATASETS`.
        root: folder with the IDX files.
        download: fetch missing IDX files from the canonical mirrors.
        max_train_samples: keep only the first N training samples (0 = all).
        max_test_samples: keep only the first N test samples (0 = all).
        digits_size: side length of the upsampled digits.
        digits_pad: zero border of the upsampled digits.
        seed: seed of the digits' train/test split.
    """
    if name == "digits":
        tx, ty, vx, vy = load_digits(size=digits_size, pad=digits_pad, seed=seed)
        size = digits_size
    elif name in IDX_DATASETS:
        tx, ty = load_idx_dataset(name, root, "train", download_ok=download)
        vx, vy = load_idx_dataset(name, root, "test", download_ok=False)
        size = 28
    else:
        raise ValueError(f"unknown dataset {name!r}; choose from {DATASETS}")
    tx, ty = _subset(tx, ty, max_train_samples)
    vx, vy = _subset(vx, vy, max_test_samples)
    return ImageData(tx, ty, vx, vy, in_channels=1, image_size=size, num_classes=10)
