"""Episodes: the training side of few-shot learning on images.

`EpisodeInputs` wraps an image dataset whose splits hold disjoint classes (data/episodes.py
makes them so) and gives the run builder what `ImageInputs` gives it, except that its loaders
yield meta-batches of N-way K-shot episodes and the model's output size is what the task asks
for (N for MAML's head, an embedding size for prototypical networks). Inference codec and
checkpoint `kind` stay those of images (`ImageModality`): a few-shot model takes the same
prepared images as any other image model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neuralab.data import ImageDataset
from neuralab.data.augment import to_float
from neuralab.data.episodes import ClassIndex, EpisodeLoader, class_disjoint
from neuralab.modalities.image import ImageInputs, ImageModality
from neuralab.models import InputSpec

# Seed offsets of the fixed validation and test episodes: other draws than training's.
VAL_SEED, TEST_SEED = 1, 2


@dataclass(frozen=True)
class EpisodeSettings:
    """How episodes are drawn (see config.TaskConfig for each field)."""

    ways: int
    shots: int
    queries: int
    episodes: int
    meta_batch: int
    eval_ways: int
    eval_shots: int
    eval_episodes: int
    outputs: int  # the model's output size: N (MAML) or the embedding size (protonet)


@dataclass(frozen=True)
class EpisodeInputs:
    """A class-disjoint image dataset and the episodes a few-shot run draws from it."""

    dataset: ImageDataset
    settings: EpisodeSettings

    @classmethod
    def create(cls, dataset: ImageDataset, settings: EpisodeSettings, seed: int):
        return cls(class_disjoint(dataset, seed), settings)

    @property
    def images(self) -> ImageInputs:
        return ImageInputs(self.dataset)

    @property
    def modality(self) -> ImageModality:
        return self.images.modality

    @property
    def spec(self) -> InputSpec:
        d = self.dataset
        return InputSpec(d.channels, *d.image_size, self.settings.outputs)

    def check(self) -> None:
        """Refuse settings the splits cannot give episodes for (before any work is written)."""
        d, s = self.dataset, self.settings
        ClassIndex(d.train.labels).check(s.ways, s.shots + s.queries, f"{d.name} train split")
        for name in ("val", "test"):
            split = getattr(d, name)
            if split is not None:
                ClassIndex(split.labels).check(
                    s.eval_ways, s.eval_shots + s.queries, f"{d.name} {name} split"
                )

    def class_count(self, split: str) -> int:
        part = getattr(self.dataset, split)
        return 0 if part is None else int(part.labels.unique().numel())

    def describe(self) -> str:
        """The `data` log line: classes per split, and the episodes drawn."""
        d, s = self.dataset, self.settings
        counts = ", ".join(f"{self.class_count(n)} {n}" for n in ("train", "val", "test"))
        return (
            f"data   {d.name}: classes {counts} (disjoint), {d.channels}×{d.image_size[0]}×"
            f"{d.image_size[1]}; episodes {s.ways}-way {s.shots}-shot {s.queries} queries, "
            f"{s.episodes} per epoch in meta-batches of {s.meta_batch}; validation and test "
            f"{s.eval_ways}-way {s.eval_shots}-shot, {s.eval_episodes} fixed episodes"
        )

    def initialise(self, model: torch.nn.Module, device: torch.device) -> None:
        self.images.initialise(model, device)

    def examples(self) -> torch.Tensor:
        return self.images.examples()

    def example(self, device: torch.device) -> torch.Tensor:
        return self.images.example(device)

    def sample_batch(self, batch_size: int, device: torch.device):
        """One episode's worth of training images (labels 0: the engine probe only times a
        forward and backward pass)."""
        s = self.settings
        size = min(len(self.dataset.train), s.meta_batch * s.ways * (s.shots + s.queries))
        d = self.dataset
        images = to_float(d.train.images[:size].to(device), d.mean, d.std)
        return images, torch.zeros(size, dtype=torch.long, device=device)

    def loaders(
        self, batch_size: int, eval_batch_size: int, seed: int, augment, device: torch.device,
        channels_last: bool, rank: int = 0, world_size: int = 1,
    ) -> dict[str, EpisodeLoader]:  # fmt: skip
        """Train episodes (new ones every epoch, `augment`ed) and fixed val/test episodes.
        `batch_size`, `eval_batch_size` and the layout are the image loaders' settings:
        episodes take their sizes from the task settings instead."""
        d, s = self.dataset, self.settings
        common = {"mean": d.mean, "std": d.std, "device": device}
        evaluation = {"shots": s.eval_shots, "queries": s.queries, "episodes": s.eval_episodes}
        loaders = {
            "train": EpisodeLoader(
                d.train, s.ways, s.shots, s.queries, s.episodes, meta_batch=s.meta_batch,
                seed=seed, where=f"{d.name} train split", augment=augment, **common,
            ),
            "test": EpisodeLoader(
                d.test, s.eval_ways, **evaluation, meta_batch=s.meta_batch,
                seed=seed + TEST_SEED, fixed=True, where=f"{d.name} test split", **common,
            ),
        }  # fmt: skip
        if d.val is not None:
            loaders["val"] = EpisodeLoader(
                d.val, s.eval_ways, **evaluation, meta_batch=s.meta_batch,
                seed=seed + VAL_SEED, fixed=True, where=f"{d.name} val split", **common,
            )  # fmt: skip
        return loaders
