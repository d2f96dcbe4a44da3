"""`neuralab evaluate RUN`: a saved run on the test split of its dataset (or another one with
the same classes), with per-class precision / recall / F1, macro and weighted averages, top-k
accuracy and the confusion matrix, printed and saved as the run's `evaluation.json`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from neuralab.config import RunConfig
from neuralab.data import ImageDataset, TextDataset, load_dataset
from neuralab.data.loader import BatchLoader
from neuralab.metrics import ClassificationCounts, classification_report
from neuralab.predict import Predictor
from neuralab.textrun import split_loader
from neuralab.tracking import write_text_atomic
from neuralab.trainer import make_loss, predict_logits

TOP_K = (1, 5)


def load_data(config: RunConfig) -> ImageDataset | TextDataset:
    """The dataset a config names, with its options."""
    return load_dataset(
        config.data.name,
        config.data.data_dir,
        config.data.download,
        config.data.val_split,
        config.train.seed,
        **config.data.options,
    )


def evaluate(
    run_dir: str | Path, data: str | None = None, data_dir: str | None = None, save: bool = True
) -> dict:
    """Evaluate a saved run on the test split of its dataset (or of `data`).

    Returns the report: accuracy, loss, count, top_k_accuracy, macro and weighted
    precision/recall/F1, per_class, confusion_matrix ([true][predicted]) and dataset. With
    `save`, it is also written to `<run>/evaluation.json` (`evaluation-<data>.json` for
    another dataset).

    Example:
        >>> neuralab.evaluate("runs/mnist-lenet-…")["per_class"]["7"]["recall"]  # doctest: +SKIP
    """
    predictor = Predictor.load(run_dir)
    config = RunConfig.model_validate(predictor.meta["config"])
    if data:
        config.data.name = data
    if data_dir:
        config.data.data_dir = data_dir
    dataset = load_data(config)
    predictor.check_classes(dataset.classes, dataset.name)
    size = config.train.eval_batch_size
    if predictor.tokenizer is not None:
        loader = split_loader(dataset.test, predictor.tokenizer, size, predictor.device)
    else:
        prep = predictor.meta["preprocessing"]
        mean, std = tuple(prep["mean"]), tuple(prep["std"])
        loader = BatchLoader(dataset.test, size, mean, std, device=predictor.device)
    counts = ClassificationCounts(len(dataset.classes), TOP_K)
    loss_fn, tta = make_loss(config.train.loss), predictor.meta.get("tta", False)
    for inputs, labels in loader:
        logits = predict_logits(predictor.model, inputs, tta=tta)
        counts.update(logits, labels, float(loss_fn(logits, labels)) * len(labels))
    report = {**classification_report(counts, list(dataset.classes)), "dataset": dataset.name}
    if save:
        write_text_atomic(report_path(run_dir, data), json.dumps(report, indent=2))
    return report


def report_path(run_dir: str | Path, data: str | None) -> Path:
    """`<run>/evaluation.json`, or `evaluation-<data>.json` when evaluating on other data."""
    folder = Path(run_dir)
    if folder.name == "checkpoint":  # a checkpoint folder was given: write beside it
        folder = folder.parent
    if not data:
        return folder / "evaluation.json"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", data).strip("-")[:80]
    return folder / f"evaluation-{slug}.json"


def format_confusion(report: dict, classes: list[str], limit: int = 20) -> str:
    """The confusion matrix as a text table (rows: true class, columns: predicted)."""
    if len(classes) > limit:
        return f"(confusion matrix of {len(classes)} classes: see the JSON report)"
    matrix = torch.tensor(report["confusion_matrix"])
    width = max(5, *(len(c) for c in classes), len(str(int(matrix.max()))))
    header = " " * width + " " + " ".join(f"{c[:width]:>{width}}" for c in classes)
    rows = [
        f"{name[:width]:<{width}} " + " ".join(f"{int(v):>{width}}" for v in matrix[i])
        for i, name in enumerate(classes)
    ]
    return "\n".join(["confusion (rows: true, columns: predicted)", header, *rows])
