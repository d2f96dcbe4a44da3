"""The Task contract: *what* is learned, apart from *how* the loop runs it.

A task turns one batch into a loss and metric sums (`step`), and one evaluation batch into
metric sums (`score`); `summarize` turns summed metrics into the numbers a run logs. The
Trainer only ever calls these, so it knows nothing of labels, heads or episodes. Today's
behaviour is `Classification`; a new kind of learning is a new class registered in `TASKS`:

- several heads: the model returns a dict of outputs, `step` weighs the heads' losses and
  returns one sum per head (`loss/sentiment`, `accuracy/stars`, ...);
- few-shot episodes: a batch is one episode (support, query); `step` adapts on the support
  set (MAML's inner loop) and returns the query loss;
- adversarial training: `step` perturbs the inputs first (an extra forward/backward) and
  returns the loss on the perturbed batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from neuralab.registry import Registry

TASKS = Registry("task")

Batch = Any  # whatever the task's loaders yield: (inputs, labels) for classification


@dataclass
class StepOutput:
    """What a task returns for one (micro-)batch.

    loss: the mean loss over the batch's examples; the trainer calls backward() on it.
    sums: metric sums over the batch's examples (detached device tensors): the trainer adds
        them up over an epoch and hands the totals to `Task.summarize`.
    count: examples in the batch.
    """

    loss: torch.Tensor
    sums: dict[str, torch.Tensor]
    count: int


@runtime_checkable
class Task(Protocol):
    """What the Trainer, evaluation and prediction need to know about what is learned."""

    name: str
    # Metric names `summarize` returns, in display order; the first one is the loss.
    metric_names: tuple[str, ...]
    # Batches are few-shot episodes (the run draws them with data/episodes.py); optional,
    # False when absent.
    episodic: bool
    # `score` takes gradients of its own (MAML adapts to each episode): scoring then runs
    # under no_grad instead of inference mode; optional, False when absent.
    scores_with_gradients: bool

    def split(self, batch: Batch, parts: int) -> Sequence[Batch]:
        """`batch` cut into `parts` micro-batches (gradient accumulation), none empty."""
        ...

    def batch_size(self, batch: Batch) -> int:
        """Examples in `batch`."""
        ...

    def step(self, model: nn.Module, batch: Batch) -> StepOutput:
        """Forward pass, loss and metric sums of one training (micro-)batch. Runs under the
        trainer's autocast and gradient mode; the trainer does backward and the update."""
        ...

    def score(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """Metric sums of one evaluation batch (no gradients, float32 outputs), plus
        `count`."""
        ...

    def summarize(self, sums: dict[str, float], count: int) -> dict[str, float]:
        """Summed metrics → the logged means, e.g. {"loss": ..., "accuracy": ...}."""
        ...

    def predict(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """The model's float32 outputs for a batch of inputs (eval mode, no gradients)."""
        ...


def split_tensors(batch: Sequence[torch.Tensor], parts: int) -> list[tuple[torch.Tensor, ...]]:
    """A tuple of tensors that share their first (batch) dimension, cut into `parts`
    micro-batches along it (at most one per example: a short last batch has none empty)."""
    parts = min(parts, len(batch[0]))
    return list(zip(*(tensor.tensor_split(parts) for tensor in batch), strict=True))
