"""scikit-learn's 8×8 handwritten digits, laid out like MNIST: the no-download dataset.

The 1,797 images (values 0–16) are scaled to [0, 1], upsampled bilinearly to
``size - 2 * pad`` pixels and zero-padded by ``pad`` on each side. The default (28, pad 4)
mirrors MNIST, whose digits sit in a 20×20 box centred in 28×28, so every network and the
seed's augmentation apply unchanged. The split is stratified and fixed by ``seed``:
a ``test_fraction`` of each class is held out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["load_digits"]


def load_digits(
    size: int = 28, pad: int = 4, test_fraction: float = 0.2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Load the digits as ``(train_x, train_y, test_x, test_y)``.

    Args:
        size: output side length in pixels.
        pad: zero border on each side (the digit is upsampled to ``size - 2 * pad``).
        test_fraction: share of each class held out for testing.
        seed: seed of the split.

    Returns:
        Images ``float32`` ``(N, 1, size, size)`` in [0, 1] and ``int64`` labels.
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if size - 2 * pad < 1:
        raise ValueError(f"size {size} leaves no room for pad {pad}")
    bunch = _sk_load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    inner = size - 2 * pad
    if inner != 8:
        x = F.interpolate(x, size=(inner, inner), mode="bilinear", align_corners=False)
    x = F.pad(x, (pad, pad, pad, pad)).clamp_(0.0, 1.0)
    gen = torch.Generator().manual_seed(seed)
    test_idx = []
    for c in range(10):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        test_idx.append(idx[: round(len(idx) * test_fraction)])
    test_mask = torch.zeros(len(y), dtype=torch.bool)
    test_mask[torch.cat(test_idx)] = True
    return x[~test_mask], y[~test_mask], x[test_mask], y[test_mask]
