"""Adversarial attacks in pixel space: FGSM, PGD with random starts and restarts, APGD-CE.

Every attack takes a `classify` function from pixels (B, C, H, W) in [0, 1] to float32 logits
(B, classes): the run's normalisation (and test-time augmentation) sit inside it, so `eps`
and step sizes are in pixel units whatever the model's preprocessing (0.3 on MNIST is 0.3 of
the 0..1 range; CIFAR-10's 8/255 is 0.0314).

- FGSM (Goodfellow et al. 2015): one step of size eps along the gradient's sign.
- PGD (Madry et al. 2018): `steps` signed-gradient steps of `step_size` from a uniform random
  start inside the eps-ball, projected back after each; `restarts` fresh starts for the
  examples no earlier start fooled. An example counts as broken as soon as one iterate
  misclassifies it (the attacker keeps that iterate).
- APGD-CE (Croce & Hein 2020, the first attack of AutoAttack): PGD with momentum and a step
  size that halves at checkpoints when the loss stops rising, so it needs no step-size
  tuning; run on a subset it rules out the gradient masking a badly tuned PGD can hide.

torchattacks imports torchvision (not available here) and ART runs attacks on numpy copies
of each batch; these are the published algorithms written on plain torch ops, batched and
run on the model as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from neuralab.errors import UserError

Classify = Callable[[torch.Tensor], torch.Tensor]  # pixels (B, C, H, W) → logits (B, classes)

ATTACKS = ("fgsm", "pgd", "apgd-ce")
NORMS = ("linf", "l2")
APGD_MOMENTUM = 0.75  # Croce & Hein's alpha: weight of the new step against the last one
APGD_RHO = 0.75  # a checkpoint halves the step when fewer than 75% of its steps raised the loss


class AttackError(UserError, ValueError):
    """An attack asked for with settings it cannot take (names the setting and the range)."""


@dataclass(frozen=True)
class AttackSettings:
    """One attack: its name, the norm and radius of the ball, and its iterations.

    Args:
        name: `fgsm`, `pgd` or `apgd-ce`.
        eps: the ball's radius in pixel units (L∞: at most 1).
        norm: `linf` or `l2` (APGD-CE: `linf`).
        steps: PGD / APGD iterations (FGSM: one step).
        step_size: PGD's step in pixel units; None: 2.5 · eps / steps (Madry et al.).
        restarts: random starts (PGD, APGD-CE); each later one only attacks the examples the
            earlier ones did not break.
    """

    name: str = "pgd"
    eps: float = 0.3
    norm: str = "linf"
    steps: int = 10
    step_size: float | None = None
    restarts: int = 1

    def __post_init__(self) -> None:
        if self.name not in ATTACKS:
            raise AttackError(f"unknown attack {self.name!r}; valid: {', '.join(ATTACKS)}")
        if self.norm not in NORMS:
            raise AttackError(f"unknown norm {self.norm!r}; valid: {', '.join(NORMS)}")
        if self.name == "apgd-ce" and self.norm != "linf":
            raise AttackError("apgd-ce runs in the L∞ ball here: use --norm linf, or pgd for L2")
        limit = 1.0 if self.norm == "linf" else math.inf
        if not 0.0 <= self.eps <= limit or math.isnan(self.eps):
            raise AttackError(
                f"eps {self.eps} is out of range: L∞ eps is in pixel units, 0 to 1 (e.g. 0.3 "
                "for MNIST, 8/255 = 0.0314 for CIFAR-10); L2 eps must be ≥ 0"
            )
        if self.steps < 1 or self.restarts < 1:
            raise AttackError(f"steps and restarts must be ≥ 1, got {self.steps}, {self.restarts}")
        if self.step_size is not None and self.step_size <= 0:
            raise AttackError(f"step size must be > 0 (pixel units), got {self.step_size}")

    @property
    def step(self) -> float:
        """PGD's step in pixel units."""
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps

    def describe(self) -> str:
        """E.g. `pgd-40 L∞ eps 0.3, step 0.01, 10 restarts`."""
        norm = "L∞" if self.norm == "linf" else "L2"
        if self.name == "fgsm":
            return f"fgsm {norm} eps {self.eps:g}"
        step = f", step {self.step:.4g}" if self.name == "pgd" else ""
        restarts = f", {self.restarts} restarts" if self.restarts > 1 else ""
        return f"{self.name}-{self.steps} {norm} eps {self.eps:g}{step}{restarts}"


def loss_and_gradient(
    classify: Classify, images: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example cross-entropy (B,), its gradient w.r.t. the pixels and the logits."""
    images = images.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = classify(images).float()
        losses = F.cross_entropy(logits, labels, reduction="none")
        (gradient,) = torch.autograd.grad(losses.sum(), images)
    return losses.detach(), gradient, logits.detach()


def direction(gradient: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent unit step: the gradient's sign (L∞) or the gradient scaled to
    unit L2 norm per example."""
    if norm == "linf":
        return gradient.sign()
    length = gradient.flatten(1).norm(dim=1).clamp_min(1e-12)
    return gradient / length.view(-1, *[1] * (gradient.dim() - 1))


def project(images: torch.Tensor, adversarial: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """`adversarial` moved back into the eps-ball around `images` and into [0, 1]."""
    delta = adversarial - images
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        length = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        factor = (eps / length).clamp(max=1.0)
        delta = delta * factor.view(-1, *[1] * (delta.dim() - 1))
    return (images + delta).clamp(0.0, 1.0)


def random_start(
    images: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None
) -> torch.Tensor:
    """A uniform draw from the L∞ ball, or a random direction at a uniform radius (L2)."""
    noise = torch.rand(images.shape, generator=generator, device=images.device)
    if norm == "linf":
        return project(images, images + (2 * noise - 1) * eps, eps, norm)
    gaussian = torch.randn(images.shape, generator=generator, device=images.device)
    radius = noise.flatten(1)[:, :1].view(-1, *[1] * (images.dim() - 1)) * eps
    return project(images, images + direction(gaussian, "l2") * radius, eps, norm)


def fgsm(
    classify: Classify, images: torch.Tensor, labels: torch.Tensor, eps: float, norm: str
) -> torch.Tensor:
    """One step of size eps along the loss gradient's sign (L∞) or direction (L2)."""
    _, gradient, _ = loss_and_gradient(classify, images, labels)
    return project(images, images + eps * direction(gradient, norm), eps, norm)


def pgd_once(
    classify: Classify,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: AttackSettings,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """One PGD run from a random start; keeps, per example, the first iterate that fools
    the model (or the last iterate when none does)."""
    current = random_start(images, settings.eps, settings.norm, generator)
    kept, fooled = current.clone(), torch.zeros(len(images), dtype=torch.bool, device=images.device)
    for _ in range(settings.steps):
        _, gradient, logits = loss_and_gradient(classify, current, labels)
        newly = ~fooled & (logits.argmax(1) != labels)
        kept[newly], fooled = current[newly], fooled | newly
        stepped = current + settings.step * direction(gradient, settings.norm)
        current = project(images, stepped, settings.eps, settings.norm)
    kept[~fooled] = current[~fooled]
    return kept


def apgd_checkpoints(steps: int) -> list[int]:
    """The iterations where APGD may halve its step: p0 = 0, p1 = 0.22, then
    p[j+1] = p[j] + max(p[j] - p[j-1] - 0.03, 0.06), as fractions of `steps`."""
    fractions = [0.0, 0.22]
    while fractions[-1] < 1.0:
        fractions.append(fractions[-1] + max(fractions[-1] - fractions[-2] - 0.03, 0.06))
    iterations = {math.ceil(round(p * steps, 9)) for p in fractions}  # round: 0.41 + 0.16
    return sorted(i for i in iterations if 0 < i < steps)


def apgd_once(
    classify: Classify,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: AttackSettings,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """One APGD-CE run (L∞) from a random start: the iterate of highest loss, or the first
    that fools the model."""
    eps, count, shape = settings.eps, len(images), (-1, *[1] * (images.dim() - 1))
    step = torch.full((count,), 2.0 * eps, device=images.device)
    current = random_start(images, eps, "linf", generator)
    loss, gradient, logits = loss_and_gradient(classify, current, labels)
    best_loss, best = loss.clone(), current.clone()
    fooled = logits.argmax(1) != labels
    kept = current.clone()
    previous, previous_loss = current, loss
    checkpoints = apgd_checkpoints(settings.steps)
    increases = torch.zeros(count, device=images.device)
    last_check, loss_at_check, step_at_check = 0, best_loss.clone(), step.clone()
    for iteration in range(1, settings.steps):
        z = project(images, current + step.view(shape) * gradient.sign(), eps, "linf")
        if iteration == 1:
            moved = z
        else:
            momentum = (1 - APGD_MOMENTUM) * (current - previous)
            mixed = current + APGD_MOMENTUM * (z - current) + momentum
            moved = project(images, mixed, eps, "linf")
        previous, current = current, moved
        loss, gradient, logits = loss_and_gradient(classify, current, labels)
        newly = ~fooled & (logits.argmax(1) != labels)
        kept[newly], fooled = current[newly], fooled | newly
        increases += (loss > previous_loss).float()  # the loss rose on this step
        previous_loss = loss
        improved = loss > best_loss
        best_loss = torch.where(improved, loss, best_loss)
        best[improved] = current[improved]
        if iteration in checkpoints:
            span = iteration - last_check
            too_few = increases < APGD_RHO * span
            stalled = (step == step_at_check) & (best_loss == loss_at_check)
            halve = too_few | stalled
            step = torch.where(halve, step / 2, step)
            current = torch.where(halve.view(shape), best, current)
            previous = torch.where(halve.view(shape), best, previous)
            if halve.any():  # restart the halved examples from their best point
                previous_loss, gradient, _ = loss_and_gradient(classify, current, labels)
            last_check, loss_at_check, step_at_check = iteration, best_loss.clone(), step.clone()
            increases.zero_()
    kept[~fooled] = best[~fooled]
    return kept


@dataclass
class AttackResult:
    """Adversarial images (B, C, H, W) in [0, 1], their logits, and whether each example is
    still classified correctly."""

    adversarial: torch.Tensor
    logits: torch.Tensor
    correct: torch.Tensor


def attack(
    classify: Classify,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: AttackSettings,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """Attack one batch of pixels (B, C, H, W) in [0, 1]; restarts go on with the examples
    that are still correct. The returned logits are recomputed on the returned images, so
    `correct` is what the model does on them, not what the attack believed."""
    images = images.detach().float()
    if settings.eps == 0:
        adversarial = images.clone()
    elif settings.name == "fgsm":
        adversarial = fgsm(classify, images, labels, settings.eps, settings.norm)
    else:
        run_once = pgd_once if settings.name == "pgd" else apgd_once
        adversarial = images.clone()
        remaining = torch.ones(len(images), dtype=torch.bool, device=images.device)
        for _ in range(settings.restarts):
            rows = remaining.nonzero().flatten()
            if len(rows) == 0:
                break
            found = run_once(classify, images[rows], labels[rows], settings, generator)
            adversarial[rows] = found
            with torch.no_grad():
                still = classify(found).float().argmax(1) == labels[rows]
            remaining[rows] = still
    with torch.no_grad():
        logits = classify(adversarial).float()
    return AttackResult(adversarial, logits, logits.argmax(1) == labels)
