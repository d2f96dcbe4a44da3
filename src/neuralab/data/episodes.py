"""Few-shot episodes from any labelled image split: N classes ("ways"), K support and Q query
examples per class, drawn as whole-tensor operations from uint8 images held in memory.

`class_disjoint` turns any image dataset into train / val / test splits whose classes do not
overlap (datasets that are split by class already, like Omniglot's alphabets, are kept as
they are), and `EpisodeLoader` yields meta-batches of episodes:

    support (T, N*K, C, H, W) float, support_labels (T, N*K),
    query   (T, N*Q, C, H, W) float, query_labels   (T, N*Q)

with labels 0..N-1 in the episode's own (random) class order, support rows grouped by class.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch

from neuralab.data.augment import Augment, to_float
from neuralab.data.dataset import DataError, ImageDataset, Split

# Fractions of a dataset's classes held out when it is not split by class already.
VAL_CLASSES, TEST_CLASSES = 0.2, 0.2


class Episodes(NamedTuple):
    """A meta-batch of T episodes (see the module docstring for the shapes)."""

    support: torch.Tensor
    support_labels: torch.Tensor
    query: torch.Tensor
    query_labels: torch.Tensor


def class_disjoint(dataset: ImageDataset, seed: int) -> ImageDataset:
    """`dataset` with train / val / test splits whose classes are disjoint.

    A dataset whose `info` says `class_disjoint` is returned as it is. Any other has all its
    examples pooled and its classes dealt, seeded, into train (60%), val (20%) and test (20%):
    a class of the test split is never seen in training.
    """
    if dataset.info.get("class_disjoint"):
        return dataset
    splits = [s for s in (dataset.train, dataset.val, dataset.test) if s is not None]
    pooled = Split(torch.cat([s.images for s in splits]), torch.cat([s.labels for s in splits]))
    count = len(dataset.classes)
    if count < 3:
        raise DataError(
            f"{dataset.name} has {count} classes; few-shot learning deals classes into "
            "train, val and test splits and needs at least 3 (better dozens)"
        )
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    val = max(1, round(VAL_CLASSES * count))
    test = max(1, round(TEST_CLASSES * count))
    parts = {"test": order[:test], "val": order[test : test + val], "train": order[test + val :]}
    chosen = {name: pooled.subset(torch.isin(pooled.labels, classes).nonzero().squeeze(1))
              for name, classes in parts.items()}  # fmt: skip
    return ImageDataset(
        dataset.name, chosen["train"], chosen["test"], list(dataset.classes), dataset.mean,
        dataset.std, val=chosen["val"], info={**dataset.info, "class_disjoint": True},
    )  # fmt: skip


class ClassIndex:
    """Where each class's examples are in a split: (classes, most) row table, -1 padded."""

    def __init__(self, labels: torch.Tensor) -> None:
        self.classes, inverse, counts = labels.unique(return_inverse=True, return_counts=True)
        self.counts = counts
        self.table = torch.full((len(self.classes), int(counts.max())), -1, dtype=torch.long)
        order = inverse.argsort(stable=True)
        position = torch.arange(len(labels)) - (counts.cumsum(0) - counts)[inverse[order]]
        self.table[inverse[order], position] = order

    def check(self, ways: int, per_class: int, where: str) -> None:
        """Refuse episodes this split cannot give: too few classes, or too few examples."""
        if ways > len(self.classes):
            raise DataError(
                f"{where}: {ways}-way episodes need {ways} classes but the split has "
                f"{len(self.classes)}; lower the ways (task.ways / --ways)"
            )
        small = int((self.counts < per_class).sum())
        if small:
            raise DataError(
                f"{where}: episodes take {per_class} examples per class (shots + queries) but "
                f"{small} of its {len(self.classes)} classes have fewer (smallest: "
                f"{int(self.counts.min())}); lower task.shots or task.queries"
            )

    def draw(self, ways: int, per_class: int, generator: torch.Generator) -> torch.Tensor:
        """Example indices (ways, per_class) of `ways` random classes, `per_class` each
        (only classes with enough examples are drawn from)."""
        usable = (self.counts >= per_class).nonzero().squeeze(1)
        rows = usable[torch.randperm(len(usable), generator=generator)[:ways]]
        # A random key per slot, padding sorted last: the first per_class are a random pick.
        keys = torch.rand(len(rows), self.table.shape[1], generator=generator)
        keys[self.table[rows] < 0] = 2.0
        picks = keys.argsort(dim=1)[:, :per_class]
        return self.table[rows].gather(1, picks)


class EpisodeLoader:
    """Meta-batches of episodes over one split, normalised on `device`.

    An epoch holds `episodes` episodes in steps of `meta_batch`; episode draws are seeded by
    (seed, epoch), so an epoch is reproducible on its own (resume replays it exactly). With
    `fixed`, every epoch gives the same episodes (validation and test). `augment` (training)
    transforms each drawn image on its own, support and query alike.

    Example:
        >>> loader = EpisodeLoader(split, 5, 1, 15, episodes=100, mean=(0.92,), std=(0.22,))
        >>> support, support_labels, query, query_labels = next(iter(loader))
    """

    world_size = 1  # episodes are not sharded over processes (see run/build.py)

    def __init__(
        self,
        split: Split,
        ways: int,
        shots: int,
        queries: int,
        episodes: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        meta_batch: int = 1,
        seed: int = 0,
        fixed: bool = False,
        device: torch.device | str = "cpu",
        where: str = "split",
        augment: Augment | None = None,
    ) -> None:
        self.index = ClassIndex(split.labels)
        self.index.check(ways, shots + queries, where)
        self.images = split.images.to(device)
        self.ways, self.shots, self.queries = ways, shots, queries
        self.episodes, self.meta_batch = episodes, min(meta_batch, episodes)
        self.mean, self.std, self.seed, self.fixed = mean, std, seed, fixed
        self.device, self.epoch = torch.device(device), 0
        self.augment = augment if augment is not None and augment.active else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.episodes // self.meta_batch)

    def __iter__(self) -> Iterator[Episodes]:
        generator = torch.Generator().manual_seed(
            self.seed * 1_000_003 + (0 if self.fixed else self.epoch)
        )
        labels = torch.arange(self.ways, device=self.device)
        for start in range(0, self.episodes, self.meta_batch):
            count = min(self.meta_batch, self.episodes - start)
            picks = torch.stack(
                [self.index.draw(self.ways, self.shots + self.queries, generator)
                 for _ in range(count)]
            ).to(self.device)  # (T, N, K + Q)  # fmt: skip
            images = self.images[picks.flatten()]  # uint8 (T*N*(K+Q), C, H, W)
            if self.augment is not None:
                images = self.augment(images, generator)
            images = to_float(images, self.mean, self.std)
            images = images.view(count, self.ways, self.shots + self.queries, *images.shape[1:])
            support = images[:, :, : self.shots].flatten(1, 2)  # (T, N*K, C, H, W)
            query = images[:, :, self.shots :].flatten(1, 2)  # (T, N*Q, C, H, W)
            yield Episodes(
                support,
                labels.repeat_interleave(self.shots).expand(count, -1),
                query,
                labels.repeat_interleave(self.queries).expand(count, -1),
            )
