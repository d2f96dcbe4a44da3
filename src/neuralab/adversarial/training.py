"""Adversarial (robust) training: a Task wrapper that trains on attacked batches, and the
per-epoch PGD check that guards against catastrophic overfitting.

`AdversarialTraining` wraps the run's `Classification` task. Its `step` turns the normalised
batch back into pixels, builds adversarial pixels in the L∞ ball of radius eps around them
(FGSM with a random start, Wong, Rice & Kolter 2020; or PGD from a random start, Madry et al.
2018), normalises them again and returns the wrapped task's step on them. Scoring, prediction
and everything else are the wrapped task's, so evaluation, export and the checkpoint's task
("classification") are those of a plain run.

`PgdCheck` measures PGD accuracy on a fixed set of examples after every epoch (logged as
`pgd_accuracy`), keeps the most robust weights, and, when the accuracy collapses (FGSM
training's catastrophic overfitting: PGD accuracy falls to near zero within an epoch while
FGSM accuracy rises), stops the run and restores them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from neuralab.adversarial.attacks import (
    AttackSettings,
    Classify,
    attack,
    direction,
    loss_and_gradient,
    project,
    random_start,
)
from neuralab.models.tta import channel_view
from neuralab.tasks.base import StepOutput
from neuralab.tasks.classification import Classification
from neuralab.train.callbacks import Callback, Order, Trainer

# Wong et al.'s sign of catastrophic overfitting: PGD accuracy drops far below its best within
# an epoch. 20 points (accuracy units 0..1: 0.20) leaves room for the check's sampling noise
# (±1.6 points at 1,000 examples) and ordinary epoch-to-epoch swings.
COLLAPSE_DROP = 0.20
NOISE_SCALE = 2.0  # N-FGSM's noise radius in units of eps (de Jorge et al.'s k = 2)


def pixel_classifier(model: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> Classify:
    """`model` as a function of pixels (B, C, H, W) in [0, 1]: normalised first."""

    def classify(pixels: torch.Tensor) -> torch.Tensor:
        return model((pixels - mean) / std)

    return classify


@dataclass(frozen=True)
class TrainingAttack:
    """The attack each training batch meets (run/settings.py builds it from train.adversarial).

    method: `fgsm-rs` (a random start, then one step), `n-fgsm` (a start in the ball of
        NOISE_SCALE · eps, one step, no projection into the eps-ball) or `pgd` (a random
        start, then `steps` steps); eps: the L∞ radius and step: each step's size, both in
        pixel units.
    """

    method: str
    eps: float
    step: float
    steps: int = 1

    def __post_init__(self) -> None:
        if self.method not in ("fgsm-rs", "n-fgsm", "pgd"):
            raise ValueError(f"training attack {self.method!r}: expected fgsm-rs, n-fgsm or pgd")

    @property
    def iterations(self) -> int:
        """Gradient steps per batch (fgsm-rs: 1)."""
        return self.steps if self.method == "pgd" else 1

    def describe(self) -> str:
        """The train log's line, e.g. `pgd-7 L∞ eps 0.3, step 0.1 per batch (8 forward/backward
        passes per batch)`."""
        name = f"pgd-{self.steps}" if self.method == "pgd" else self.method
        return (
            f"{name} L∞ eps {self.eps:.4g}, step {self.step:.4g} per batch "
            f"({self.iterations + 1} forward/backward passes per batch)"
        )


class AdversarialTraining:
    """Trains the wrapped classification task on adversarial versions of each batch.

    Args:
        task: the run's Classification task (scores, predicts and summarises as it is).
        attack: the training attack (fgsm-rs or pgd, eps and step in pixel units).
        mean, std: the per-channel normalisation of the run's inputs (pixels in [0, 1] map to
            (pixels - mean) / std): eps and the step are in pixel units.

    Example:
        >>> attack = TrainingAttack("pgd", eps=0.3, step=0.1, steps=7)
        >>> task = AdversarialTraining(Classification(), attack, (0.1307,), (0.3081,))
        >>> output = task.step(model, (normalised_images, labels))  # loss on attacked images
    """

    name = "classification"  # the checkpoint's task: evaluation and prediction are unchanged
    episodic = False
    scores_with_gradients = False

    def __init__(
        self,
        task: Classification,
        attack: TrainingAttack,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.task, self.attack = task, attack
        self.mean, self.std = tuple(mean), tuple(std)
        self.metric_names = task.metric_names

    def describe(self) -> str:
        """The train log's `adv` line."""
        return self.attack.describe()

    def split(self, batch: Sequence[torch.Tensor], parts: int) -> list[tuple[torch.Tensor, ...]]:
        return self.task.split(batch, parts)

    def batch_size(self, batch: Sequence[torch.Tensor]) -> int:
        return self.task.batch_size(batch)

    def step(self, model: nn.Module, batch: Sequence[torch.Tensor]) -> StepOutput:
        """The wrapped task's step on the attacked batch: inputs (B, C, H, W) normalised,
        labels (B,). The attack takes input gradients only (torch.autograd.grad), so nothing
        of it reaches the parameters' .grad."""
        inputs, labels = batch
        mean, std = channel_view(self.mean, inputs), channel_view(self.std, inputs)
        pixels = (inputs.float() * std + mean).clamp(0.0, 1.0)  # (B, C, H, W) in [0, 1]
        # DDP's forward expects a backward that reduces gradients; the attack's passes must
        # not count as one, so they run on the bare module.
        classify = pixel_classifier(getattr(model, "module", model), mean, std)
        adversarial = self.perturb(classify, pixels, labels)
        normalised = ((adversarial - mean) / std).to(inputs.dtype)
        if inputs.is_contiguous(memory_format=torch.channels_last):
            normalised = normalised.contiguous(memory_format=torch.channels_last)
        return self.task.step(model, (normalised, labels))

    def perturb(
        self, classify: Classify, pixels: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Adversarial pixels (B, C, H, W) within eps (L∞) of `pixels` and in [0, 1]: a random
        start, then one step (fgsm-rs) or `steps` steps (pgd), projected after each. Training
        keeps the last iterate (the strongest), not the first that fools the model."""
        eps, step = self.attack.eps, self.attack.step
        if self.attack.method == "n-fgsm":
            return self.noisy_fgsm(classify, pixels, labels)
        current = random_start(pixels, eps, "linf", None)
        for _ in range(self.attack.iterations):
            _, gradient, _ = loss_and_gradient(classify, current, labels)
            current = project(pixels, current + step * direction(gradient, "linf"), eps, "linf")
        return current.detach()

    def noisy_fgsm(
        self, classify: Classify, pixels: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """N-FGSM (de Jorge et al. 2022): uniform noise in the ball of NOISE_SCALE · eps, one
        signed step from there, clipped to [0, 1] only. The larger, unprojected perturbation
        is what keeps single-step training from catastrophic overfitting."""
        radius = NOISE_SCALE * self.attack.eps
        noisy = random_start(pixels, radius, "linf", None)
        _, gradient, _ = loss_and_gradient(classify, noisy, labels)
        return project(pixels, noisy + self.attack.step * direction(gradient, "linf"),
                       radius + self.attack.step, "linf").detach()  # fmt: skip

    def score(self, model: nn.Module, batch: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.task.score(model, batch)

    def summarize(self, sums: dict[str, float], count: int) -> dict[str, float]:
        return self.task.summarize(sums, count)

    def predict(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return self.task.predict(model, inputs)


class PgdCheck(Callback):
    """After every epoch: PGD accuracy of `eval_model` (eval mode) on fixed examples, logged
    as `pgd_accuracy`; the most robust weights are kept in memory (and in the resume state).
    With `early_stop`, a fall of more than COLLAPSE_DROP below the best stops the run and
    restores them.

    It runs with the monitors (Order.MONITOR), before the RunWriter: `pgd_accuracy` is in the
    epoch's history row and the resume state is current when the checkpoint is written.

    Args:
        images: uint8 pixels (N, C, H, W) of the check set.
        labels: int64 (N,).
        attack: the check's PGD attack (eps, steps, restarts; step 2.5 · eps / steps).
        early_stop: stop and restore the best weights when the accuracy collapses.
        mean, std: the inputs' per-channel normalisation.
        batch_size: examples attacked at once.
    """

    order = Order.MONITOR

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        attack: AttackSettings,
        early_stop: bool,
        mean: Sequence[float],
        std: Sequence[float],
        batch_size: int = 1000,
    ) -> None:
        self.images, self.labels = images, labels
        self.attack, self.early_stop = attack, early_stop
        self.mean, self.std, self.batch_size = tuple(mean), tuple(std), batch_size
        self.best: float | None = None
        self.best_epoch = 0
        self.best_weights: dict | None = None
        self.collapsed = False

    def accuracy(self, model: nn.Module) -> float:
        """PGD accuracy (0..1) of `model` in eval mode on the check set; the model's mode is
        put back afterwards. A fixed generator: every epoch meets the same random starts."""
        device = next(model.parameters()).device
        was_training, generator = model.training, torch.Generator(device=device).manual_seed(0)
        model.eval()
        correct = 0
        try:
            for start in range(0, len(self.labels), self.batch_size):
                pixels = self.images[start : start + self.batch_size].to(device).float() / 255
                labels = self.labels[start : start + self.batch_size].to(device)
                mean, std = channel_view(self.mean, pixels), channel_view(self.std, pixels)
                classify = pixel_classifier(model, mean, std)
                result = attack(classify, pixels, labels, self.attack, generator)
                correct += int(result.correct.sum())
        finally:
            model.train(was_training)
        return correct / max(1, len(self.labels))

    def on_epoch_end(self, trainer: Trainer, logs: dict) -> None:
        accuracy = self.accuracy(trainer.eval_model)
        logs["pgd_accuracy"] = accuracy  # the same dict as the history's row
        if self.best is None or accuracy > self.best:
            weights = trainer.eval_model.state_dict()
            self.best, self.best_epoch = accuracy, logs["epoch"]
            self.best_weights = {k: v.detach().clone().cpu() for k, v in weights.items()}
            return
        if self.early_stop and accuracy < self.best - COLLAPSE_DROP:
            self.collapsed = True
            trainer.stop(
                f"catastrophic overfitting after epoch {logs['epoch']}: PGD accuracy fell to "
                f"{accuracy:.1%} from {self.best:.1%} at epoch {self.best_epoch}; restoring "
                f"epoch {self.best_epoch}'s weights"
            )

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.collapsed and self.best_weights is not None:
            trainer.restore(self.best_weights, self.best_epoch)

    def state_dict(self) -> dict:
        return {
            "best": self.best, "best_epoch": self.best_epoch, "weights": self.best_weights,
            "collapsed": self.collapsed,
        }  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.best, self.best_epoch = state["best"], state["best_epoch"]
            self.best_weights, self.collapsed = state["weights"], state["collapsed"]
