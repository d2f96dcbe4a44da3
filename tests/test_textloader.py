"""The text batch loader under data parallelism (data/textloader.py): with `pad_shards`
(training) every rank gets the same number of batches, of the same size at each step, and the
epoch is covered; without it (evaluation) the ranks' shards count every example exactly once."""

from __future__ import annotations

import pytest
import torch

from neuralab.data.textloader import PAD_ID, TextBatchLoader


def numbered_texts(count: int) -> tuple[list[list[int]], torch.Tensor]:
    """Text i holds token i + 1 repeated 1 + i % 7 times and has label i, so a batch reveals
    which texts it holds; lengths vary, so bucketing reorders them."""
    return [[i + 1] * (1 + i % 7) for i in range(count)], torch.arange(count)


def rank_batches(count: int, world_size: int, pad_shards: bool, shuffle: bool) -> list[list]:
    """Each rank's epoch as lists of labels (batches of 4, buckets of 2 batches: several
    length-sorted chunks per epoch)."""
    texts, labels = numbered_texts(count)
    shards = []
    for rank in range(world_size):
        loader = TextBatchLoader(
            texts, labels, 4, shuffle=shuffle, seed=5, rank=rank, world_size=world_size,
            pad_shards=pad_shards, bucket_batches=2,
        )  # fmt: skip
        loader.set_epoch(3)
        batches = [batch.tolist() for _, batch in loader]
        assert len(batches) == len(loader)  # what the trainer plans with is what it gets
        shards.append(batches)
    return shards


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("count", [13, 24, 37])  # indivisible and divisible by the ranks
def test_padded_shards_give_every_rank_the_same_steps(count: int, world_size: int) -> None:
    shards = rank_batches(count, world_size, pad_shards=True, shuffle=True)
    assert len({len(shard) for shard in shards}) == 1  # DDP: the same number of steps ...
    for step in zip(*shards, strict=True):
        assert len({len(batch) for batch in step}) == 1  # ... of the same size at each step
    seen = [label for shard in shards for batch in shard for label in batch]
    padded_epoch = -(-count // world_size) * world_size  # wrapped to a multiple of the ranks
    assert set(seen) == set(range(count)) and len(seen) == padded_epoch
    assert max(seen.count(label) for label in seen) <= 2  # only the wrap-around repeats


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("count", [13, 37])
def test_evaluation_shards_count_every_example_once(count: int, world_size: int) -> None:
    """Unpadded shards, as evaluation uses them: summing per-rank counts (what the ranks'
    reduction does) counts each example once, and the ranks may differ by one example."""
    shards = rank_batches(count, world_size, pad_shards=False, shuffle=False)
    per_rank = [sorted(label for batch in shard for label in batch) for shard in shards]
    assert sorted(sum(per_rank, [])) == list(range(count))
    assert max(map(len, per_rank)) - min(map(len, per_rank)) <= 1
    even = [sum(1 for label in labels if label % 2 == 0) for labels in per_rank]
    assert sum(even) == (count + 1) // 2  # a metric summed over ranks: each example once


def test_sharded_batches_hold_each_text_padded_with_zeros() -> None:
    texts, labels = numbered_texts(11)
    loader = TextBatchLoader(texts, labels, 3, shuffle=True, rank=1, world_size=2, pad_shards=True)
    for ids, batch_labels in loader:  # ids (B, T)
        assert ids.shape[1] == max(len(texts[i]) for i in batch_labels.tolist())
        for row, label in zip(ids.tolist(), batch_labels.tolist(), strict=True):
            text = texts[label]
            assert row == text + [PAD_ID] * (len(row) - len(text))
