"""Single-label classification: (inputs, labels) batches, cross-entropy or squared-error loss,
accuracy; optional test-time augmentation for images."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from neuralab.errors import ConfigError
from neuralab.models.tta import tta_logits, tta_mode
from neuralab.tasks.base import TASKS, StepOutput, split_tensors

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES = ("cross_entropy", "mse")


def make_loss(name: str, label_smoothing: float = 0.0) -> LossFn:
    """`cross_entropy` (with optional label smoothing) or `mse`: squared error between the
    logits and one-hot targets, the least-squares criterion of the perceptron era."""
    if name == "cross_entropy":
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    if name == "mse":

        def mse(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            target = nn.functional.one_hot(labels, logits.shape[1]).to(logits.dtype)
            return nn.functional.mse_loss(logits, target)

        return mse
    raise ConfigError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")


@TASKS.register("classification", summary="one label per example: loss and accuracy")
class Classification:
    """Batches are (inputs (B, ...), labels (B,)); the model returns logits (B, classes).

    Args:
        loss: a loss name (`cross_entropy`, `mse`) or a callable (logits, labels) -> mean loss.
        label_smoothing: cross-entropy label smoothing while training (evaluation scores the
            plain loss, so validation and test losses compare across settings).
        tta: test-time augmentation used when scoring and predicting images (see models/tta.py).

    Example:
        >>> trainer = Trainer(model, optimizer, Classification("cross_entropy"))
    """

    name = "classification"
    metric_names = ("loss", "accuracy")
    episodic = False
    scores_with_gradients = False

    def __init__(
        self, loss: str | LossFn = "cross_entropy", label_smoothing: float = 0.0, tta: str = "off"
    ) -> None:
        named = isinstance(loss, str)
        self.loss_fn = make_loss(loss, label_smoothing) if named else loss
        self.eval_loss_fn = make_loss(loss) if named else loss
        self.tta = tta_mode(tta)

    def split(self, batch: Sequence[torch.Tensor], parts: int) -> list[tuple[torch.Tensor, ...]]:
        return split_tensors(batch, parts)

    def batch_size(self, batch: Sequence[torch.Tensor]) -> int:
        return len(batch[1])

    def step(self, model: nn.Module, batch: Sequence[torch.Tensor]) -> StepOutput:
        inputs, labels = batch
        logits = model(inputs)
        loss = self.loss_fn(logits.float(), labels)
        sums = {"loss": loss.detach() * len(labels), "correct": (logits.argmax(1) == labels).sum()}
        return StepOutput(loss, sums, len(labels))

    def score(self, model: nn.Module, batch: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs, labels = batch
        logits = self.predict(model, inputs)
        loss = self.eval_loss_fn(logits, labels).double() * len(labels)
        return {"loss": loss, "correct": (logits.argmax(1) == labels).sum()}

    def summarize(self, sums: dict[str, float], count: int) -> dict[str, float]:
        count = max(1, count)
        return {"loss": sums["loss"] / count, "accuracy": sums["correct"] / count}

    def predict(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """Float32 logits (B, classes), with the task's test-time augmentation."""
        return tta_logits(model, inputs, self.tta)
