"""Several labels per example from one trunk (multi-task learning, Caruana 1997): each head is
a slice of the model's output columns (data/heads.py), its loss is cross-entropy
(classification) or squared error on standardised values (regression), and the training loss
is the heads' losses weighted by `weights`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from neuralab.data.heads import Head, primary, slices, to_outputs
from neuralab.errors import ConfigError
from neuralab.tasks.base import TASKS, StepOutput, split_tensors


@TASKS.register(
    "multitask",
    summary="several label fields, one head each (classification: accuracy, regression: "
    "MAE); chosen by the data when data.options.label_field lists several",
)
class MultiTask:
    """Batches are (inputs, labels float32 (B, heads)); the model returns (B, columns).

    Args:
        heads: each head as `Head.to_dict()` gives it (name, kind, classes or mean/std).
        weights: each head's loss weight, by head name (missing: 1).

    Metrics: `loss` (the weighted sum), `accuracy` (the first classification head's, so that
    monitors and listings read it as for one label), and per head `<name>_loss` and
    `<name>_accuracy` or `<name>_mae` (mean absolute error in the field's own units).
    """

    name = "multitask"
    tta = "off"  # test-time augmentation averages one label's logits: not for heads
    episodic = False
    scores_with_gradients = False

    def __init__(self, heads: Sequence[dict], weights: dict[str, float] | None = None) -> None:
        self.heads = [Head.from_dict(head) for head in heads]
        if not self.heads:
            raise ConfigError("task multitask needs at least one head (data.options.label_field)")
        names = [head.name for head in self.heads]
        unknown = sorted(set(weights or {}) - set(names))
        if unknown:
            raise ConfigError(
                f"task.head_weights names {unknown}, which are not heads of this data "
                f"({names}); use the label fields' names"
            )
        self.weights = [float((weights or {}).get(name, 1.0)) for name in names]
        if any(w < 0 for w in self.weights) or not any(self.weights):
            raise ConfigError(f"task.head_weights must be ≥ 0 and not all 0, got {weights}")
        self.slices = slices(self.heads)
        self.primary = primary(self.heads)
        per_head = [
            f"{h.name}_{'accuracy' if h.kind == 'classification' else 'mae'}" for h in self.heads
        ]
        self.metric_names = (
            "loss",
            *(("accuracy",) if self.primary is not None else ()),
            *(f"{head.name}_loss" for head in self.heads),
            *per_head,
        )

    def arguments(self) -> dict:
        """The factory's arguments, as a checkpoint records them."""
        weights = {h.name: w for h, w in zip(self.heads, self.weights, strict=True)}
        return {"heads": [head.to_dict() for head in self.heads], "weights": weights}

    def describe(self) -> str:
        parts = [
            f"{head.describe()}, weight {weight:g}"
            for head, weight in zip(self.heads, self.weights, strict=True)
        ]
        return "multitask: " + "; ".join(parts)

    def split(self, batch: Sequence[torch.Tensor], parts: int) -> list[tuple[torch.Tensor, ...]]:
        return split_tensors(batch, parts)

    def batch_size(self, batch: Sequence[torch.Tensor]) -> int:
        return len(batch[1])

    def head_losses(self, outputs: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
        """Each head's mean loss over the batch: outputs (B, columns) float32, labels
        (B, heads)."""
        losses = []
        for index, (head, part) in enumerate(zip(self.heads, self.slices, strict=True)):
            target = labels[:, index]
            if head.kind == "classification":
                losses.append(nn.functional.cross_entropy(outputs[:, part], target.long()))
            else:
                standard = (target - head.mean) / head.std
                losses.append(nn.functional.mse_loss(outputs[:, part.start], standard))
        return losses

    def sums(self, outputs: torch.Tensor, labels: torch.Tensor, losses: list[torch.Tensor]):
        """Metric sums of a batch: the weighted loss, and per head its loss and its correct
        count or absolute error (in the field's units)."""
        count = len(labels)
        total = sum(w * loss for w, loss in zip(self.weights, losses, strict=True))
        sums = {"loss": total.detach().double() * count}
        for index, (head, part) in enumerate(zip(self.heads, self.slices, strict=True)):
            target = labels[:, index]
            sums[f"{head.name}:loss"] = losses[index].detach().double() * count
            if head.kind == "classification":
                hits = outputs[:, part].argmax(1) == target.long()
                sums[f"{head.name}:correct"] = hits.sum()
            else:
                value = outputs[:, part.start].detach() * head.std + head.mean
                sums[f"{head.name}:abs_error"] = (value - target).abs().double().sum()
        return total, sums

    def step(self, model: nn.Module, batch: Sequence[torch.Tensor]) -> StepOutput:
        inputs, labels = batch
        outputs = model(inputs).float()
        total, sums = self.sums(outputs, labels, self.head_losses(outputs, labels))
        return StepOutput(total, sums, len(labels))

    def score(self, model: nn.Module, batch: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs, labels = batch
        outputs = model(inputs).float()
        return self.sums(outputs, labels, self.head_losses(outputs, labels))[1]

    def summarize(self, sums: dict[str, float], count: int) -> dict[str, float]:
        count = max(1, count)
        result = {"loss": sums["loss"] / count}
        if self.primary is not None:
            result["accuracy"] = sums[f"{self.heads[self.primary].name}:correct"] / count
        for head in self.heads:
            result[f"{head.name}_loss"] = sums[f"{head.name}:loss"] / count
        for head in self.heads:
            if head.kind == "classification":
                result[f"{head.name}_accuracy"] = sums[f"{head.name}:correct"] / count
            else:
                result[f"{head.name}_mae"] = sums[f"{head.name}:abs_error"] / count
        return result

    def predict(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """Float32 outputs (B, columns): class heads' logits, regression heads' values in the
        field's own units."""
        return to_outputs(self.heads, model(inputs).float())
