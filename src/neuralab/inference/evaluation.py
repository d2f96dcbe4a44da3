"""`neuralab evaluate RUN`: a saved run on the test split of its dataset (or another one with
the same classes), with per-class precision / recall / F1, macro and weighted averages, top-k
accuracy and the confusion matrix, printed and saved as the run's `evaluation.json`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch.nn import functional as F

from neuralab.checkpoint.format import write_text_atomic
from neuralab.data import ImageDataset, TextDataset
from neuralab.data.dataset import DataError
from neuralab.inference.fewshot import evaluate_few_shot, is_few_shot
from neuralab.inference.multihead import evaluate_heads, write_heads_report
from neuralab.inference.predict import Predictor, predict_logits
from neuralab.tasks.metrics import ClassificationCounts, classification_report

TOP_K = (1, 5)
WORST_KEPT = 16  # worst-predicted test examples listed in the report (a 4×4 grid of images)


def evaluate(
    run_dir: str | Path,
    data: str | None = None,
    data_dir: str | None = None,
    save: bool = True,
    **few_shot: int | None,
) -> dict:
    """Evaluate a saved run on the test split of its dataset (or of `data`).

    A few-shot run (protonet, maml, fomaml) is scored on test episodes instead, and
    `few_shot` may set `ways`, `shots`, `queries` and `episodes` (see
    `inference.fewshot.evaluate_few_shot`).

    Returns the report: accuracy, loss, count, top_k_accuracy, macro and weighted
    precision/recall/F1, per_class, confusion_matrix ([true][predicted]), worst (the
    highest-loss test examples) and dataset. With
    `save`, it is also written to `<run>/evaluation.json` (`evaluation-<data>.json` for
    another dataset).

    Example:
        >>> neuralab.evaluate("runs/mnist-lenet-…")["per_class"]["7"]["recall"]  # doctest: +SKIP
    """
    predictor = Predictor.load(run_dir)
    given = {name: value for name, value in few_shot.items() if value is not None}
    if is_few_shot(predictor):
        if data:
            raise DataError("few-shot runs are evaluated on their own dataset's test classes")
        return evaluate_few_shot(predictor, run_dir, data_dir=data_dir, save=save, **given)
    if given:
        raise DataError(f"{', '.join(given)} only apply to few-shot runs (protonet, maml, fomaml)")
    report, _, _ = evaluate_with_data(run_dir, data, data_dir, predictor)
    if save:
        write_text_atomic(report_path(run_dir, data), json.dumps(report, indent=2))
    return report


def evaluate_with_data(
    run_dir: str | Path,
    data: str | None = None,
    data_dir: str | None = None,
    predictor: Predictor | None = None,
) -> tuple[dict, ImageDataset | TextDataset, Predictor]:
    """`evaluate`'s report (unsaved), the dataset it was computed on and the loaded run
    (`predictor`: the run, when the caller has loaded it already)."""
    predictor = predictor or Predictor.load(run_dir)
    dataset = predictor.meta.data.load(data, data_dir)
    predictor.check_classes(dataset.classes, dataset.name)
    if predictor.heads:  # several label fields: a report per head
        return evaluate_heads(predictor, dataset), dataset, predictor
    loader = predictor.modality.eval_loader(
        dataset.test, predictor.meta.task.eval_batch_size, predictor.device
    )
    counts = ClassificationCounts(len(dataset.classes), TOP_K)
    worst = WorstExamples(WORST_KEPT)
    loss_fn = predictor.task.eval_loss_fn
    for index, inputs, labels in loader.indexed():
        logits = predict_logits(predictor.model, inputs, predictor.task)
        counts.update(logits, labels, float(loss_fn(logits, labels)) * len(labels))
        worst.update(index, logits, labels)
    report = {**classification_report(counts, list(dataset.classes)), "dataset": dataset.name}
    report["worst"] = worst.describe(list(dataset.classes))
    return report, dataset, predictor


def write_report(run_dir: str | Path, data_dir: str | None = None) -> Path:
    """`neuralab report RUN`: evaluation.json, curves.png, confusion.png, worst.png (image
    runs) and a self-contained report.html in the run directory. Returns the page's path."""
    from neuralab.inference import plots

    if not plots.have_matplotlib():
        raise ImportError(f"neuralab report draws its figures with matplotlib: {plots.PLOTS_EXTRA}")
    folder = Path(run_dir)
    if folder.name == "checkpoint":
        folder = folder.parent
    predictor = Predictor.load(folder)
    if is_few_shot(predictor):
        return write_few_shot_report(predictor, folder, data_dir, plots)
    report, dataset, predictor = evaluate_with_data(folder, None, data_dir, predictor)
    write_text_atomic(folder / "evaluation.json", json.dumps(report, indent=2))
    if predictor.heads:
        return write_heads_report(predictor, folder, dataset, plots, report)
    figures = []
    if (folder / "history.json").exists():
        history = json.loads((folder / "history.json").read_text(encoding="utf-8"))
        figures.append(plots.history_figure(history, folder / "curves.png"))
    figures.append(plots.confusion_figure(report, folder / "confusion.png"))
    shown, texts = predictor.modality.worst_examples(dataset.test, report["worst"], folder, plots)
    figures += shown
    figures += robustness_figures(folder, plots)
    page = plots.report_page(folder, report, figures, texts)
    write_text_atomic(folder / "report.html", page)
    return folder / "report.html"


def robustness_figures(folder: Path, plots) -> list[Path]:
    """robustness.png: the latest eps sweep `neuralab evaluate --attack` recorded, if any."""
    path = folder / "robustness.json"
    if not path.exists():
        return []
    sweeps = [e for e in json.loads(path.read_text(encoding="utf-8")).values()
              if len(e["points"]) > 1]  # fmt: skip
    return [plots.robustness_figure(sweeps[-1], folder / "robustness.png")] if sweeps else []


def write_few_shot_report(predictor: Predictor, folder: Path, data_dir: str | None, plots) -> Path:
    """`neuralab report` for a few-shot run: evaluation.json (test episodes, Lake's runs),
    curves.png and report.html."""
    report = evaluate_few_shot(predictor, folder, data_dir=data_dir)
    figures = []
    if (folder / "history.json").exists():
        history = json.loads((folder / "history.json").read_text(encoding="utf-8"))
        figures.append(plots.history_figure(history, folder / "curves.png"))
    write_text_atomic(folder / "report.html", plots.few_shot_page(folder, report, figures))
    return folder / "report.html"


class WorstExamples:
    """The `kept` test examples with the highest cross-entropy loss seen so far."""

    def __init__(self, kept: int) -> None:
        self.kept = kept
        self.loss = torch.empty(0)
        self.rows = torch.empty(0, 4, dtype=torch.float64)  # index, true, predicted, probability

    def update(self, index: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits, labels = logits.float().cpu(), labels.cpu()
        loss = F.cross_entropy(logits, labels, reduction="none")  # (B,)
        confidence, predicted = logits.softmax(1).max(1)
        rows = torch.stack([index.cpu().double(), labels.double(), predicted.double(),
                            confidence.double()], dim=1)  # fmt: skip
        self.loss = torch.cat([self.loss, loss])
        self.rows = torch.cat([self.rows, rows])
        keep = self.loss.topk(min(self.kept, len(self.loss))).indices
        self.loss, self.rows = self.loss[keep], self.rows[keep]

    def describe(self, classes: list[str]) -> list[dict]:
        """Worst first: test-split index, true and predicted class, the prediction's
        probability and the example's loss."""
        return [
            {
                "index": int(row[0]),
                "true": classes[int(row[1])],
                "predicted": classes[int(row[2])],
                "probability": round(float(row[3]), 4),
                "loss": round(float(loss), 4),
            }
            for row, loss in zip(self.rows, self.loss, strict=True)
        ]


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
