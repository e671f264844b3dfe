"""Deterministic in-memory batching: the same epoch always gives the same batches.

Batch order comes from a :class:`torch.utils.data.DistributedSampler` (one replica when
not distributed) seeded with ``seed`` and the epoch; augmentation draws from a generator
seeded with ``(seed, epoch, rank)``. An epoch can therefore be replayed exactly after a
crash, which is what makes ``--resume`` exact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DistributedSampler

from .augment import random_crop

__all__ = ["BatchLoader"]


def _to_float(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    if x.dim() == 3:  # (N, H, W) -> (N, 1, H, W)
        x = x.unsqueeze(1)
    return x


class BatchLoader:
    """Iterate over ``(images, labels)`` batches of tensors held in memory.

    Args:
        images: ``(N, H, W)`` uint8 or ``(N, C, H, W)`` float images.
        labels: ``(N,)`` int64 labels.
        batch_size: samples per batch (per process when distributed).
        shuffle: reshuffle every epoch (training) or keep the order (evaluation).
        crop_padding: random-crop padding for augmentation; 0 disables it.
        seed: base seed of the order and the augmentation.
        rank: this process's rank.
        world_size: number of processes. Training shards use a ``DistributedSampler``
            (padded so every rank has the same number of batches, as DDP needs);
            evaluation shards (``shuffle=False``) take ``rank::world_size`` without padding
            so that summed counts cover the set exactly once.
        max_batches: stop after this many batches (0 = all), for dry runs.
        transform: applied to each float batch after the crop, as
            ``transform(x, generator)`` with the epoch's seeded generator (e.g. flips,
            colour jitter, normalisation).

    Example:
        >>> loader = BatchLoader(x, y, 128, shuffle=True, crop_padding=4, seed=0)
        >>> loader.set_epoch(3)
        >>> for xb, yb in loader: ...
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        crop_padding: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        max_batches: int = 0,
        transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.crop_padding = crop_padding
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.max_batches = max_batches
        self.transform = transform
        self.epoch = 0
        self.sampler = (
            DistributedSampler(
                range(len(labels)), num_replicas=world_size, rank=rank, shuffle=True, seed=seed
            )
            if shuffle
            else None
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration replays."""
        self.epoch = epoch
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def _indices(self) -> torch.Tensor:
        if self.sampler is not None:
            return torch.as_tensor(list(iter(self.sampler)), dtype=torch.long)
        return torch.arange(self.rank, len(self.labels), self.world_size)

    def __len__(self) -> int:
        n = len(self._indices())
        batches = (n + self.batch_size - 1) // self.batch_size
        return min(batches, self.max_batches) if self.max_batches else batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = self._indices()
        gen = torch.Generator().manual_seed(
            hash((self.seed, self.epoch, self.rank)) & 0x7FFF_FFFF_FFFF_FFFF
        )
        for b in range(len(self)):
            idx = indices[b * self.batch_size : (b + 1) * self.batch_size]
            x = _to_float(self.images[idx])
            if self.crop_padding:
                x = random_crop(x, self.crop_padding, generator=gen)
            if self.transform is not None:
                x = self.transform(x, gen)
            yield x, self.labels[idx]
