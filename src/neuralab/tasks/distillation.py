"""Knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the knowledge in a neural
network"): a Task wrapper whose training loss mixes the labels with a teacher's softened
outputs,

    loss = (1 - weight) · hard(student, labels) + weight · T² · KL(p_teacher ‖ p_student)

with p = softmax(logits / T). T² keeps the soft term's gradients on the scale of the hard
term's as T changes (Hinton et al., section 2). `hard` is the wrapped classification task's
own training loss (cross-entropy, with its label smoothing). Scoring, prediction and the
checkpoint's task are the wrapped task's: a distilled run is evaluated, exported and served
as any classifier.

The teacher is a function of the student's model inputs (run/distill.py builds it: the
teacher run's model behind `TeacherView`, which turns the student's normalised images into
the teacher's). It runs without gradients on every training batch, as the batch was
augmented: no per-example cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from neuralab.tasks.base import StepOutput
from neuralab.tasks.classification import Classification

Teacher = Callable[[torch.Tensor], torch.Tensor]  # the student's inputs → logits (B, classes)


def soft_target_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T² · KL(softmax(teacher / T) ‖ softmax(student / T)), averaged over the batch.

    Args:
        student: logits (B, classes), with gradients.
        teacher: logits (B, classes), without.
        temperature: T > 0; larger T softens both distributions.
    """
    log_student = F.log_softmax(student.float() / temperature, dim=1)  # (B, classes)
    log_teacher = F.log_softmax(teacher.float() / temperature, dim=1)
    kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def distillation_loss(hard: torch.Tensor, soft: torch.Tensor, weight: float) -> torch.Tensor:
    """(1 - weight) · hard + weight · soft: the two terms as Hinton et al. weigh them."""
    return (1.0 - weight) * hard + weight * soft


class TeacherView(nn.Module):
    """The teacher as a function of the student's inputs: images normalised with the student's
    statistics are renormalised with the teacher's (the same pixels: augmentation included);
    token ids, or images normalised alike, pass as they are.

    Args:
        model: the teacher's network (eval mode, frozen).
        predict: (model, inputs) → logits; run/distill.py passes the plain view (no TTA).
        student, teacher: (mean, std) per channel of each run's normalisation; None: no change.
    """

    def __init__(
        self,
        model: nn.Module,
        predict: Callable[[nn.Module, torch.Tensor], torch.Tensor],
        student: tuple[Sequence[float], Sequence[float]] | None = None,
        teacher: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        self.model, self.predict = model.eval().requires_grad_(False), predict
        self.renormalise = student is not None and teacher is not None and student != teacher
        if self.renormalise:
            names = ("s_mean", "s_std", "t_mean", "t_std")
            for name, values in zip(names, (*student, *teacher), strict=True):
                channels = torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)
                self.register_buffer(name, channels)  # (1, C, 1, 1)

    def train(self, mode: bool = True) -> TeacherView:
        """The teacher stays in eval mode (batch-norm statistics and dropout frozen)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.renormalise:  # (B, C, H, W): student-normalised → pixels → teacher-normalised
            pixels = inputs.float() * self.s_std + self.s_mean
            inputs = ((pixels - self.t_mean) / self.t_std).to(inputs.dtype)
        return self.predict(self.model, inputs).float()


class Distillation:
    """Trains the wrapped classification task on labels and a teacher's soft targets.

    Args:
        task: the run's Classification task (its training loss is the hard term; it scores,
            predicts and summarises as it is).
        teacher: the student's inputs → teacher logits (B, classes), without gradients.
        temperature: T of the softmax of both models' logits.
        weight: of the soft term, in [0, 1]; 0 trains on the labels alone.
        description: the train log's `distil` line (which run teaches).

    Example:
        >>> task = Distillation(Classification(), teacher_view, temperature=4.0, weight=0.5)
        >>> output = task.step(student, (images, labels))  # 0.5·CE + 0.5·16·KL
    """

    name = "classification"  # the checkpoint's task: evaluation and prediction are unchanged
    episodic = False
    scores_with_gradients = False

    def __init__(
        self,
        task: Classification,
        teacher: Teacher,
        temperature: float,
        weight: float,
        description: str = "",
    ) -> None:
        if not temperature > 0 or not 0.0 <= weight <= 1.0:
            raise ValueError(
                f"distillation needs temperature > 0 and 0 ≤ weight ≤ 1, got temperature "
                f"{temperature}, weight {weight}"
            )
        self.task, self.teacher = task, teacher
        self.temperature, self.weight = temperature, weight
        self.description = description
        self.metric_names = task.metric_names

    def describe(self) -> str:
        """The train log's `distil` line."""
        return self.description or f"T {self.temperature:g}, weight {self.weight:g}"

    def split(self, batch: Sequence[torch.Tensor], parts: int) -> list[tuple[torch.Tensor, ...]]:
        return self.task.split(batch, parts)

    def batch_size(self, batch: Sequence[torch.Tensor]) -> int:
        return self.task.batch_size(batch)

    def step(self, model: nn.Module, batch: Sequence[torch.Tensor]) -> StepOutput:
        """The mixed loss of one (micro-)batch: inputs (B, ...), labels (B,); metric sums as
        the wrapped task's (`loss` is the mixed loss)."""
        inputs, labels = batch
        teacher = self.teacher(inputs)  # (B, classes), no gradients
        logits = model(inputs)
        hard = self.task.loss_fn(logits.float(), labels)
        soft = soft_target_loss(logits, teacher, self.temperature)
        loss = distillation_loss(hard, soft, self.weight)
        sums = {"loss": loss.detach() * len(labels), "correct": (logits.argmax(1) == labels).sum()}
        return StepOutput(loss, sums, len(labels))

    def score(self, model: nn.Module, batch: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.task.score(model, batch)

    def summarize(self, sums: dict[str, float], count: int) -> dict[str, float]:
        return self.task.summarize(sums, count)

    def predict(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return self.task.predict(model, inputs)
