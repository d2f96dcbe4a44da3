"""Checkpoint → predictions. A `Predictor` rebuilds the model from the checkpoint's own
metadata and preprocesses inputs exactly as training did: images are resized and normalised,
texts go through the run's own tokenizer (tokenizer.json) with its truncation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from neuralab.checkpoint.format import CheckpointError, load_checkpoint
from neuralab.data.augment import to_float
from neuralab.data.dataset import DataError
from neuralab.data.textloader import pad_batch
from neuralab.data.tokenizer import TextTokenizer, TokenizerSettings
from neuralab.models import InputSpec, TextSpec, build_model
from neuralab.train.trainer import predict_logits

TEXT_BATCH = 256  # texts per forward pass when predicting


def checkpoint_folder(path: str | Path) -> Path:
    """A run directory or a checkpoint folder → the checkpoint folder."""
    path = Path(path).expanduser()
    if (path / "checkpoint" / "meta.json").exists():
        return path / "checkpoint"
    if (path / "meta.json").exists():
        return path
    raise CheckpointError(
        f"{path} is not a neuralab run directory (expected "
        f"{path / 'checkpoint' / 'meta.json'}); pass the folder that "
        "`neuralab train` printed at the end"
    )


class Predictor:
    """A trained model plus its classes and preprocessing.

    Example:
        >>> predictor = neuralab.load("runs/mnist-lenet-...")
        >>> predictor.predict(["seven.png"], top_k=3)
        [[('7', 0.98), ('1', 0.01), ('9', 0.003)]]
        >>> neuralab.load("runs/imdb-ngram-...").predict(["what a wonderful film"])
        [[('pos', 0.97)]]
    """

    def __init__(
        self,
        model: torch.nn.Module,
        meta: dict,
        device: torch.device,
        tokenizer: TextTokenizer | None = None,
    ) -> None:
        self.model, self.meta, self.device = model.eval(), meta, device
        self.classes: list[str] = meta["classes"]
        self.tokenizer = tokenizer  # text models only
        if tokenizer is not None:
            return
        prep = meta["preprocessing"]
        self.mean, self.std = tuple(prep["mean"]), tuple(prep["std"])
        self.channels, self.image_size = prep["channels"], tuple(prep["image_size"])

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> Predictor:
        folder = checkpoint_folder(path)
        weights, meta = load_checkpoint(folder)
        text = meta.get("kind") == "text"
        try:
            spec = TextSpec(**meta["spec"]) if text else InputSpec(**meta["spec"])
            model = build_model(meta["model"]["name"], spec, **meta["model"]["args"])
            model.load_state_dict(weights)
        except (KeyError, TypeError, RuntimeError) as error:
            raise CheckpointError(
                f"{folder}: cannot rebuild the model from meta.json ({error})"
            ) from None
        classes = meta.get("classes")
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise CheckpointError(f"{folder / 'meta.json'}: 'classes' must be a list of names")
        try:
            tokenizer = None
            if text:
                settings = TokenizerSettings.from_dict(meta["tokenizer"])
                tokenizer = TextTokenizer.load(folder / "tokenizer.json", settings)
            return cls(model.to(device), meta, torch.device(device), tokenizer)
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(
                f"{folder / 'meta.json'}: the preprocessing or tokenizer settings are "
                f"malformed ({type(error).__name__}: {error})"
            ) from None

    def check_classes(self, classes: Sequence[str], dataset: str) -> None:
        if list(classes) != self.classes:
            raise DataError(
                f"dataset {dataset} has classes {list(classes)[:10]} but the model "
                f"was trained on {self.classes[:10]}; evaluate on the same classes"
            )

    def to_tensor(self, item) -> torch.Tensor:
        """A file path, PIL image, numpy array or tensor → uint8 (C, H, W) at the model's size."""
        from neuralab.data.images import load_image_file

        if isinstance(item, (str, Path)):
            return load_image_file(Path(item), self.channels, self.image_size)
        if not isinstance(item, torch.Tensor):
            from PIL import Image

            if isinstance(item, Image.Image):
                return pil_to_tensor(item, self.channels, self.image_size)
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

    def text_logits(self, texts: Sequence[str]) -> torch.Tensor:
        """Logits (N, classes) of raw strings, in batches of similar length."""
        if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
            raise DataError("a text model predicts a list of strings, e.g. ['a wonderful film']")
        ids = self.tokenizer.encode(texts)
        logits = torch.empty(len(ids), len(self.classes))
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # little padding per batch
        for start in range(0, len(order), TEXT_BATCH):
            rows = order[start : start + TEXT_BATCH]
            batch = pad_batch([ids[i] for i in rows], self.device)
            logits[rows] = predict_logits(self.model, batch).cpu()
        return logits

    def probabilities(self, inputs: Sequence) -> torch.Tensor:
        """Class probabilities (N, classes) for a sequence of inputs (images, or strings)."""
        if self.tokenizer is not None:
            return self.text_logits(inputs).softmax(dim=1)
        images = torch.stack([self.to_tensor(item) for item in inputs]).to(self.device)
        logits = predict_logits(
            self.model, to_float(images, self.mean, self.std), tta=self.meta.get("tta", False)
        )
        return logits.softmax(dim=1)

    def predict(self, inputs: Sequence, top_k: int = 1) -> list[list[tuple[str, float]]]:
        """Top-k (class, probability) pairs for each input, most likely first."""
        probabilities = self.probabilities(inputs)
        k = min(top_k, len(self.classes))
        values, indices = probabilities.topk(k, dim=1)
        return [
            [(self.classes[i], round(v, 6)) for v, i in zip(row_v, row_i, strict=True)]
            for row_v, row_i in zip(values.tolist(), indices.tolist(), strict=True)
        ]


def pil_to_tensor(image, channels: int, image_size: tuple[int, int]) -> torch.Tensor:
    """Convert and resize a PIL image the way training images were prepared."""
    from neuralab.data.images import prepare_pil_image

    return prepare_pil_image(image, channels, image_size)
