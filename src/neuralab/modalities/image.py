"""Images: how a run's inputs are prepared, for training and for inference alike.

`ImageModality` is the codec that a checkpoint describes (channels, size, normalisation):
it turns files, PIL images and arrays into the model's uint8 (C, H, W) inputs, and batches
of them into normalised floats. `ImageInputs` is the training side: an image dataset plus its
modality, with the shuffled, augmented in-memory loaders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from neuralab.data import ImageDataset
from neuralab.data.augment import Augment, to_float
from neuralab.data.dataset import DataError, Split
from neuralab.data.loader import BatchLoader
from neuralab.models import InputSpec
from neuralab.models.tta import tta_logits

ENGINE_SAMPLE = 128  # images timed when choosing the engine: ranks candidates, cheap to repeat
INIT_SAMPLE = 5000  # images given to data-dependent initialisation: stable statistics

PREDICT_BATCH = 512  # images per forward pass when predicting a list of inputs


@dataclass(frozen=True)
class ImageModality:
    """uint8 images of one size, normalised per channel.

    Example:
        >>> modality = ImageModality((0.1307,), (0.3081,), 1, (28, 28))
        >>> batch = modality.collate([modality.prepare("seven.png")])  # (1, 1, 28, 28) uint8
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int
    image_size: tuple[int, int]

    kind = "image"
    spec_type = InputSpec
    tta_allowed = True  # mirror / shift test-time augmentation makes sense for images
    dynamic_axes = {0: "batch"}  # of an exported graph's input: any batch size

    @classmethod
    def from_meta(cls, fields: dict, folder: Path) -> ImageModality:
        """The modality that `meta()`'s fields describe (`folder`: unused for images)."""
        preprocessing = fields["preprocessing"]
        return cls(
            tuple(preprocessing["mean"]),
            tuple(preprocessing["std"]),
            int(preprocessing["channels"]),
            tuple(preprocessing["image_size"]),
        )

    def meta(self) -> dict:
        """What a checkpoint stores to rebuild this modality."""
        return {
            "preprocessing": {
                "mean": list(self.mean),
                "std": list(self.std),
                "channels": self.channels,
                "image_size": list(self.image_size),
            }
        }

    def files(self) -> dict[str, str]:
        """Extra files a checkpoint holds for this modality: none for images."""
        return {}

    def describe(self) -> dict:
        """The preprocessing, as the prediction service's /info shows it."""
        return self.meta()["preprocessing"]

    # -- raw inputs → model inputs -------------------------------------------------------------
    def prepare(self, item: Any) -> torch.Tensor:
        """A file path, PIL image, numpy array or tensor → uint8 (C, H, W) at the model's size."""
        from neuralab.data.images import load_image_file, prepare_pil_image

        if isinstance(item, (str, Path)):
            return load_image_file(Path(item), self.channels, self.image_size)
        if not isinstance(item, torch.Tensor):
            from PIL import Image

            if isinstance(item, Image.Image):
                return prepare_pil_image(item, self.channels, self.image_size)
            item = torch.from_numpy(np.asarray(item))
        if item.ndim == 2:
            item = item.unsqueeze(0)
        expected = (self.channels, *self.image_size)
        if tuple(item.shape) != expected or item.dtype != torch.uint8:
            raise DataError(
                f"input tensor must be uint8 {expected}, got {item.dtype} "
                f"{tuple(item.shape)}; pass image files to have them resized"
            )
        return item

    def prepare_all(self, items: Sequence) -> list[torch.Tensor]:
        """Every input prepared (see `prepare`)."""
        if isinstance(items, (str, Path)):
            raise DataError("pass a list of images, e.g. ['seven.png']")
        return [self.prepare(item) for item in items]

    def batches(self, examples: Sequence[torch.Tensor]) -> list[tuple[list[int], torch.Tensor]]:
        """Prepared examples → [(rows, uint8 batch (B, C, H, W))], in order, at most
        PREDICT_BATCH images each (memory stays bounded however many are predicted)."""
        return [
            (list(range(start, min(start + PREDICT_BATCH, len(examples)))),
             torch.stack(list(examples[start : start + PREDICT_BATCH])))
            for start in range(0, len(examples), PREDICT_BATCH)
        ]  # fmt: skip

    def collate(self, chunk: Any) -> torch.Tensor:
        """Examples as an exported model takes them: a uint8 (B, C, H, W) tensor as it is."""
        return chunk if isinstance(chunk, torch.Tensor) else torch.stack(list(chunk))

    def model_inputs(self, batch: torch.Tensor) -> torch.Tensor:
        """A uint8 batch → the float32 normalised input the PyTorch model takes."""
        return to_float(batch, self.mean, self.std)

    @staticmethod
    def worst_examples(split: Split, worst: list[dict], folder: Path, plots: Any) -> tuple:
        """The report's worst test examples: a grid of the images (worst.png) and no texts.
        `plots`: the module that draws (inference/plots.py, handed in: it imports this one's
        callers, not the other way round)."""
        return [plots.worst_images_figure(split.images, worst, folder / "worst.png")], []

    # -- data for evaluation and export checks -------------------------------------------------
    def eval_loader(self, split: Split, batch_size: int, device: torch.device) -> BatchLoader:
        """A loader over a labelled split, prepared as in training (no augmentation)."""
        return BatchLoader(split, batch_size, self.mean, self.std, device=device)

    def split_examples(self, split: Split, index: torch.Tensor, dataset: str) -> torch.Tensor:
        """The split's examples at `index`, as `prepare` returns them (uint8 (N, C, H, W))."""
        images = split.images[index]
        expected = (self.channels, *self.image_size)
        if tuple(images.shape[1:]) != expected:
            raise DataError(
                f"test images of {dataset} are {tuple(images.shape[1:])} but the model takes "
                f"{expected}; pass the run's own data, or --check-data random"
            )
        return images

    def random_examples(self, count: int, spec: dict, generator: torch.Generator) -> torch.Tensor:
        """`count` seeded random uint8 images (N, C, H, W)."""
        shape = (count, self.channels, *self.image_size)
        return torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)

    def export_contract(self, bare: bool, tta: str) -> dict:
        """The image parts of an export's contract; `bare`: the graph takes normalised floats
        (safetensors exports hold the bare model), else uint8 images."""
        height, width = self.image_size
        return {
            "preprocessing": {"mean": list(self.mean), "std": list(self.std), "tta": tta},
            "input": {
                "name": "images", "dtype": "float32" if bare else "uint8",
                "shape": ["batch", self.channels, height, width],
                "note": "normalised images (x / 255 - mean) / std, for the bare model" if bare
                else "images 0..255; normalisation (and the run's TTA) happen inside the model",
            },
        }  # fmt: skip

    @staticmethod
    def export_graph(model: nn.Module, contract: dict) -> nn.Module:
        """The module an export holds: `ImageGraph` around the model."""
        prep = contract["preprocessing"]
        return ImageGraph(model.eval(), prep["mean"], prep["std"], prep["tta"]).eval()

    @staticmethod
    def bare_model(module: nn.Module) -> nn.Module:
        """The model inside an export's module."""
        return module.model if isinstance(module, ImageGraph) else module


class ImageGraph(nn.Module):
    """uint8 images (B, C, H, W) → logits (B, classes), normalising inside (as `to_float`
    does) and averaging the logits of the run's test-time augmentation views (tta.py)."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float], tta: str) -> None:
        super().__init__()
        self.model, self.tta = model, tta
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.to(torch.float32) / 255.0 - self.mean) / self.std  # (B, C, H, W)
        return tta_logits(self.model, x, self.tta)


@dataclass(frozen=True)
class ImageInputs:
    """An image dataset and what a run derives from it (the training side of the modality)."""

    dataset: ImageDataset

    @property
    def modality(self) -> ImageModality:
        d = self.dataset
        return ImageModality(tuple(d.mean), tuple(d.std), d.channels, tuple(d.image_size))

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

    def loaders(
        self,
        batch_size: int,
        eval_batch_size: int,
        seed: int,
        augment: Augment,
        device: torch.device,
        channels_last: bool,
        rank: int = 0,
        world_size: int = 1,
    ) -> dict[str, BatchLoader]:
        """Train (shuffled, augmented), test and val loaders for this process's shard;
        `batch_size` is this process's share of the global batch.

        Training shards are padded so every process takes the same number of steps;
        evaluation shards count each example once."""
        d = self.dataset
        common = {
            "mean": d.mean, "std": d.std, "device": device, "channels_last": channels_last,
            "rank": rank, "world_size": world_size,
        }  # fmt: skip
        loaders = {
            "train": BatchLoader(
                d.train,
                batch_size,
                shuffle=True,
                seed=seed,
                augment=augment,
                pad_shards=True,
                **common,
            ),  # fmt: skip
            "test": BatchLoader(d.test, eval_batch_size, **common),
        }
        if d.val is not None:
            loaders["val"] = BatchLoader(d.val, eval_batch_size, **common)
        return loaders
