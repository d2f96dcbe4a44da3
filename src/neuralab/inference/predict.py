"""Checkpoint → predictions. A `Predictor` rebuilds the model from the checkpoint's own
metadata and prepares inputs exactly as training did, through the run's modality: images are
resized and normalised, texts go through the run's own tokenizer with its truncation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from neuralab.checkpoint.format import CheckpointError
from neuralab.checkpoint.meta import RunMeta, TaskRef, load_run_checkpoint
from neuralab.data.dataset import DataError
from neuralab.data.heads import Head, heads_of, row_predictions, to_probabilities
from neuralab.modalities import Modality, modality_from_meta
from neuralab.models import build_model
from neuralab.tasks import TASKS, Task


def task_from_ref(ref: TaskRef) -> Task:
    """The task a checkpoint records, rebuilt for scoring and prediction."""
    if ref.name == "classification":
        return TASKS.build(ref.name, loss=ref.loss, tta=ref.tta)
    return TASKS.build(ref.name, **ref.args)


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


@torch.inference_mode()
def predict_logits(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    task: Task,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The task's float32 outputs (B, classes) for a batch of model inputs, in eval mode."""
    model.eval()
    with torch.autocast(
        inputs.device.type,
        dtype=autocast_dtype or torch.bfloat16,
        enabled=autocast_dtype is not None,
    ):
        return task.predict(model, inputs)


def test_subset(
    predictor: Predictor, count: int, seed: int | None, data: str | None, data_dir: str | None
) -> tuple[object, torch.Tensor, str]:
    """The run's test split (or `data`'s), the indices of `count` of its examples (the first
    ones, or a seeded shuffle's with `seed`) and the dataset's name: what attacks and
    faithfulness scores run on."""
    if count < 1:
        raise DataError(f"the number of test examples must be ≥ 1, got {count}")
    dataset = predictor.meta.data.load(data, data_dir)
    predictor.check_classes(dataset.classes, dataset.name)
    total = len(dataset.test)
    order = torch.arange(total)
    if seed is not None:
        order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    return dataset.test, order[: min(count, total)], dataset.name


class Predictor:
    """A trained model plus its metadata, its modality (how inputs are prepared) and its task.

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
        meta: RunMeta,
        modality: Modality,
        device: torch.device,
    ) -> None:
        self.model, self.meta, self.modality, self.device = model.eval(), meta, modality, device
        self.classes: list[str] = meta.classes  # a multitask run's: its output columns
        self.task: Task = task_from_ref(meta.task)
        # several label fields: what each output column belongs to (data/heads.py)
        self.heads: list[Head] | None = heads_of(meta.task.args)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> Predictor:
        folder = checkpoint_folder(path)
        weights, meta = load_run_checkpoint(folder)
        try:
            modality = modality_from_meta(meta.kind, meta.inputs, folder)
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(
                f"{folder / 'meta.json'}: the preprocessing or tokenizer settings are "
                f"malformed ({type(error).__name__}: {error})"
            ) from None
        try:
            spec = modality.spec_type(**meta.spec)
            model = build_model(meta.model.name, spec, **meta.model.args)
            model.load_state_dict(weights)
        except (KeyError, TypeError, RuntimeError) as error:
            raise CheckpointError(
                f"{folder}: cannot rebuild the model from meta.json ({error})"
            ) from None
        return cls(model.to(device), meta, modality, torch.device(device))

    def check_classes(self, classes: Sequence[str], dataset: str) -> None:
        if list(classes) != self.classes:
            raise DataError(
                f"dataset {dataset} has classes {list(classes)[:10]} but the model "
                f"was trained on {self.classes[:10]}; evaluate on the same classes"
            )

    def logits(
        self,
        inputs: Sequence,
        autocast_dtype: torch.dtype | None = None,
        channels_last: bool = False,
    ) -> torch.Tensor:
        """The model's outputs (N, classes) for raw inputs (image files, PIL images, arrays,
        tensors; or strings for a text model), prepared as in training. fp32 unless given
        `autocast_dtype`; `channels_last` (images) moves the model to that layout for good."""
        examples = self.modality.prepare_all(inputs)
        logits = torch.empty(len(examples), len(self.classes))
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        for rows, batch in self.modality.batches(examples):
            model_inputs = self.modality.model_inputs(batch.to(self.device))
            if channels_last:
                model_inputs = model_inputs.contiguous(memory_format=torch.channels_last)
            found = predict_logits(self.model, model_inputs, self.task, autocast_dtype)
            logits[rows] = found.float().cpu()
        return logits

    def probabilities(self, inputs: Sequence) -> torch.Tensor:
        """Class probabilities (N, classes) for a sequence of inputs (images, or strings);
        with several heads, each head's own (regression columns: values)."""
        return self.to_probabilities(self.logits(inputs))

    def to_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """The model's outputs (N, columns) → probabilities, per head when there are heads."""
        if self.heads:
            return to_probabilities(self.heads, logits)
        return logits.softmax(dim=1)

    def predict(self, inputs: Sequence, top_k: int = 1) -> list:
        """Top-k (class, probability) pairs for each input, most likely first. With several
        label fields, a dict per input instead: each head's top classes or its value
        (`data.heads.row_predictions`)."""
        probabilities = self.probabilities(inputs)
        if self.heads:
            return [row_predictions(self.heads, row, top_k) for row in probabilities]
        k = min(top_k, len(self.classes))
        values, indices = probabilities.topk(k, dim=1)
        return [
            [(self.classes[i], round(v, 6)) for v, i in zip(row_v, row_i, strict=True)]
            for row_v, row_i in zip(values.tolist(), indices.tolist(), strict=True)
        ]
