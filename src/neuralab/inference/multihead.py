"""Evaluating a run with several label fields (data/heads.py): per head, a classification
report (precision / recall / F1, confusion matrix) or regression errors (MAE, RMSE, R²), as
`neuralab evaluate` prints them and `neuralab report` draws them."""

from __future__ import annotations

import html
import json
from pathlib import Path

import torch
from torch.nn import functional as F

from neuralab.data.heads import Head, primary, slices
from neuralab.inference.predict import Predictor, predict_logits
from neuralab.tasks.metrics import ClassificationCounts, classification_report, format_report

TOP_K = (1, 5)


class RegressionSums:
    """Running sums of one regression head's errors and targets (values in the field's units)."""

    def __init__(self) -> None:
        self.count, self.abs_error, self.squared_error = 0, 0.0, 0.0
        self.target_sum, self.target_squares, self.prediction_sum = 0.0, 0.0, 0.0

    def update(self, predicted: torch.Tensor, target: torch.Tensor) -> None:
        predicted, target = predicted.double().cpu(), target.double().cpu()
        error = predicted - target
        self.count += len(target)
        self.abs_error += float(error.abs().sum())
        self.squared_error += float((error * error).sum())
        self.target_sum += float(target.sum())
        self.target_squares += float((target * target).sum())
        self.prediction_sum += float(predicted.sum())

    def report(self, head: Head) -> dict:
        count = max(1, self.count)
        mean = self.target_sum / count
        variance = self.target_squares / count - mean * mean
        mse = self.squared_error / count
        return {
            "kind": "regression",
            "count": self.count,
            "mae": self.abs_error / count,
            "rmse": mse**0.5,
            # 1 - MSE / variance of the targets: 0 is predicting their mean, 1 is perfect
            "r2": 1.0 - mse / variance if variance > 0 else None,
            "mean_prediction": self.prediction_sum / count,
            "mean_target": mean,
            "loss": mse / (head.std * head.std),  # the training loss: standardised MSE
        }


def evaluate_heads(predictor: Predictor, dataset) -> dict:
    """The run on `dataset.test`: `{"dataset", "count", "accuracy" (the first
    classification head's), "loss" (the heads' weighted losses), "heads": {name: report}}`."""
    heads, task = predictor.heads, predictor.task
    loader = predictor.modality.eval_loader(
        dataset.test, predictor.meta.task.eval_batch_size, predictor.device
    )
    kept = [h for h in heads if h.kind == "classification"]
    counts = {h.name: ClassificationCounts(h.width, TOP_K) for h in kept}
    regressions = {h.name: RegressionSums() for h in heads if h.kind == "regression"}
    for _, inputs, labels in loader.indexed():
        outputs = predict_logits(predictor.model, inputs, task).cpu()
        labels = labels.cpu()
        for index, (head, part) in enumerate(zip(heads, slices(heads), strict=True)):
            target = labels[:, index]
            if head.kind == "regression":
                regressions[head.name].update(outputs[:, part.start], target)
                continue
            logits = outputs[:, part]
            loss = float(F.cross_entropy(logits, target.long(), reduction="sum"))
            counts[head.name].update(logits, target.long(), loss)
    reports = {}
    for head in heads:
        if head.kind == "regression":
            reports[head.name] = regressions[head.name].report(head)
        else:
            report = classification_report(counts[head.name], list(head.classes))
            reports[head.name] = {"kind": "classification", **report}
    weights = dict(zip((h.name for h in heads), task.weights, strict=True))
    first = primary(heads)
    return {
        "dataset": dataset.name,
        "count": len(dataset.test),
        "accuracy": None if first is None else reports[heads[first].name]["accuracy"],
        "loss": sum(weights[name] * report["loss"] for name, report in reports.items()),
        "heads": reports,
    }


def format_heads(report: dict) -> str:
    """Each head's table (classification) or errors (regression), as `evaluate` prints them."""
    lines = []
    for name, head in report["heads"].items():
        lines.append(f"— {name}")
        if head["kind"] == "regression":
            r2 = "—" if head["r2"] is None else f"{head['r2']:.4f}"
            lines.append(
                f"MAE {head['mae']:.4f} · RMSE {head['rmse']:.4f} · R² {r2} · mean "
                f"prediction {head['mean_prediction']:.4g} (targets {head['mean_target']:.4g})"
            )
        else:
            lines.append(format_report(head, list(head["per_class"])))
    return "\n".join(lines)


def write_heads_report(predictor: Predictor, folder: Path, dataset, plots, report: dict) -> Path:
    """`neuralab report` for a run with several heads: curves.png, one confusion matrix per
    classification head and report.html (evaluation.json is written by the caller)."""
    from neuralab.checkpoint.format import write_text_atomic

    figures = []
    if (folder / "history.json").exists():
        history = json.loads((folder / "history.json").read_text(encoding="utf-8"))
        figures.append(plots.history_figure(history, folder / "curves.png"))
    for name, head in report["heads"].items():
        if head["kind"] == "classification":
            figures.append(plots.confusion_figure(head, folder / f"confusion-{name}.png"))
    write_text_atomic(folder / "report.html", heads_page(folder, report, figures, plots))
    return folder / "report.html"


def heads_page(folder: Path, report: dict, figures: list[Path], plots) -> str:
    """A self-contained page: each head's figures and metrics, then the configuration."""
    escape = html.escape
    config = (folder / "config.yaml").read_text() if (folder / "config.yaml").exists() else ""
    sections = "".join(f"<h2>{escape(p.stem)}</h2>{plots.embedded(p)}" for p in figures)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>neuralab run {escape(folder.name)}</title>
<style>body{{font:15px/1.45 system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem}}
img{{max-width:100%}}pre{{background:#f6f6f6;padding:1rem;overflow:auto}}</style></head><body>
<h1>Run {escape(folder.name)}</h1>
<p>Dataset <b>{escape(report["dataset"])}</b>, {report["count"]} test examples,
{len(report["heads"])} heads.</p>
<pre>{escape(format_heads(report))}</pre>
{sections}
<h2>Configuration</h2><pre>{escape(config)}</pre>
</body></html>
"""
