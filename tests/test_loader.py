"""BatchLoader and batched augmentation: coverage, seeded order, sharding, and reference checks
of every augmentation against a per-image computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuralab.data.augment import Augment, cutout, random_crop, random_flip, to_float
from neuralab.data.dataset import Split
from neuralab.data.loader import BatchLoader

COUNT = 10  # examples in the toy split; odd batch sizes leave a partial batch


def indexed_split(count: int = COUNT, size: int = 4) -> Split:
    """Image i is filled with the value i and has label i, so batches reveal their indices."""
    images = torch.arange(count, dtype=torch.uint8).view(count, 1, 1, 1).expand(-1, 1, size, size)
    return Split(images.contiguous(), torch.arange(count))


def epoch_labels(loader: BatchLoader, epoch: int = 0) -> list[list[int]]:
    loader.set_epoch(epoch)
    return [labels.tolist() for _, labels in loader]


def loader(**kwargs) -> BatchLoader:
    settings = {"batch_size": 3, "mean": (0.5,), "std": (0.25,), "shuffle": True, "seed": 7}
    return BatchLoader(indexed_split(), **{**settings, **kwargs})


def test_every_example_once_per_epoch_with_the_partial_batch_kept() -> None:
    batches = epoch_labels(loader())
    assert [len(batch) for batch in batches] == [3, 3, 3, 1]
    assert len(loader()) == 4
    assert sorted(sum(batches, [])) == list(range(COUNT))
    assert sum(batches, []) != list(range(COUNT))  # shuffled


def test_drop_last_drops_the_partial_batch() -> None:
    batches = epoch_labels(loader(drop_last=True))
    assert [len(batch) for batch in batches] == [3, 3, 3]
    assert len(loader(drop_last=True)) == 3
    assert len(set(sum(batches, []))) == 9


def test_unshuffled_order_is_the_split_order() -> None:
    assert sum(epoch_labels(loader(shuffle=False)), []) == list(range(COUNT))


def test_order_depends_only_on_seed_and_epoch() -> None:
    assert epoch_labels(loader(), epoch=3) == epoch_labels(loader(), epoch=3)
    first = loader()
    assert epoch_labels(first, epoch=0) == epoch_labels(first, epoch=0)  # replayable
    assert epoch_labels(loader(), epoch=0) != epoch_labels(loader(), epoch=1)
    assert epoch_labels(loader(seed=7)) != epoch_labels(loader(seed=8))


@pytest.mark.parametrize("world_size", [2, 3])
def test_rank_shards_are_disjoint_and_cover_the_epoch(world_size: int) -> None:
    shards = [
        sum(epoch_labels(loader(rank=rank, world_size=world_size), epoch=2), [])
        for rank in range(world_size)
    ]
    seen = sum(shards, [])
    assert sorted(seen) == list(range(COUNT))  # together: everything, each once
    for rank, shard in enumerate(shards):
        assert len(loader(rank=rank, world_size=world_size)) == -(-len(shard) // 3)


def test_batches_are_normalised_floats_of_the_right_images() -> None:
    split = indexed_split()
    for images, labels in loader():
        assert images.dtype == torch.float32 and labels.dtype == torch.int64
        assert images.shape == (len(labels), 1, 4, 4)
        torch.testing.assert_close(images, to_float(split.images[labels], (0.5,), (0.25,)))


def test_channels_last_batches() -> None:
    images, _ = next(iter(loader(channels_last=True)))
    assert images.is_contiguous(memory_format=torch.channels_last)


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        loader(batch_size=0)


def test_to_float_matches_manual_normalisation() -> None:
    images = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8)
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    manual = np.empty((2, 3, 4, 5), dtype=np.float64)
    for channel in range(3):
        manual[:, channel] = (images[:, channel].numpy() / 255.0 - mean[channel]) / std[channel]
    result = to_float(images, mean, std)
    assert result.dtype == torch.float32
    torch.testing.assert_close(result, torch.from_numpy(manual).float())


def random_images(batch: int = 16, seed: int = 0, shape=(2, 6, 7)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, *shape), dtype=torch.uint8, generator=generator)


@pytest.mark.parametrize("padding, dtype", [(2, torch.uint8), (5, torch.uint8), (3, torch.float32)])
def test_random_crop_equals_pad_and_slice_at_the_drawn_offsets(padding, dtype) -> None:
    images = random_images().to(dtype)  # 6x7: padding 5 reflects up to the far border
    result = random_crop(images, padding, torch.Generator().manual_seed(5))
    # The same generator draws the same offsets: all row offsets, then all column offsets.
    replay = torch.Generator().manual_seed(5)
    dy = torch.randint(0, 2 * padding + 1, (len(images),), generator=replay)
    dx = torch.randint(0, 2 * padding + 1, (len(images),), generator=replay)
    assert result.dtype == dtype and result.shape == images.shape
    height, width = images.shape[2:]
    for index, image in enumerate(images.numpy()):
        padded = np.pad(image, ((0, 0), (padding, padding), (padding, padding)), mode="reflect")
        top, left = int(dy[index]), int(dx[index])
        expected = padded[:, top : top + height, left : left + width]
        np.testing.assert_array_equal(result[index].numpy(), expected)
    assert len(set(zip(dy.tolist(), dx.tolist(), strict=True))) > 1  # offsets do vary


def test_random_crop_without_padding_is_the_identity() -> None:
    images = random_images()
    assert random_crop(images, 0, torch.Generator()) is images


def test_flip_mirrors_about_half_of_the_images() -> None:
    images = random_images(batch=400, shape=(1, 3, 5))
    result = random_flip(images, torch.Generator().manual_seed(0))
    same = (result == images).flatten(1).all(1)
    mirrored = (result == images.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())  # each image is either untouched or mirrored
    assert 150 < int(mirrored.sum()) < 250  # p = 1/2: 200 expected, sd 10


@pytest.mark.parametrize("size", [3, 4])
def test_cutout_zeroes_the_square_around_the_drawn_centre(size: int) -> None:
    height = width = 12
    images = torch.full((64, 2, height, width), 200, dtype=torch.uint8)
    result = cutout(images, size, torch.Generator().manual_seed(3))
    replay = torch.Generator().manual_seed(3)
    centre_y = torch.randint(0, height, (64, 1, 1), generator=replay).flatten()
    centre_x = torch.randint(0, width, (64, 1, 1), generator=replay).flatten()
    half = size // 2
    interior = 0
    for index in range(64):
        top, left = int(centre_y[index]) - half, int(centre_x[index]) - half
        expected = np.full((height, width), 200, dtype=np.uint8)
        expected[max(0, top) : top + size, max(0, left) : left + size] = 0
        for channel in range(2):  # every channel gets the same square
            np.testing.assert_array_equal(result[index, channel].numpy(), expected)
        if 0 <= top and top + size <= height and 0 <= left and left + size <= width:
            interior += 1
            assert int((result[index, 0] == 0).sum()) == size * size
    assert interior > 10  # enough centres far from the edges to check the full square


def test_augment_is_reproducible_with_the_same_generator_seed() -> None:
    policy = Augment(crop_padding=2, flip=True, cutout=3)
    images = random_images(batch=32)
    first = policy(images, torch.Generator().manual_seed(11))
    again = policy(images, torch.Generator().manual_seed(11))
    other = policy(images, torch.Generator().manual_seed(12))
    assert first.dtype == torch.uint8
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.equal(first, images)


def test_inactive_augment_is_skipped_by_the_loader() -> None:
    assert not Augment().active
    assert loader(augment=Augment()).augment is None


def test_loader_augmentation_replays_per_epoch() -> None:
    def batches(epoch: int) -> list[torch.Tensor]:
        augmented = BatchLoader(
            Split(random_images(batch=12, shape=(1, 6, 6)), torch.arange(12)),
            batch_size=5,
            mean=(0.5,),
            std=(0.5,),
            shuffle=True,
            augment=Augment(crop_padding=1, flip=True),
        )
        augmented.set_epoch(epoch)
        return [images for images, _ in augmented]

    first, again, later = batches(0), batches(0), batches(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, later, strict=True))


def test_alternating_flip_mirrors_each_image_in_exactly_one_of_two_epochs() -> None:
    count = 400
    images = random_images(batch=count, shape=(1, 3, 5))
    flips = Augment(flip="alternate")
    generator, index = torch.Generator().manual_seed(0), torch.arange(count)
    mirrored = []
    for epoch in range(4):
        result = flips(images, generator, index, epoch, seed=3)
        same = (result == images).flatten(1).all(1)
        flipped = (result == images.flip(-1)).flatten(1).all(1)
        assert bool((same | flipped).all())
        mirrored.append(flipped & ~same)
    assert 150 < int(mirrored[0].sum()) < 250  # a random half first (200 expected, sd 10)
    assert bool((mirrored[0] ^ mirrored[1]).all())  # then the other half
    assert torch.equal(mirrored[0], mirrored[2]) and torch.equal(mirrored[1], mirrored[3])
    # The half depends on the seed and on each example's index, not on batch composition.
    other_seed = flips(images, generator, index, 0, seed=4)
    assert not torch.equal(other_seed, flips(images, generator, index, 0, seed=3))
    part = flips(images[100:150], generator, index[100:150], 0, seed=3)
    assert torch.equal(part, flips(images, generator, index, 0, seed=3)[100:150])


def test_alternating_flip_in_the_loader_follows_the_epoch() -> None:
    split = Split(random_images(batch=12, shape=(1, 4, 4)), torch.arange(12))
    flips = BatchLoader(split, 5, (0.5,), (0.5,), shuffle=True, augment=Augment(flip="alternate"))
    plain = BatchLoader(split, 5, (0.5,), (0.5,), shuffle=True)

    def by_label(loader: BatchLoader, epoch: int) -> dict[int, torch.Tensor]:
        loader.set_epoch(epoch)
        return {int(y): x for images, labels in loader for x, y in zip(images, labels, strict=True)}

    even, odd, reference = by_label(flips, 0), by_label(flips, 1), by_label(plain, 0)
    for label, image in reference.items():
        mirror = image.flip(-1)
        assert torch.equal(even[label], image) != torch.equal(odd[label], image)
        assert torch.equal(even[label], mirror) or torch.equal(odd[label], mirror)


def test_augment_flip_accepts_the_old_booleans_and_refuses_unknown_modes() -> None:
    assert Augment(flip=True).flip == "random" and Augment(flip=False).flip == "off"
    with pytest.raises(ValueError, match="alternate"):
        Augment(flip="sometimes")
    with pytest.raises(ValueError, match="indices"):
        Augment(flip="alternate")(random_images(batch=2, shape=(1, 2, 2)), torch.Generator())
