"""Classification metrics from accumulated counts, so that they reduce exactly across batches
and ranks: a confusion matrix and top-k hit counts are sums, everything else derives from them."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ClassificationCounts:
    """Running sums over evaluated examples.

    confusion[i, j] counts examples of true class i predicted as class j.
    """

    num_classes: int
    top_k: tuple[int, ...] = (1, 5)
    confusion: torch.Tensor = field(init=False)
    top_k_hits: torch.Tensor = field(init=False)
    loss_sum: float = 0.0

    def __post_init__(self) -> None:
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)
        self.top_k_hits = torch.zeros(len(self.top_k), dtype=torch.long)

    def update(self, logits: torch.Tensor, labels: torch.Tensor, loss_sum: float = 0.0) -> None:
        """Add a batch: logits (B, classes), labels (B,)."""
        logits, labels = logits.detach().float().cpu(), labels.detach().cpu()
        predicted = logits.argmax(1)
        flat = labels * self.num_classes + predicted
        self.confusion += torch.bincount(flat, minlength=self.num_classes**2).view_as(
            self.confusion
        )
        largest = min(max(self.top_k), self.num_classes)
        ranked = logits.topk(largest, dim=1).indices  # (B, largest)
        hits = ranked == labels.view(-1, 1)
        for index, k in enumerate(self.top_k):
            self.top_k_hits[index] += hits[:, :k].any(1).sum()
        self.loss_sum += loss_sum

    @property
    def count(self) -> int:
        return int(self.confusion.sum())


def classification_report(counts: ClassificationCounts, classes: list[str]) -> dict:
    """Per-class precision/recall/F1/support, macro and weighted averages, top-k accuracy.

    A class never predicted has precision 0 (and likewise recall for a class with no examples),
    the convention scikit-learn uses with zero_division=0.
    """
    confusion = counts.confusion.double()
    true_positive = confusion.diag()
    support = confusion.sum(1)
    predicted = confusion.sum(0)
    precision = torch.where(predicted > 0, true_positive / predicted.clamp_min(1), 0.0)
    recall = torch.where(support > 0, true_positive / support.clamp_min(1), 0.0)
    denominator = precision + recall
    f1 = torch.where(denominator > 0, 2 * precision * recall / denominator.clamp_min(1e-12), 0.0)
    weights = support / support.sum().clamp_min(1)
    per_class = {
        name: {"precision": p, "recall": r, "f1": f, "support": int(s)}
        for name, p, r, f, s in zip(
            classes, precision.tolist(), recall.tolist(), f1.tolist(), support.tolist(), strict=True
        )
    }
    total = max(1, counts.count)
    return {
        "accuracy": float(true_positive.sum()) / total,
        "loss": counts.loss_sum / total,
        "count": counts.count,
        "top_k_accuracy": {
            str(k): int(h) / total
            for k, h in zip(counts.top_k, counts.top_k_hits.tolist(), strict=True)
            if k <= len(classes)
        },
        "macro": average(precision, recall, f1, None),
        "weighted": average(precision, recall, f1, weights),
        "per_class": per_class,
        "confusion_matrix": counts.confusion.tolist(),
    }


def average(
    precision: torch.Tensor, recall: torch.Tensor, f1: torch.Tensor, weights: torch.Tensor | None
) -> dict:
    if weights is None:
        return {
            "precision": precision.mean().item(),
            "recall": recall.mean().item(),
            "f1": f1.mean().item(),
        }
    return {
        "precision": (precision * weights).sum().item(),
        "recall": (recall * weights).sum().item(),
        "f1": (f1 * weights).sum().item(),
    }


def format_report(report: dict, classes: list[str]) -> str:
    """A plain-text table of the report, as `neuralab evaluate` prints it."""
    width = max(12, *(len(c) for c in classes))
    lines = [f"{'class':<{width}}  precision  recall     f1  support"]
    for name in classes:
        row = report["per_class"][name]
        lines.append(
            f"{name:<{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}  "
            f"{row['f1']:.4f}  {row['support']:7d}"
        )
    for label in ("macro", "weighted"):
        row = report[label]
        lines.append(
            f"{label + ' avg':<{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}  "
            f"{row['f1']:.4f}  {report['count']:7d}"
        )
    top = " · ".join(f"top-{k} {v:.2%}" for k, v in report["top_k_accuracy"].items())
    lines.append(f"accuracy {report['accuracy']:.2%} · loss {report['loss']:.4f} · {top}")
    return "\n".join(lines)
