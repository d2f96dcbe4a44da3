"""In-memory batches: uint8 images stay in one tensor (on the training device when it fits);
each batch is gathered, augmented and normalised as whole-batch tensor ops."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from neuralab.data.augment import Augment, to_float
from neuralab.data.dataset import Split


def shard(order: torch.Tensor, rank: int, world_size: int, pad: bool) -> torch.Tensor:
    """This rank's strided share of an epoch's `order`. With `pad`, the order first wraps
    around to a multiple of `world_size`, so every rank gets as many examples."""
    count = len(order)
    if pad and count % world_size:
        order = order[torch.arange(-(-count // world_size) * world_size) % count]
    return order[rank::world_size]


def shard_size(count: int, rank: int, world_size: int, pad: bool) -> int:
    """len(shard(...)) for an order of `count` examples, without building it."""
    return -(-count // world_size) if pad else len(range(rank, count, world_size))


def batch_count(examples: int, batch_size: int, drop_last: bool) -> int:
    full, rest = divmod(examples, batch_size)
    return full + (1 if rest and not drop_last else 0)


class BatchLoader:
    """Iterate over a `Split` in batches of normalised float images and int64 labels.

    Shuffling and augmentation draw from a generator seeded by (seed, epoch), so an epoch's
    batches are reproducible on their own: resuming at epoch k replays exactly epoch k.
    With `world_size > 1` each rank sees a disjoint, strided shard of the epoch's order, so
    batch k of all ranks together is exactly batch k of one process with `batch_size` times
    `world_size`. With `pad_shards` (training) the order first wraps around to a multiple of
    `world_size`, so every rank gets the same number of examples and batches (DDP needs each
    rank to take every step; a few examples then appear twice in that epoch). Without it
    (evaluation) every example is seen exactly once and shards may differ by one example.

    Example:
        >>> loader = BatchLoader(split, batch_size=128, mean=(0.13,), std=(0.31,), shuffle=True)
        >>> loader.set_epoch(0)
        >>> for images, labels in loader: ...  # (B, C, H, W) float32, (B,) int64
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        shuffle: bool = False,
        seed: int = 0,
        augment: Augment | None = None,
        drop_last: bool = False,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        pad_shards: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = torch.device(device)
        self.images = split.images.to(self.device)  # uint8 (N, C, H, W)
        self.labels = split.labels.to(self.device)  # int64 (N,)
        self.batch_size = batch_size
        self.mean, self.std = mean, std
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.augment = augment if augment is not None and augment.active else None
        self.channels_last = channels_last
        self.rank, self.world_size, self.pad_shards = rank, world_size, pad_shards
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose which epoch's order and augmentation the next iteration replays."""
        self.epoch = epoch

    def _order(self, generator: torch.Generator) -> torch.Tensor:
        count = len(self.labels)
        order = torch.randperm(count, generator=generator) if self.shuffle else torch.arange(count)
        return shard(order, self.rank, self.world_size, self.pad_shards).to(self.device)

    def shard_size(self) -> int:
        """How many examples this rank sees per epoch."""
        return shard_size(len(self.labels), self.rank, self.world_size, self.pad_shards)

    def __len__(self) -> int:
        return batch_count(self.shard_size(), self.batch_size, self.drop_last)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _, batch, labels in self.indexed():
            yield batch, labels

    def indexed(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Like iterating, with each batch's example indices into the split first."""
        # Large odd multiplier keeps (seed, epoch) pairs from colliding.
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = self._order(generator)
        if self.world_size > 1:
            # Every rank drew the same order; each now draws its own augmentation, or all
            # ranks would crop and flip their shards identically.
            rank_seeds = torch.randint(2**62, (self.world_size,), generator=generator)
            generator = torch.Generator().manual_seed(int(rank_seeds[self.rank]))
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            images = self.images[index]
            if self.augment is not None:
                images = self.augment(images, generator, index, self.epoch, self.seed)
            batch = to_float(images, self.mean, self.std)
            if self.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            yield index, batch, self.labels[index]
