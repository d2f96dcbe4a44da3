"""The image half of api.py: for an `ImageDataset`, the config becomes an `InputSpec`, in-memory
uint8 loaders with batched augmentation, and the checkpoint's metadata.

`ImageInputs` and `textrun.TextInputs` offer the same few methods, so api.py trains either
without branching on the kind of data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neuralab.config import RunConfig
from neuralab.data import ImageDataset
from neuralab.data.augment import Augment, to_float
from neuralab.data.loader import BatchLoader
from neuralab.models import InputSpec
from neuralab.train import distributed
from neuralab.train.engine import Engine

ENGINE_SAMPLE = 128  # images timed when choosing the engine: ranks candidates, cheap to repeat
INIT_SAMPLE = 5000  # images given to data-dependent initialisation: stable statistics


@dataclass(frozen=True)
class ImageInputs:
    """An image dataset and what a run derives from it."""

    dataset: ImageDataset

    @property
    def spec(self) -> InputSpec:
        d = self.dataset
        return InputSpec(d.channels, *d.image_size, len(d.classes))

    def describe(self) -> str:
        """The `data` log line."""
        d, spec = self.dataset, self.spec
        return (
            f"data   {d.name}: {len(d.train)} train, {len(d.val) if d.val else 0} val, "
            f"{len(d.test)} test, {d.channels}×{spec.height}×{spec.width}, "
            f"{spec.num_classes} classes"
        )

    def initialise(self, model: torch.nn.Module, device: torch.device) -> None:
        """Models with data-dependent initialisation (e.g. patch whitening) get a sample."""
        if hasattr(model, "initialize_from_data"):
            sample = self.dataset.train.images[:INIT_SAMPLE].to(device)
            model.initialize_from_data(to_float(sample, self.dataset.mean, self.dataset.std))

    def examples(self) -> torch.Tensor:
        """A few training images as stored (uint8 (N, C, H, W)), to show in TensorBoard."""
        return self.dataset.train.images[:32]

    def example(self, device: torch.device) -> torch.Tensor:
        """One input of the model's shape, (1, C, H, W), for `neuralab summary`."""
        spec = self.spec
        return torch.zeros(1, spec.channels, spec.height, spec.width, device=device)

    def sample_batch(
        self, batch_size: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A training-sized batch (at most ENGINE_SAMPLE) to time engine candidates with."""
        d = self.dataset
        size = min(batch_size, len(d.train), ENGINE_SAMPLE)
        inputs = to_float(d.train.images[:size].to(device), d.mean, d.std)
        return inputs, d.train.labels[:size].to(device)

    def loaders(self, config: RunConfig, engine: Engine) -> dict[str, BatchLoader]:
        """Train (shuffled, augmented), test and val loaders for this process's shard.

        Training shards are padded so every process takes the same number of steps;
        evaluation shards count each example once."""
        d = self.dataset
        shard = {"rank": distributed.rank(), "world_size": distributed.world_size()}
        common = {
            "mean": d.mean,
            "std": d.std,
            "device": engine.device,
            "channels_last": engine.channels_last,
            **shard,
        }
        eval_size = config.train.eval_batch_size
        loaders = {
            "train": BatchLoader(
                d.train,
                distributed.split_batch(config.train.batch_size, shard["world_size"]),
                shuffle=True,
                seed=config.train.seed,
                augment=Augment(**config.augment.model_dump()),
                pad_shards=True,
                **common,
            ),
            "test": BatchLoader(d.test, eval_size, **common),
        }
        if d.val is not None:
            loaders["val"] = BatchLoader(d.val, eval_size, **common)
        return loaders

    def meta(self, config: RunConfig, engine: Engine) -> dict:
        """Everything needed to rebuild and use the model without the config or the dataset."""
        d, spec = self.dataset, self.spec
        return {
            "model": {"name": config.model.name, "args": config.model.args},
            "spec": spec.to_dict(),
            "classes": list(d.classes),
            "dataset": d.name,
            "preprocessing": {
                "mean": list(d.mean),
                "std": list(d.std),
                "channels": spec.channels,
                "image_size": [spec.height, spec.width],
            },
            "tta": config.train.tta,
            "config": config.model_dump(mode="json"),
            "engine": engine.describe(),
        }

    def files(self) -> dict[str, str] | None:
        """Extra files saved with each checkpoint (none for images)."""
        return None
