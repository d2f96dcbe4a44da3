"""Batches of token ids padded per batch, with length bucketing.

Encoded texts are stored once as one flat int64 tensor plus offsets and lengths (on the training
device), and each batch is gathered into a (B, T) tensor whose width T is the batch's longest
text, padded with id 0. Shuffled epochs sort examples by length within chunks of a shuffled
order, so a batch holds texts of similar length and short texts do not pay for long ones, while
every epoch still mixes differently; the batches' order is then shuffled too. Unshuffled
(evaluation) loaders sort the whole split by length. Each example is served once per epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain

import torch

from neuralab.data.loader import batch_count, shard, shard_size

PAD_ID = 0
# Examples sorted together when shuffling: 50 batches' worth keeps batches similar in length
# (padding stays a few percent on IMDB) while the chunk boundaries still move every epoch.
BUCKET_BATCHES = 50


@dataclass(frozen=True)
class EncodedTexts:
    """Token ids of many texts stored flat: `tokens` int32 (sum of lengths,), `lengths` int64
    (N,). One tensor instead of N Python lists: cheap to cache, load and gather from."""

    tokens: torch.Tensor
    lengths: torch.Tensor

    @classmethod
    def from_lists(cls, sequences: Sequence[Sequence[int]]) -> EncodedTexts:
        lengths = torch.tensor([len(ids) for ids in sequences], dtype=torch.long)
        tokens = torch.tensor(list(chain.from_iterable(sequences)), dtype=torch.int32)
        return cls(tokens, lengths)

    def __len__(self) -> int:
        return len(self.lengths)

    def head(self, count: int) -> EncodedTexts:
        """The first `count` texts (no copy of the others)."""
        lengths = self.lengths[:count]
        return EncodedTexts(self.tokens[: int(lengths.sum())], lengths)

    def to_lists(self) -> list[list[int]]:
        return [part.tolist() for part in self.tokens.split(self.lengths.tolist())]


def pad_batch(
    sequences: Sequence[Sequence[int]], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Token id lists → int64 (B, T) padded at the end with 0; T = the longest (at least 1)."""
    width = max([1, *map(len, sequences)])
    batch = torch.zeros(len(sequences), width, dtype=torch.long)
    for row, ids in enumerate(sequences):
        batch[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
    return batch.to(device)


class TextBatchLoader:
    """Iterate over encoded texts as (token ids int64 (B, T), labels int64 (B,)) batches.

    Shuffling draws from a generator seeded by (seed, epoch), so an epoch is reproducible on its
    own. With `world_size > 1` each rank takes a strided shard of the epoch's order (with
    `pad_shards`, wrapped to a multiple of `world_size` so every rank gets as many batches).

    Example:
        >>> loader = TextBatchLoader(tokenizer.encode(texts), labels, 64, shuffle=True)
        >>> loader.set_epoch(0)
        >>> for ids, labels in loader: ...  # (B, T) int64, (B,) int64
    """

    def __init__(
        self,
        sequences: EncodedTexts | Sequence[Sequence[int]],
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
        pad_shards: bool = False,
        bucket_batches: int = BUCKET_BATCHES,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if len(sequences) != len(labels):
            raise ValueError(f"{len(sequences)} texts but {len(labels)} labels")
        self.device = torch.device(device)
        encoded = (
            sequences if isinstance(sequences, EncodedTexts) else EncodedTexts.from_lists(sequences)
        )
        self.lengths = encoded.lengths.long()  # (N,)
        starts = torch.cumsum(self.lengths, 0) - self.lengths  # (N,) offset of each text
        flat = torch.cat([encoded.tokens.long(), torch.tensor([PAD_ID])])  # never empty
        self.tokens = flat.to(self.device)
        self.starts = starts.to(self.device)
        # int64 (N,), or float32 (N, heads) with several label fields (data/heads.py)
        self.labels = (labels.float() if labels.ndim == 2 else labels.long()).to(self.device)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_last, self.bucket_batches = drop_last, bucket_batches
        self.rank, self.world_size, self.pad_shards = rank, world_size, pad_shards
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose which epoch's order the next iteration replays."""
        self.epoch = epoch

    def shard_size(self) -> int:
        """How many examples this rank sees per epoch."""
        return shard_size(len(self.lengths), self.rank, self.world_size, self.pad_shards)

    def __len__(self) -> int:
        return batch_count(self.shard_size(), self.batch_size, self.drop_last)

    def batches(self, generator: torch.Generator) -> list[torch.Tensor]:
        """This epoch's batches as index tensors (CPU), bucketed by length."""
        count = len(self.lengths)
        order = torch.randperm(count, generator=generator) if self.shuffle else torch.arange(count)
        order = shard(order, self.rank, self.world_size, self.pad_shards)
        chunk = self.batch_size * self.bucket_batches if self.shuffle else len(order)
        batches = []
        for part in order.split(max(1, chunk)):
            by_length = part[torch.sort(self.lengths[part], stable=True).indices]
            batches += list(by_length.split(self.batch_size))
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
        return batches

    def gather(self, index: torch.Tensor) -> torch.Tensor:
        """Padded ids int64 (B, T) of the examples `index` (CPU), T = their longest length."""
        lengths = self.lengths[index]  # (B,)
        width = max(1, int(lengths.max()))
        index, lengths = index.to(self.device), lengths.to(self.device)
        positions = torch.arange(width, device=self.device)  # (T,)
        grid = self.starts[index].unsqueeze(1) + positions  # (B, T) flat positions
        real = positions < lengths.unsqueeze(1)  # (B, T)
        grid = grid.clamp_max(len(self.tokens) - 1)  # positions past a text's end are masked
        return torch.where(real, self.tokens[grid], PAD_ID)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _, ids, labels in self.indexed():
            yield ids, labels

    def indexed(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Like iterating, with each batch's example indices into the split first."""
        # Large odd multiplier keeps (seed, epoch) pairs from colliding (as BatchLoader does).
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        for index in self.batches(generator):
            yield index, self.gather(index), self.labels[index.to(self.device)]
